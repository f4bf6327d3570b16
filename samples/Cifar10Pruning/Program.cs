// CIFAR-10 with a vision transformer in ML.NET: train, evaluate, save, load in a fresh MLContext, predict.
// Usage: dotnet Cifar10Pruning.dll [--data PATH] [--arch PRESET] [--epochs N] [--seed N] [--out DIR] [--threads N] [--max-train N]
//   --data: the extracted cifar-10-batches-bin folder or cifar-10-binary.tar.gz (env CIFAR10_DATA). Default:
//           ../shared/data/cifar-10-subset when present, else the official archive is downloaded to ~/.cache/gohsp.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.MLNet;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Transforms.Image;

try
{
    return await Sample.RunAsync(args);
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException
                           or NotSupportedException or InvalidOperationException or HttpRequestException or FormatException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

internal sealed class ImageInput
{
    [ImageType(32, 32)]
    public MLImage Image { get; set; } = null!;

    /// <summary>Unused at prediction time, but the saved pipeline starts with MapValueToKey("Label").</summary>
    public string Label { get; set; } = "";
}

internal sealed class Prediction
{
    public float[] Score { get; set; } = [];
    [ColumnName("PredictedLabel")]
    public string PredictedClass { get; set; } = "";
}

internal static class Sample
{
    public static async Task<int> RunAsync(string[] args)
    {
        var opts = ParseArgs(args);
        string data = opts.GetValueOrDefault("data") ?? Environment.GetEnvironmentVariable("CIFAR10_DATA") ?? await DefaultDataAsync();
        string arch = opts.GetValueOrDefault("arch") ?? "cifar-tiny";
        int epochs = Int(opts, "epochs", 5), seed = Int(opts, "seed", 1), threads = Int(opts, "threads", 0);
        int? maxTrain = opts.ContainsKey("max-train") ? Int(opts, "max-train", 0) : null;
        string outDir = Path.GetFullPath(opts.GetValueOrDefault("out") ?? "out");

        Console.WriteLine($"Data: {data}");
        var trainSet = Cifar10.Read(data, Cifar10Split.Train, maxTrain);
        var testSet = Cifar10.Read(data, Cifar10Split.Test);
        Console.WriteLine($"CIFAR-10: {trainSet.Count} training and {testSet.Count} test images.");

        var ml = new MLContext(seed);
        var train = Cifar10.ToDataView(ml, trainSet);
        var test = Cifar10.ToDataView(ml, testSet);
        var options = new ViTClassificationTrainer.Options
        {
            ArchitecturePreset = arch,
            ImageColumnName = "Pixels",
            Epochs = epochs,
            Seed = seed,
            NumberOfThreads = threads,
            ValidationSet = null,
            Progress = new ConsoleProgress(),
        };
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(options))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));

        var sw = Stopwatch.StartNew();
        var model = pipeline.Fit(train);
        Console.WriteLine();
        Console.WriteLine($"Trained in {sw.Elapsed.TotalSeconds:F0} s.");
        var vit = model.OfType<ITransformer>().OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single().Model;
        Console.WriteLine($"Model: {vit.Architecture}  ({vit.ParameterCount:N0} parameters, {vit.ForwardFlops / 1e6:F1} MFLOPs/image)");

        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        Console.WriteLine($"Test accuracy: {metrics.MicroAccuracy:P2} (macro {metrics.MacroAccuracy:P2}, log-loss {metrics.LogLoss:F3})");

        Directory.CreateDirectory(outDir);
        string zip = Path.Combine(outDir, "vit-dense.zip");
        ml.Model.SaveAtomically(model, train.Schema, zip);
        Console.WriteLine($"Saved {zip} ({new FileInfo(zip).Length / 1024.0 / 1024.0:F1} MiB).");

        var fresh = new MLContext();
        var loaded = fresh.Model.Load(zip, out _);
        var engine = fresh.Model.CreatePredictionEngine<ImageInput, Prediction>(loaded);
        Console.WriteLine("Predictions of the reloaded model:");
        for (int i = 0; i < 5; i++)
        {
            var p = engine.Predict(new ImageInput { Image = Cifar10.CreateImage(testSet.GetImage(i)) });
            string truth = testSet.ClassNames[testSet.Labels[i]];
            Console.WriteLine($"  test image {i}: predicted {p.PredictedClass,-10} ({p.Score.Max():P0}), actual {truth}");
        }
        return 0;
    }

    private static async Task<string> DefaultDataAsync()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "data", "cifar-10-subset");
            if (Directory.Exists(candidate)) return candidate;
        }
        string cache = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "gohsp");
        Console.WriteLine($"No local CIFAR-10 found; downloading the official archive to {cache} (pass --data to use a local copy).");
        var progress = new SyncProgress<(long read, long? total)>(p =>
        {
            if (p.total is long t && t > 0)
            {
                int width = 40, done = (int)(width * p.read / t);
                Console.Write($"\r[{new string('#', done)}{new string('.', width - done)}] {p.read / 1048576.0:F1}/{t / 1048576.0:F1} MiB");
            }
        });
        var path = await Cifar10.DownloadAsync(cache, progress);
        Console.WriteLine();
        return path;
    }

    private static Dictionary<string, string> ParseArgs(string[] args)
    {
        var known = new HashSet<string> { "data", "arch", "epochs", "seed", "out", "threads", "max-train" };
        var d = new Dictionary<string, string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"Unexpected argument '{args[i]}'.");
            var key = args[i][2..];
            if (!known.Contains(key)) throw new ArgumentException($"Unknown option '--{key}'. Known: {string.Join(", ", known.Select(k => "--" + k))}.");
            if (i + 1 >= args.Length) throw new ArgumentException($"Option '--{key}' needs a value.");
            d[key] = args[++i];
        }
        return d;
    }

    private static int Int(Dictionary<string, string> d, string key, int dflt) =>
        !d.TryGetValue(key, out var v) ? dflt
        : int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int x) ? x
        : throw new ArgumentException($"Option '--{key}' expects an integer, got '{v}'.");
}

internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

internal sealed class ConsoleProgress : IProgress<ViTTrainingProgress>
{
    public void Report(ViTTrainingProgress p)
    {
        if (p.EpochCompleted)
        {
            Console.WriteLine($"\r[{p.Stage}] epoch {p.Epoch}/{p.TotalEpochs}: loss {p.Loss:F3}, train acc {p.TrainAccuracy:P1}, {p.ImagesPerSecond:F0} img/s".PadRight(100));
            return;
        }
        if (Console.IsOutputRedirected && p.Step % 20 != 0) return;
        int width = 30, done = width * p.Step / p.StepsPerEpoch;
        Console.Write($"\r[{p.Stage}] epoch {p.Epoch}/{p.TotalEpochs} [{new string('#', done)}{new string('.', width - done)}] step {p.Step}/{p.StepsPerEpoch} loss {p.Loss:F3} {p.ImagesPerSecond:F0} img/s   ");
    }
}
