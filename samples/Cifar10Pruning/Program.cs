// CIFAR-10 with a vision transformer in ML.NET, Model Builder-style: train dense, prune (GOHSP, and the SOMP/SGMP
// baselines), evaluate all of them under one fair protocol, save each model zip, load it back in a fresh MLContext and
// predict with a PredictionEngine. Writes report.json, report.md and PNG plots. Flags: --help (SampleOptions.cs).
using Cifar10Pruning;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.Transforms.Image;

try
{
    return await Sample.RunAsync(args);
}
catch (Exception e) when (e is ArgumentException or IOException or InvalidDataException or UnauthorizedAccessException
                           or NotSupportedException or InvalidOperationException or HttpRequestException or FormatException
                           or System.Text.Json.JsonException)
{
    // One line, no stack trace: bad flags, missing or truncated data, unusable output folder...
    Console.Error.WriteLine("error: " + string.Join(" ", e.Message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)));
    return 1;
}

/// <summary>What an app passes to the PredictionEngine: one image.</summary>
internal sealed class ImageInput
{
    /// <summary>32×32 (CIFAR-10); other sizes (--images) bind through <see cref="ImageSet.InputSchema"/>.</summary>
    [ImageType(32, 32)]
    public MLImage Image { get; set; } = null!;

    /// <summary>Unused at prediction time, but the saved pipeline starts with MapValueToKey("Label").</summary>
    public string Label { get; set; } = "";
}

/// <summary>What the PredictionEngine returns: class probabilities and the predicted class name.</summary>
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
        var options = SampleOptions.Parse(args);
        if (options.Help)
        {
            Console.WriteLine(SampleOptions.Usage);
            return 0;
        }
        var ui = new ConsoleUi(options.Plain);
        if (options.Aggregate is { } folder)
        {
            var collected = Results.Collect(folder);
            if (options.Baselines is { } baselines) collected = Results.WithBaselines(collected, baselines);
            var written = Results.Write(collected, options.ResultsMarkdown ?? Path.Combine(folder, "results.md"), retimed: Retime.Collect(folder));
            foreach (var f in written) ui.Line($"Wrote {f}");
            return 0;
        }

        if (options.Retime is { } timed)
        {
            foreach (var f in Retime.Run(timed, options.Threads, ui)) ui.Line($"Wrote {f}");
            return 0;
        }

        string outDir = Path.GetFullPath(options.Out);
        Directory.CreateDirectory(outDir);
        // Read (and validate) both splits before any training.
        string data, testSplit;
        ImageSet trainSet, testSet;
        if (options.Images is { } images)
        {
            data = Path.GetFullPath(images);
            int size = ViTArchitecture.FromPreset(options.Arch, 2).ImageSize;
            var split = ImageFolder.Read(data, size, options.TestFraction, options.ValidationSeed);
            (trainSet, testSet, testSplit) = (split.Train.Take(options.MaxTrain), split.Test.Take(options.MaxTest), split.Description);
            ui.Line($"Images from {data} ({trainSet.ClassNames.Count} classes, resized to {size}×{size}): {trainSet.Count:N0} training and {testSet.Count:N0} test images (test: {testSplit}).");
        }
        else
        {
            data = options.Data ?? await DefaultDataAsync(ui);
            trainSet = ImageSet.From(Cifar10.Read(data, Cifar10Split.Train, options.MaxTrain));
            testSet = ImageSet.From(Cifar10.Read(data, Cifar10Split.Test, options.MaxTest));
            testSplit = RunConfig.Cifar10TestSplit;
            ui.Line($"CIFAR-10 from {data}: {trainSet.Count:N0} training and {testSet.Count:N0} test images.");
        }

        // The validation split: held out of the training images (seeded, stratified, the same for every seed). Pruning stages
        // are measured on it; defaults are chosen on it; the test images are only reported.
        ValidationSplit? validation = null;
        if (options.Validation > 0)
        {
            var held = ImageTensorData.ValidationIndices(trainSet.Labels, options.Validation, options.ValidationSeed);
            validation = new ValidationSplit(trainSet.Select(held), options.Validation, options.ValidationSeed, ValidationSplit.Hash(held));
            trainSet = trainSet.Select(ImageTensorData.Complement(held, trainSet.Count));
            ui.Line(Text.Invariant($"Validation split: {validation.Images.Count:N0} of the training images (seed {options.ValidationSeed}); {trainSet.Count:N0} left for training."));
        }

        var run = new ComparisonRun(options, ui, trainSet, validation, testSet, data, testSplit);
        var reports = new List<SampleReport>();
        foreach (int seed in options.Seeds)
        {
            // One seed: files directly in --out; several: one complete run per --out/seed-N.
            string dir = options.Seeds.Count == 1 ? outDir : Path.Combine(outDir, $"seed-{seed}");
            ui.Heading(options.Seeds.Count == 1 ? $"Run (seed {seed})" : $"Seed {seed} → {dir}");
            var report = run.Run(seed, dir);
            WriteOutputs(report, dir, ui);
            reports.Add(report);
        }

        if (options.Seeds.Count > 1 || options.ResultsMarkdown is not null)
            foreach (var f in Results.Write(reports, options.ResultsMarkdown ?? Path.Combine(outDir, "results.md")))
                ui.Line($"Wrote {f}");
        return 0;
    }

    private static void WriteOutputs(SampleReport report, string dir, ConsoleUi ui)
    {
        var plots = new List<string>
        {
            Plots.Top1VsParams(Path.Combine(dir, "top1-vs-params.png"), $"Top-1 vs parameters (seed {report.Config.Seed})",
                new Plots.Point(report.Dense.Params, report.Dense.Top1, 0, "dense"),
                report.Entries.GroupBy(e => e.Method).Select(g => (g.Key, (IReadOnlyList<Plots.Point>)g.Select(e => new Plots.Point(e.Params, e.Top1, 0, e.Method)).ToArray()))),
        };
        foreach (var e in report.Entries)
            plots.Add(Plots.Architecture(Path.Combine(dir, Path.GetFileNameWithoutExtension(e.Model) + "-architecture.png"), e));
        report.WriteJson(Path.Combine(dir, "report.json"));
        report.WriteMarkdown(Path.Combine(dir, "report.md"), plots);
        report.Print(ui);
        ui.Line($"Wrote {Path.Combine(dir, "report.json")}, report.md, {plots.Count} plot(s) and the model zips to {dir}");
    }

    /// <summary>../shared/data/cifar-10-subset when present (searched upwards), else the official archive, downloaded once.</summary>
    private static async Task<string> DefaultDataAsync(ConsoleUi ui)
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "data", "cifar-10-subset");
            if (Directory.Exists(candidate)) return candidate;
        }
        string cache = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "gohsp");
        ui.Line($"No local CIFAR-10 found (pass --data to use one); using the official archive in {cache}.");
        return await ui.DownloadAsync($"Downloading {Cifar10.DownloadUri}", p => Cifar10.DownloadAsync(cache, p));
    }
}
