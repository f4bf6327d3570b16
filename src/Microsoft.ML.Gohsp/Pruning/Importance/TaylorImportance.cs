using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Importance from the task loss's gradient on labelled calibration images. First-order Taylor importance (how much the
/// loss would change if a structure's weights were removed, Σ|w·∂L/∂w| over its parameters): of the attention heads
/// (<see cref="Heads"/>, GOHSP's <see cref="HeadScore.SaliencyPersonalizedGraph"/> teleport vector) and of every prunable
/// structure (<see cref="Structures"/>, SOMP's <see cref="SompImportance.Taylor"/> criterion, the element-wise |w·g| sum
/// that Torch-Pruning's <c>TaylorImportance</c> uses). <see cref="Backward"/> also feeds the one-shot Fisher estimate
/// (<see cref="FisherImportance.OneShot"/>).
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
        var a = model.Architecture;
        return Backward(model, calibration, preprocessing, accumulate: true, afterBatch: null, () =>
        {
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
        });
    }

    /// <summary>
    /// First-order Taylor importance of every prunable structure (heads, q/k dims, v dims, MLP neurons): Σ|w·∂L/∂w| over
    /// the structure's parameters, per parameter as <see cref="StructuredProjection.Magnitude"/> normalises, with ∂L/∂w
    /// the gradient of the mean cross-entropy over the calibration images. The model's weights are not changed; its
    /// gradients are cleared afterwards.
    /// </summary>
    public static BlockImportance[] Structures(VisionTransformerModel model, ImageTensorData calibration, ViTTrainingOptions preprocessing) =>
        Backward(model, calibration, preprocessing, accumulate: true, afterBatch: null,
            // Σ t² of t = √|w·g| is Σ|w·g|: the magnitude measure of that tensor is the Taylor sum
            () => StructuredProjection.Magnitude(model, p => (p * p.grad!).abs_().sqrt_()));

    /// <summary>
    /// Runs the calibration images forward and backward (eval mode, no augmentation, each batch in its own dispose scope),
    /// then returns <paramref name="measure"/>() and clears the gradients; the model's weights are not changed and its
    /// train/eval mode is restored. With <paramref name="accumulate"/> the gradients of batches of
    /// <see cref="ViTTrainingOptions.EvaluationBatchSize"/> add up to the gradient of the mean loss over all images;
    /// without, each training-size batch's gradient (of its mean loss, batches of <see cref="ViTTrainingOptions.BatchSize"/>)
    /// replaces the previous one and <paramref name="afterBatch"/> sees it.
    /// </summary>
    internal static T Backward<T>(VisionTransformerModel model, ImageTensorData calibration, ViTTrainingOptions preprocessing,
        bool accumulate, Action? afterBatch, Func<T> measure)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibration);
        ArgumentNullException.ThrowIfNull(preprocessing);
        if (calibration.Count == 0) throw new ArgumentException("The calibration set has no rows.", nameof(calibration));
        var device = model.parameters().First().device;
        bool wasTraining = model.training;
        model.eval();
        model.zero_grad();
        try
        {
            var all = Enumerable.Range(0, calibration.Count).ToArray();
            int batch = accumulate ? preprocessing.EvaluationBatchSize : preprocessing.BatchSize;
            for (int s = 0; s < calibration.Count; s += batch)
            {
                using var scope = NewDisposeScope();
                int count = Math.Min(batch, calibration.Count - s);
                if (!accumulate) model.zero_grad();
                var (x, y) = TrainingLoop.MakeBatch(calibration, all.AsSpan(s, count), preprocessing, null, device);
                var loss = accumulate
                    // the mean over all calibration images: each batch's summed loss divided by the total count
                    ? nn.functional.cross_entropy(model.forward(x), y, reduction: nn.Reduction.Sum) / calibration.Count
                    : nn.functional.cross_entropy(model.forward(x), y);
                loss.backward();
                afterBatch?.Invoke();
            }
            return measure();
        }
        finally
        {
            model.zero_grad();
            if (wasTraining) model.train();
        }
    }
}
