// The batches of the training loop and of evaluation: normalisation, random crop and flip on raw pixels (MakeBatch), and
// the model run over a data set in evaluation batches.

using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

public sealed partial class TrainingLoop
{
    /// <summary>
    /// Builds a normalised batch [n, C, S, S] (and labels) from raw pixels, applying random crop with zero
    /// padding and horizontal flips when <paramref name="augment"/> is given.
    /// </summary>
    internal static (Tensor images, Tensor labels) MakeBatch(ImageTensorData data, ReadOnlySpan<int> indices, ViTTrainingOptions o,
        Random? augment, Device device)
    {
        int n = indices.Length, c = data.Channels, s = data.Size, len = data.ImageLength, plane = s * s;
        var buffer = new float[(long)n * len];
        var labels = new long[n];
        var scale = new float[c]; var shift = new float[c];
        for (int ch = 0; ch < c; ch++) { scale[ch] = o.PixelScale / o.Std[ch]; shift[ch] = o.Mean[ch] / o.Std[ch]; }
        int pad = augment is null ? 0 : o.RandomCropPadding;
        var src = data.Pixels;
        for (int i = 0; i < n; i++)
        {
            int idx = indices[i];
            labels[i] = data.Labels[idx];
            int dx = 0, dy = 0; bool flip = false;
            if (augment is not null)
            {
                if (pad > 0) { dx = augment.Next(-pad, pad + 1); dy = augment.Next(-pad, pad + 1); }
                if (o.HorizontalFlip) flip = augment.Next(2) == 1;
            }
            long srcBase = (long)idx * len, dstBase = (long)i * len;
            for (int ch = 0; ch < c; ch++)
            {
                float a = scale[ch], b = shift[ch];
                float padValue = -b; // a zero (black) raw pixel after normalisation
                long sp = srcBase + (long)ch * plane, dp = dstBase + (long)ch * plane;
                if (dx == 0 && dy == 0 && !flip)
                {
                    for (int k = 0; k < plane; k++) buffer[dp + k] = src[sp + k] * a - b;
                    continue;
                }
                for (int y = 0; y < s; y++)
                {
                    int sy = y + dy;
                    long row = dp + (long)y * s;
                    if ((uint)sy >= (uint)s) { buffer.AsSpan((int)row, s).Fill(padValue); continue; }
                    for (int x = 0; x < s; x++)
                    {
                        int sx = (flip ? s - 1 - x : x) + dx;
                        buffer[row + x] = (uint)sx >= (uint)s ? padValue : src[sp + (long)sy * s + sx] * a - b;
                    }
                }
            }
        }
        var images = tensor(buffer, new long[] { n, c, s, s });
        var labelTensor = tensor(labels);
        if (device.type != DeviceType.CPU)
        {
            images = images.to(device);
            labelTensor = labelTensor.to(device);
        }
        return (images, labelTensor);
    }

    /// <summary>The teacher's probabilities [n, classes] of the images at <paramref name="indices"/>, in that order.</summary>
    internal static Tensor TeacherBatch(ImageTensorData data, ReadOnlySpan<int> indices, Device device)
    {
        var all = data.TeacherProbabilities ?? throw new InvalidOperationException("The data has no teacher probabilities.");
        int k = data.TeacherClasses, n = indices.Length;
        var rows = new float[(long)n * k];
        for (int i = 0; i < n; i++) all.AsSpan(indices[i] * k, k).CopyTo(rows.AsSpan(i * k, k));
        var t = tensor(rows, new long[] { n, k });
        return device.type == DeviceType.CPU ? t : t.to(device);
    }

    /// <summary>Top-1 accuracy of <paramref name="model"/> on labelled data (no augmentation, no gradients).</summary>
    public static double Evaluate(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device? device = null)
    {
        if (data.Count == 0) return double.NaN;
        device ??= model.parameters().First().device;
        long correct = 0;
        ForEachBatch(model, data, options, device, (logits, labels) => correct += logits.argmax(1).eq(labels).sum().ToInt64());
        return (double)correct / data.Count;
    }

    /// <summary>Class probabilities [Count, classes] for every image (no augmentation, no gradients), on the CPU.</summary>
    public static float[] PredictProbabilities(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device? device = null)
        => PerClassRows(model, data, options, logits => logits.softmax(1), device);

    /// <summary>
    /// <paramref name="rows"/>(logits) of every image, [Count, classes] as float32 on the CPU, in evaluation batches (no
    /// augmentation, no gradients).
    /// </summary>
    internal static float[] PerClassRows(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options,
        Func<Tensor, Tensor> rows, Device? device = null)
    {
        device ??= model.parameters().First().device;
        int k = model.Architecture.NumClasses;
        var result = new float[(long)data.Count * k];
        int offset = 0;
        ForEachBatch(model, data, options, device, (logits, _) =>
        {
            using var p = rows(logits).to(ScalarType.Float32).cpu();
            var values = p.data<float>().ToArray();
            values.CopyTo(result, offset);
            offset += values.Length;
        });
        return result;
    }

    /// <summary>Runs the model over data in evaluation batches inside dispose scopes: <paramref name="onBatch"/> gets (logits, labels).</summary>
    internal static void ForEachBatch(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device device,
        Action<Tensor, Tensor> onBatch)
        => ForEachInputBatch(model, data, options, device, (x, y) => onBatch(model.forward(x), y));

    /// <summary>
    /// Cuts <paramref name="data"/> into normalised evaluation batches (no augmentation) and calls
    /// <paramref name="onBatch"/>(images, labels) with the model in eval mode, without gradients, each batch in its own
    /// dispose scope; the model's train/eval mode is restored afterwards.
    /// </summary>
    internal static void ForEachInputBatch(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device device,
        Action<Tensor, Tensor> onBatch)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            var all = Enumerable.Range(0, data.Count).ToArray();
            for (long start = 0; start < data.Count; start += options.EvaluationBatchSize)
            {
                int count = (int)Math.Min(options.EvaluationBatchSize, data.Count - start);
                using var scope = NewDisposeScope();
                var (x, y) = MakeBatch(data, all.AsSpan((int)start, count), options, null, device);
                onBatch(x, y);
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
