using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// First-order Taylor importance of the attention heads (<see cref="HeadGraphRanking.TaylorSaliency"/>): how much the loss
/// would change if a head's weights were removed, |w·∂L/∂w| summed over the head's parameters. GOHSP's
/// <see cref="HeadScore.SaliencyPersonalizedGraph"/> uses it as the teleport vector of the head ranking.
/// </summary>
internal static class TaylorImportance
{
    /// <summary>
    /// Taylor saliency of every head on labelled calibration images: Σ|w·∂L/∂w| over the head's q, k, v rows (with biases)
    /// and its output-projection columns, L the mean cross-entropy. The model's weights are not changed; its gradients are
    /// cleared afterwards.
    /// </summary>
    public static double[][] Heads(VisionTransformerModel model, ImageTensorData calibration, ViTTrainingOptions preprocessing)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibration);
        if (calibration.Count == 0) throw new ArgumentException("The calibration set has no rows.", nameof(calibration));
        var a = model.Architecture;
        var device = model.parameters().First().device;
        bool wasTraining = model.training;
        model.eval();
        model.zero_grad();
        try
        {
            var all = Enumerable.Range(0, calibration.Count).ToArray();
            int batch = preprocessing.EvaluationBatchSize;
            for (int s = 0; s < calibration.Count; s += batch)
            {
                using var scope = NewDisposeScope();
                int count = Math.Min(batch, calibration.Count - s);
                var (x, y) = TrainingLoop.MakeBatch(calibration, all.AsSpan(s, count), preprocessing, null, device);
                // the mean over all calibration images: each batch's summed loss divided by the total count
                (nn.functional.cross_entropy(model.forward(x), y, reduction: nn.Reduction.Sum) / calibration.Count).backward();
            }
            var result = new double[a.Depth][];
            using var _ = no_grad();
            for (int b = 0; b < a.Depth; b++)
            {
                using var scope = NewDisposeScope();
                var spec = a.Blocks[b]; var attn = model.Blocks[b].attn;
                int h = spec.Heads, dq = spec.QkDim, dv = spec.VDim;
                var layout = spec.Qkv;
                var rows = (attn.qkv.weight * attn.qkv.weight.grad!).abs().sum(1).add_((attn.qkv.bias * attn.qkv.bias.grad!).abs());
                var cols = (attn.proj.weight * attn.proj.weight.grad!).abs().sum(new long[] { 0 });
                var r = rows.to(ScalarType.Float64).cpu().data<double>().ToArray();
                var c = cols.to(ScalarType.Float64).cpu().data<double>().ToArray();
                var imp = new double[h];
                for (int i = 0; i < h; i++)
                {
                    for (int j = 0; j < dq; j++) imp[i] += r[layout.QRow(i, j)] + r[layout.KRow(i, j)];
                    for (int j = 0; j < dv; j++) imp[i] += r[layout.VRow(i, j)] + c[layout.ProjColumn(i, j)];
                }
                result[b] = imp;
            }
            return result;
        }
        finally
        {
            model.zero_grad();
            if (wasTraining) model.train();
        }
    }
}
