using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// GOHSP stage 3 surgery (also used by SOMP and SGMP): physically removes the heads, q/k dimensions, v dimensions and
/// MLP neurons that a <see cref="StructurePlan"/> drops, producing a smaller, heterogeneous
/// <see cref="VisionTransformerModel"/> whose outputs equal those of the masked model.
/// </summary>
/// <remarks>
/// Removing q/k dimensions changes the attention's default scale from 1/√d to 1/√d′. To keep the logits identical,
/// the kept query rows (and biases) are multiplied by √(d′/d) — an exact fold with no run-time cost.
/// </remarks>
public static class HardPruning
{
    /// <summary>Builds the pruned model (on the CPU, float32, evaluation mode). The source model is not modified.</summary>
    public static VisionTransformerModel Prune(VisionTransformerModel model, StructurePlan plan)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(plan);
        var dense = model.Architecture;
        plan.Validate(dense);
        var pruned = new VisionTransformerModel(plan.PrunedArchitecture(dense), seed: 0);
        using var _ = no_grad();
        var src = model.state_dict();
        var dst = pruned.state_dict();
        // everything outside the blocks, and the norms, is copied unchanged
        foreach (var (name, t) in dst)
        {
            if (name.StartsWith("blocks.", StringComparison.Ordinal) && !name.Contains(".norm", StringComparison.Ordinal)) continue;
            t.copy_(src[name].cpu());
        }
        for (int b = 0; b < dense.Depth; b++)
        {
            var spec = dense.Blocks[b]; var p = plan.Blocks[b];
            var layout = spec.Qkv;
            var qRows = new List<long>(); var kRows = new List<long>(); var vRows = new List<long>(); var projCols = new List<long>();
            for (int i = 0; i < p.Heads.Length; i++)
            {
                int head = p.Heads[i];
                foreach (int j in p.QkDims[i])
                {
                    qRows.Add(layout.QRow(head, j));
                    kRows.Add(layout.KRow(head, j));
                }
                foreach (int j in p.VDims[i])
                {
                    vRows.Add(layout.VRow(head, j));
                    projCols.Add(layout.ProjColumn(head, j));
                }
            }
            double qScale = Math.Sqrt((double)p.QkDims[0].Length / spec.QkDim);
            string pre = $"blocks.{b}.";
            using var scope = NewDisposeScope();
            var qkvW = src[pre + "attn.qkv.weight"].cpu();
            var qkvB = src[pre + "attn.qkv.bias"].cpu();
            var rows = tensor(qRows.Concat(kRows).Concat(vRows).ToArray());
            var newW = qkvW.index_select(0, rows);
            var newB = qkvB.index_select(0, rows);
            newW.narrow(0, 0, qRows.Count).mul_(qScale);
            newB.narrow(0, 0, qRows.Count).mul_(qScale);
            dst[pre + "attn.qkv.weight"].copy_(newW);
            dst[pre + "attn.qkv.bias"].copy_(newB);
            dst[pre + "attn.proj.weight"].copy_(src[pre + "attn.proj.weight"].cpu().index_select(1, tensor(projCols.ToArray())));
            dst[pre + "attn.proj.bias"].copy_(src[pre + "attn.proj.bias"].cpu());
            var neurons = tensor(p.MlpNeurons.Select(i => (long)i).ToArray());
            dst[pre + "mlp.fc1.weight"].copy_(src[pre + "mlp.fc1.weight"].cpu().index_select(0, neurons));
            dst[pre + "mlp.fc1.bias"].copy_(src[pre + "mlp.fc1.bias"].cpu().index_select(0, neurons));
            dst[pre + "mlp.fc2.weight"].copy_(src[pre + "mlp.fc2.weight"].cpu().index_select(1, neurons));
            dst[pre + "mlp.fc2.bias"].copy_(src[pre + "mlp.fc2.bias"].cpu());
        }
        pruned.eval();
        return pruned;
    }
}
