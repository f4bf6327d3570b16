using Microsoft.ML.Gohsp.Training;
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
        using var scope = NewDisposeScope();
        var sliced = Slice(dense, plan, model.state_dict(), queryScalePower: 1);
        foreach (var (name, t) in pruned.state_dict())
            if (sliced.TryGetValue(name, out var source)) t.copy_(source);
        pruned.eval();
        return pruned;
    }

    /// <summary>
    /// AdamW's state of the model <see cref="Prune"/> cuts, sliced as the weights are: the moments of the kept rows and
    /// columns, the step counts unchanged. The query rows' fold √(d′/d) divides their first moment by it and their second
    /// by its square (the gradient of a weight scaled by s is scaled by 1/s).
    /// </summary>
    internal static OptimizerMoments SliceMoments(OptimizerMoments moments, ViTArchitecture dense, StructurePlan plan)
    {
        ArgumentNullException.ThrowIfNull(moments);
        plan.Validate(dense);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var first = Slice(dense, plan, moments.Entries.ToDictionary(e => e.Key, e => e.Value.ExpAvg), queryScalePower: -1);
        var second = Slice(dense, plan, moments.Entries.ToDictionary(e => e.Key, e => e.Value.ExpAvgSq), queryScalePower: -2);
        return new OptimizerMoments(first.Keys.ToDictionary(name => name, name => new OptimizerMoments.Entry(moments.Entries[name].Step,
            first[name].clone().DetachFromDisposeScope(), second[name].clone().DetachFromDisposeScope())));
    }

    /// <summary>
    /// Tensors shaped like the dense model's parameters (by <c>state_dict</c> name), cut to <paramref name="plan"/>: what lies
    /// outside the blocks and the blocks' norms unchanged, the attention and MLP matrices to their kept rows and columns,
    /// the kept query rows times √(d′/d)^<paramref name="queryScalePower"/>. Other block entries are left out.
    /// </summary>
    private static Dictionary<string, Tensor> Slice(ViTArchitecture dense, StructurePlan plan, IReadOnlyDictionary<string, Tensor> src, double queryScalePower)
    {
        var result = new Dictionary<string, Tensor>();
        foreach (var (name, t) in src)
            if (!name.StartsWith("blocks.", StringComparison.Ordinal) || name.Contains(".norm", StringComparison.Ordinal)) result[name] = t.cpu();
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
            double qScale = Math.Pow(Math.Sqrt((double)p.QkDims[0].Length / spec.QkDim), queryScalePower);
            string pre = $"blocks.{b}.";
            var rows = tensor(qRows.Concat(kRows).Concat(vRows).ToArray());
            foreach (string part in new[] { "weight", "bias" })
            {
                var t = src[pre + "attn.qkv." + part].cpu().index_select(0, rows);
                t.narrow(0, 0, qRows.Count).mul_(qScale);
                result[pre + "attn.qkv." + part] = t;
            }
            result[pre + "attn.proj.weight"] = src[pre + "attn.proj.weight"].cpu().index_select(1, tensor(projCols.ToArray()));
            result[pre + "attn.proj.bias"] = src[pre + "attn.proj.bias"].cpu();
            var neurons = tensor(p.MlpNeurons.Select(i => (long)i).ToArray());
            result[pre + "mlp.fc1.weight"] = src[pre + "mlp.fc1.weight"].cpu().index_select(0, neurons);
            result[pre + "mlp.fc1.bias"] = src[pre + "mlp.fc1.bias"].cpu().index_select(0, neurons);
            result[pre + "mlp.fc2.weight"] = src[pre + "mlp.fc2.weight"].cpu().index_select(1, neurons);
            result[pre + "mlp.fc2.bias"] = src[pre + "mlp.fc2.bias"].cpu();
        }
        return result;
    }
}
