using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Training;
using static TorchSharp.torch;

namespace Cifar10Pruning;

/// <summary>The speed columns of the report (see <see cref="SampleReport.SpeedNotes"/>).</summary>
internal static class Speed
{
    public const int BatchSize = 64;
    /// <summary>Interleaved rounds of the comparison run's <see cref="LatencyFraction"/>.</summary>
    public const int LatencyRounds = 7;
    /// <summary>Forwards of each model per round of <see cref="LatencyFraction"/>.</summary>
    public const int LatencyForwards = 3;

    /// <summary>Raw-model batch inference over <paramref name="test"/> in batches of 64: images/s, median of <paramref name="passes"/> passes (each after a full GC).</summary>
    public static double BatchImagesPerSecond(ViTModelParameters vit, ImageTensorData test, int passes = 5)
    {
        vit.PredictProbabilities(test.Take(2 * BatchSize), BatchSize); // warm-up
        var rates = new double[passes];
        for (int i = 0; i < passes; i++)
        {
            // the process still holds the training data and earlier models: collect first, so that no full GC lands in a pass
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            var sw = Stopwatch.StartNew();
            vit.PredictProbabilities(test, BatchSize);
            rates[i] = test.Count / sw.Elapsed.TotalSeconds;
        }
        return Median(rates);
    }

    /// <summary>
    /// Median latency (ms) of one <c>PredictionEngine.Predict</c> on one image, and of a raw TorchSharp forward of the same
    /// model on the same image already turned into a normalised [1, C, H, W] tensor. The two are timed alternately so that
    /// load changes on a shared machine hit both alike.
    /// </summary>
    public static (double EngineMs, double RawMs) SingleImageLatency(MLContext ml, ITransformer model, ViTModelParameters vit,
        ImageSet images, int samples = 100, int warmup = 10)
    {
        using var engine = ml.Model.CreatePredictionEngine<ImageInput, Prediction>(model, inputSchemaDefinition: images.InputSchema());
        var input = new ImageInput { Image = images.CreateImage(0) };
        using var prepared = PreparedTensor(vit, images.GetImage(0));
        var net = vit.Model;
        var engineMs = new List<double>(samples);
        var rawMs = new List<double>(samples);
        for (int i = 0; i < warmup + samples; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            engine.Predict(input);
            long t1 = Stopwatch.GetTimestamp();
            using (NewDisposeScope())
            using (no_grad())
                net.forward(prepared);
            long t2 = Stopwatch.GetTimestamp();
            if (i < warmup) continue;
            engineMs.Add(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
            rawMs.Add(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
        }
        input.Image.Dispose();
        return (Median(engineMs), Median(rawMs));
    }

    /// <summary>One image as the model's input tensor: (pixel · scale − mean) / std per channel, shape [1, C, H, W].</summary>
    private static Tensor PreparedTensor(ViTModelParameters vit, ReadOnlySpan<byte> planar)
    {
        var pre = vit.Preprocessing;
        var a = vit.Architecture;
        int plane = a.ImageSize * a.ImageSize;
        var x = new float[planar.Length];
        for (int i = 0; i < x.Length; i++)
        {
            int c = i / plane;
            x[i] = (planar[i] * pre.PixelScale - pre.Mean[c]) / pre.Std[c];
        }
        return tensor(x, new long[] { 1, a.Channels, a.ImageSize, a.ImageSize });
    }

    /// <summary>
    /// <paramref name="pruned"/>'s batch latency over <paramref name="dense"/>'s: both raw models forward the same
    /// <see cref="BatchSize"/> random images without autograd, alternating within every round (<paramref name="forwards"/>
    /// of each per round, after a warm-up), so that load changes hit both alike; the median of the rounds' ratios.
    /// </summary>
    public static double LatencyFraction(ViTModelParameters dense, ViTModelParameters pruned, int rounds = LatencyRounds, int forwards = LatencyForwards)
    {
        var a = dense.Architecture;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var x = randn(BatchSize, a.Channels, a.ImageSize, a.ImageSize);
        var (d, p) = (dense.Model, pruned.Model);
        d.eval(); p.eval();
        double Time(Microsoft.ML.Gohsp.VisionTransformer.VisionTransformerModel m)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < forwards; i++)
                using (NewDisposeScope()) m.forward(x);
            return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Time(d); Time(p); // warm-up
        var ratios = new double[rounds];
        for (int r = 0; r < rounds; r++)
        {
            double td = Time(d), tp = Time(p);
            ratios[r] = tp / td;
        }
        return Median(ratios);
    }

    public static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length == 0 ? double.NaN : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }
}
