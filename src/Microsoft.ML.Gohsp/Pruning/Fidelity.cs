using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// How well a pruned model keeps what its dense model knew, on one labelled set: top-1 accuracy, negative log-likelihood
/// (mean cross-entropy), agreement with the dense model's top-1 predictions and the mean KL(dense ‖ pruned) of the class
/// distributions. NLL and KL see differences that top-1 on a thousand images cannot.
/// </summary>
/// <param name="Top1">Fraction of images whose most probable class is the label.</param>
/// <param name="Nll">Mean −log p(label) (natural log).</param>
/// <param name="Agreement">Fraction of images on which the two models predict the same class (NaN without a dense model).</param>
/// <param name="KlFromDense">Mean Σ_c p_dense(c)·(log p_dense(c) − log p(c)) (NaN without a dense model).</param>
public sealed record FidelityMetrics(double Top1, double Nll, double Agreement, double KlFromDense);

/// <summary>Computes <see cref="FidelityMetrics"/> (pure TorchSharp core).</summary>
public static class Fidelity
{
    /// <summary>
    /// The metrics from log-probabilities laid out [images × classes] (row-major), with the dense model's log-probabilities
    /// for agreement and KL (null: those two are NaN).
    /// </summary>
    public static FidelityMetrics Compute(ReadOnlySpan<float> logProbabilities, ReadOnlySpan<float> denseLogProbabilities, ReadOnlySpan<int> labels, int classes)
    {
        if (classes <= 0) throw new ArgumentOutOfRangeException(nameof(classes), classes, "classes must be positive.");
        int n = labels.Length;
        if (n == 0) throw new ArgumentException("No images.", nameof(labels));
        if (logProbabilities.Length != (long)n * classes)
            throw new ArgumentException($"logProbabilities has {logProbabilities.Length} values; {n} images × {classes} classes need {(long)n * classes}.", nameof(logProbabilities));
        bool withDense = !denseLogProbabilities.IsEmpty;
        if (withDense && denseLogProbabilities.Length != logProbabilities.Length)
            throw new ArgumentException("denseLogProbabilities must have the same shape as logProbabilities.", nameof(denseLogProbabilities));
        long correct = 0, agree = 0;
        double nll = 0, kl = 0;
        for (int i = 0; i < n; i++)
        {
            var row = logProbabilities.Slice(i * classes, classes);
            int label = labels[i];
            if (label < 0 || label >= classes) throw new ArgumentOutOfRangeException(nameof(labels), label, $"Label of image {i} is outside [0, {classes}).");
            int argmax = ArgMax(row);
            if (argmax == label) correct++;
            nll -= row[label];
            if (!withDense) continue;
            var dense = denseLogProbabilities.Slice(i * classes, classes);
            if (ArgMax(dense) == argmax) agree++;
            for (int c = 0; c < classes; c++)
            {
                double pd = Math.Exp(dense[c]);
                if (pd > 0) kl += pd * (dense[c] - row[c]);
            }
        }
        return new FidelityMetrics((double)correct / n, nll / n, withDense ? (double)agree / n : double.NaN, withDense ? kl / n : double.NaN);
    }

    /// <summary>The metrics of <paramref name="model"/> on <paramref name="data"/>, against <paramref name="dense"/> when given.</summary>
    public static FidelityMetrics Measure(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions preprocessing, VisionTransformerModel? dense = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(data);
        var lp = LogProbabilities(model, data, preprocessing);
        var dlp = dense is null ? [] : LogProbabilities(dense, data, preprocessing);
        return Compute(lp, dlp, data.Labels, model.Architecture.NumClasses);
    }

    /// <summary>Log class probabilities [Count × classes] of every image (no augmentation, no gradients), on the CPU.</summary>
    public static float[] LogProbabilities(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions preprocessing)
        => TrainingLoop.PerClassRows(model, data, preprocessing, logits => logits.to(ScalarType.Float32).log_softmax(1));

    private static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int c = 1; c < row.Length; c++) if (row[c] > row[best]) best = c;
        return best;
    }
}
