using System.Text.Json;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>Runs samples/Cifar10Pruning once (a process, as a user runs it) on a tiny config for the tests that check its output.</summary>
public sealed class SampleRunFixture : IDisposable
{
    public static readonly string Sample = BuiltApp.Locate("samples/Cifar10Pruning", "Cifar10Pruning");
    private readonly TempDir _tmp = new();

    public string OutDir { get; }
    public (int ExitCode, string StdOut, string StdErr) Result { get; }

    public SampleRunFixture()
    {
        OutDir = Path.Combine(_tmp.Path, "out");
        // cifar-micro, 256 training / 300 test images, 1 dense epoch + 2 after it, one sparsity
        Result = BuiltApp.Run(Sample, ["--data", Cifar10Tests.SubsetDir, "--arch", "cifar-micro", "--max-train", "256", "--max-test", "300",
            "--epochs", "1", "--post-epochs", "2", "--sparsity", "0.5", "--method", "gohsp", "--seed", "3", "--precision", "fp32",
            "--threads", "1", "--out", OutDir], TimeSpan.FromMinutes(5));
    }

    public void Dispose() => _tmp.Dispose();
}

/// <summary>
/// samples/Cifar10Pruning launched as a process: the whole flow on a tiny config, the aggregation over seeds, and its
/// one-line errors for bad input.
/// </summary>
public class SampleTests(SampleRunFixture run, ITestOutputHelper output) : IClassFixture<SampleRunFixture>
{
    private (int ExitCode, string StdOut, string StdErr) RunSample(params string[] args)
    {
        var r = BuiltApp.Run(SampleRunFixture.Sample, args, TimeSpan.FromMinutes(5));
        output.WriteLine($"exit {r.ExitCode}\n--- stdout\n{r.StdOut}\n--- stderr\n{r.StdErr}");
        return r;
    }

    [Fact]
    public void RunsEndToEndAndWritesReportsPlotsAndAModelThatReloadsAndPredicts()
    {
        var (exit, stdout, stderr) = run.Result;
        string outDir = run.OutDir;
        output.WriteLine($"exit {exit}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
        exit.Should().Be(0, stderr);
        stdout.Should().Contain("Predictions of gohsp-50.zip, loaded in a fresh MLContext");
        stdout.Should().NotContain("\u001b[", "redirected output gets plain log lines, no live progress bars");
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
        var root = json.RootElement;
        var dense = root.GetProperty("dense");
        var entries = root.GetProperty("entries").EnumerateArray().ToArray();
        entries.Should().HaveCount(1);
        var gohsp = entries[0];
        foreach (var e in new[] { dense, gohsp })
        {
            foreach (var field in new[] { "params", "flops", "batch_images_per_s", "single_latency_ms", "raw_forward_latency_ms" })
                e.GetProperty(field).GetDouble().Should().BePositive(field);
            e.GetProperty("seed").GetInt32().Should().Be(3);
            e.GetProperty("post_dense_epochs").GetInt32().Should().Be(2, "every model gets the same budget after the dense model");
        }
        dense.GetProperty("method").GetString().Should().Be("dense");
        dense.GetProperty("sparsity").GetDouble().Should().Be(0);
        gohsp.GetProperty("method").GetString().Should().Be("gohsp");
        gohsp.GetProperty("sparsity").GetDouble().Should().Be(0.5);
        long denseParams = dense.GetProperty("params").GetInt64(), prunedParams = gohsp.GetProperty("params").GetInt64();
        denseParams.Should().Be(VisionTransformer.ViTArchitecture.CifarMicro().ParameterCount);
        (1.0 - (double)prunedParams / denseParams).Should().BeApproximately(0.5, 0.02);
        gohsp.GetProperty("flops").GetInt64().Should().BeLessThan(dense.GetProperty("flops").GetInt64());
        gohsp.GetProperty("blocks").GetArrayLength().Should().Be(4);
        var config = root.GetProperty("config");
        (config.GetProperty("dense_epochs").GetInt32(), config.GetProperty("post_epochs").GetInt32(), config.GetProperty("test_images").GetInt32())
            .Should().Be((1, 2, 300));
        var gohspSettings = config.GetProperty("gohsp");
        (gohspSettings.GetProperty("head_graph_weight").GetDouble(), gohspSettings.GetProperty("sparsity_ramp").GetDouble(), gohspSettings.GetProperty("monotone_support").GetBoolean())
            .Should().Be((new Pruning.GohspOptions().HeadGraphWeight, new Pruning.GohspOptions().Admm.SparsityRampFraction, new Pruning.GohspOptions().Admm.MonotoneSupport), "without flags GOHSP runs its defaults");
        gohspSettings.GetProperty("admm_pull").GetString().Should().Be("outside", "ADMM pulls outside Z's support only by default");
        // the validation split (10%, stratified per class) is held out of the 256 training images and recorded
        int validation = config.GetProperty("validation_images").GetInt32();
        (config.GetProperty("train_images").GetInt32() + validation).Should().Be(256);
        validation.Should().BeInRange(20, 32);
        config.GetProperty("validation_seed").GetInt32().Should().Be(1);
        config.GetProperty("validation_indices_sha256").GetString().Should().MatchRegex("^[0-9a-f]{64}$");
        // fidelity on the test split for every model; the cut shock and the residual ratio for GOHSP
        foreach (var e in new[] { dense, gohsp })
        {
            e.GetProperty("nll").GetDouble().Should().BeInRange(0.5, 5, "a 10-class model near chance has NLL near ln 10 = 2.3");
            e.GetProperty("raw_top1").GetDouble().Should().BeApproximately(e.GetProperty("top1").GetDouble(), 0.0034,
                "the fidelity metrics read each image's class as the model's output index (≤ 1 of 300 images may differ by a tie)");
            e.GetProperty("kl_from_dense").GetDouble().Should().BeGreaterThanOrEqualTo(0);
            e.GetProperty("agreement").GetDouble().Should().BeInRange(0.05, 1);
        }
        gohsp.GetProperty("cut_shock_top1").ValueKind.Should().Be(JsonValueKind.Number);
        gohsp.GetProperty("residual_ratio").GetDouble().Should().BeInRange(0, 1);
        dense.GetProperty("cut_shock_top1").ValueKind.Should().Be(JsonValueKind.Null);
        // the machine that measured the speed columns
        var machine = config.GetProperty("machine_info");
        machine.GetProperty("cpu_model").GetString().Should().NotBeNullOrWhiteSpace();
        machine.GetProperty("logical_cores").GetInt32().Should().Be(Environment.ProcessorCount);
        machine.GetProperty("torch_threads").GetInt32().Should().Be(1, "the run used --threads 1");
        var probe = Diagnostics.MachineInfo.Probe();
        (machine.GetProperty("avx2").GetBoolean(), machine.GetProperty("avx512").GetBoolean(), machine.GetProperty("avx512_bf16").GetBoolean(),
            machine.GetProperty("amx").GetBoolean()).Should().Be((probe.Avx2, probe.Avx512, probe.Avx512Bf16, probe.Amx));
        machine.GetProperty("isa_flags").GetString().Should().Be(probe.IsaFlags);
        foreach (var e in new[] { dense, gohsp })
            e.GetProperty("mlnet_transform_images_per_s").GetDouble().Should().BePositive();

        File.ReadAllText(Path.Combine(outDir, "report.md")).Should().Contain("| gohsp | 50% → ").And.Contain("| dense |");
        foreach (var png in new[] { "top1-vs-params.png", "gohsp-50-architecture.png" })
        {
            var bytes = File.ReadAllBytes(Path.Combine(outDir, png));
            bytes.Length.Should().BeGreaterThan(5_000, png);
            bytes.Take(8).Should().Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png + " is a PNG");
        }

        // The saved pruned zip loads here too, predicts with a PredictionEngine, and has the accuracy the report claims.
        var ml = new MLContext(seed: 1);
        var model = ml.Model.Load(Path.Combine(outDir, "gohsp-50.zip"), out _);
        var testSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, maxImages: 300);
        ml.MulticlassClassification.Evaluate(model.Transform(Cifar10.ToDataView(ml, testSet))).MicroAccuracy
            .Should().BeApproximately(gohsp.GetProperty("top1").GetDouble(), 0.0034); // ≤ 1 of 300 images may flip across thread counts
        using var engine = ml.Model.CreatePredictionEngine<ImageRow, PredictedClassRow>(model);
        var p = engine.Predict(new ImageRow { Image = Cifar10.CreateImage(testSet.GetImage(0)), Label = "" });
        p.Score.Should().HaveCount(10);
        p.Score.Sum().Should().BeApproximately(1f, 1e-4f);
        testSet.ClassNames.Should().Contain(p.PredictedLabel);
        foreach (var zip in new[] { "dense.zip", "dense-reference.zip" }) File.Exists(Path.Combine(outDir, zip)).Should().BeTrue(zip);
    }

    /// <summary>
    /// --aggregate: two report.json (the real one, and a copy as seed 4 with top-1 raised by 10 points) give mean ± sample
    /// std per (method, sparsity), written between the markers of an existing page without touching the rest.
    /// </summary>
    [Fact]
    public void AggregatesSeedsIntoMeanAndStdInsideTheMarkersOfAPage()
    {
        run.Result.ExitCode.Should().Be(0, run.Result.StdErr);
        using var tmp = new TempDir();
        var report = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(run.OutDir, "report.json")))!;
        Directory.CreateDirectory(Path.Combine(tmp.Path, "seed-3"));
        File.WriteAllText(Path.Combine(tmp.Path, "seed-3", "report.json"), report.ToJsonString());
        double top1 = report["entries"]![0]!["top1"]!.GetValue<double>();
        report["config"]!["seed"] = 4;
        foreach (var e in report["entries"]!.AsArray().Append(report["dense"])) e!["seed"] = 4;
        report["entries"]![0]!["top1"] = top1 + 0.1;
        Directory.CreateDirectory(Path.Combine(tmp.Path, "seed-4"));
        File.WriteAllText(Path.Combine(tmp.Path, "seed-4", "report.json"), report.ToJsonString());
        string page = Path.Combine(tmp.Path, "results.md");
        File.WriteAllText(page, "# My page\nintro\n<!-- results:begin (generated by samples/Cifar10Pruning --results-md; do not edit by hand) -->\nold table\n<!-- results:end -->\noutro\n");

        var (exit, _, stderr) = RunSample("--aggregate", tmp.Path, "--results-md", page);

        exit.Should().Be(0, stderr);
        var text = File.ReadAllText(page);
        output.WriteLine(text);
        text.Should().StartWith("# My page\nintro\n<!-- results:begin").And.EndWith("<!-- results:end -->\noutro\n").And.NotContain("old table");
        string expected = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"| {(top1 + 0.05) * 100:F2} ± {Math.Sqrt(2 * 0.05 * 0.05) * 100:F2} |");
        text.Split('\n').Should().Contain(l => l.StartsWith("| gohsp | 50% ") && l.Contains("| 2 |") && l.Contains(expected), "mean ± sample std over the 2 seeds");
        text.Split('\n').Should().Contain(l => l.StartsWith("| dense | — | 2 |"));
        File.Exists(Path.Combine(tmp.Path, "results-top1-vs-params.png")).Should().BeTrue();

        // paired by seed: GOHSP − dense reference is d and d + 0.1, so mean d + 0.05, sample std 0.0707, and the 95% interval
        // is ± t(0.975, 1 dof) = 12.706 × 0.0707 / √2 = ± 0.6353 (× 100 in points)
        double d = top1 - report["dense"]!["top1"]!.GetValue<double>();
        double half = 12.7062047 * Math.Sqrt(2 * 0.05 * 0.05) / Math.Sqrt(2);
        string ci = string.Create(System.Globalization.CultureInfo.InvariantCulture, $"[{(d + 0.05 - half) * 100:F2}, {(d + 0.05 + half) * 100:F2}]");
        text.Split('\n').Should().Contain(l => l.StartsWith("| 50% | GOHSP − dense reference | 2 |") && l.Contains(ci), "a paired 95% Student-t interval");
        File.Exists(Path.Combine(tmp.Path, "results-paired-differences.png")).Should().BeTrue();
    }

    [Fact]
    public void AggregatePairsARerunMethodWithTheStoredBaselinesOfTheSameDenseModels()
    {
        run.Result.ExitCode.Should().Be(0, run.Result.StdErr);
        using var tmp = new TempDir();
        var report = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(run.OutDir, "report.json")))!;
        string runs = Directory.CreateDirectory(Path.Combine(tmp.Path, "runs", "seed-3")).FullName;
        File.WriteAllText(Path.Combine(runs, "report.json"), report.ToJsonString());
        // the stored run of the same seed: the same dense model, a SOMP entry 2 points below this GOHSP, and a GOHSP entry that must not be used
        var baseline = report.DeepClone();
        var somp = baseline["entries"]![0]!.DeepClone();
        somp["method"] = "somp";
        somp["top1"] = somp["top1"]!.GetValue<double>() - 0.02;
        baseline["entries"]![0]!["top1"] = 0.0;
        baseline["entries"]!.AsArray().Add(somp);
        // and an SGMP entry in the Fisher metric 1 point above it: its own row, not the magnitude baseline's
        var sgmpFisher = somp.DeepClone();
        sgmpFisher["method"] = "sgmp-fisher";
        sgmpFisher["top1"] = somp["top1"]!.GetValue<double>() + 0.03;
        baseline["entries"]!.AsArray().Add(sgmpFisher);
        string stored = Directory.CreateDirectory(Path.Combine(tmp.Path, "stored", "seed-3")).FullName;
        File.WriteAllText(Path.Combine(stored, "report.json"), baseline.ToJsonString());
        string page = Path.Combine(tmp.Path, "results.md");

        var (exit, _, stderr) = RunSample("--aggregate", Path.Combine(tmp.Path, "runs"), "--baselines", Path.Combine(tmp.Path, "stored"), "--results-md", page);

        exit.Should().Be(0, stderr);
        var lines = File.ReadAllText(page).Split('\n');
        lines.Should().Contain(l => l.StartsWith("| 50% | GOHSP − SOMP | 1 | +2.00 |"), "GOHSP of the run paired with SOMP of the stored report");
        lines.Should().ContainSingle(l => l.StartsWith("| gohsp | 50% ") && l.Contains("| 1 |"), "the stored report's own GOHSP entry is not used");
        lines.Should().Contain(l => l.StartsWith("| somp | 50% "));
        lines.Should().Contain(l => l.StartsWith("| 50% | GOHSP − SGMP (Fisher metric) | 1 | −1.00 |"), "SGMP in the Fisher metric is paired under its own label");
        lines.Should().NotContain(l => l.StartsWith("| 50% | GOHSP − SGMP |"), "the stored report has no magnitude SGMP");

        // a stored run of the same seed from another dense model is refused, naming what differs
        baseline["config"]!["dense_start_top1"] = baseline["config"]!["dense_start_top1"]!.GetValue<double>() + 0.01;
        File.WriteAllText(Path.Combine(stored, "report.json"), baseline.ToJsonString());
        var (exit2, _, stderr2) = RunSample("--aggregate", Path.Combine(tmp.Path, "runs"), "--baselines", Path.Combine(tmp.Path, "stored"), "--results-md", page);
        exit2.Should().NotBe(0);
        stderr2.Should().Contain("Option '--baselines'").And.Contain("(seed 3) starts from another dense model").And.Contain("dense top-1");
    }

    /// <summary>
    /// Writes a folder per class of PNG files from real CIFAR-10 images (<paramref name="perClass"/> of each of the first
    /// <paramref name="classes"/> classes; some grayscale, some RGBA, some 48×48) and returns the folder.
    /// </summary>
    internal static string WriteImageFolder(string root, int classes, int perClass)
    {
        var set = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 400);
        var count = new int[classes];
        for (int i = 0; i < set.Count; i++)
        {
            int label = set.Labels[i];
            if (label >= classes || count[label] == perClass) continue;
            int k = count[label]++;
            string dir = Directory.CreateDirectory(Path.Combine(root, set.ClassNames[label])).FullName;
            File.WriteAllBytes(Path.Combine(dir, $"{i:D5}.png"), EncodedImageInputTests.Png(set.GetImage(i), gray: k % 4 == 1, rgba: k % 4 == 2, size: k % 4 == 3 ? 48 : 32));
        }
        count.Should().AllSatisfy(c => c.Should().Be(perClass), "the subset has enough images of every class");
        return root;
    }

    /// <summary>
    /// --images: a folder per class of PNG files (mixed sizes, grayscale and RGBA), a seeded 25% of each class as the test
    /// split, the validation split carved from the rest; the same report, plots and zips as the CIFAR path.
    /// </summary>
    [Fact]
    public void ImagesFolderRunsEndToEndWithATestSplitPerClass()
    {
        using var tmp = new TempDir();
        string images = WriteImageFolder(Path.Combine(tmp.Path, "my images"), classes: 4, perClass: 8);
        string outDir = Path.Combine(tmp.Path, "out");

        var (exit, stdout, stderr) = RunSample("--images", images, "--test-fraction", "0.25", "--arch", "cifar-micro", "--epochs", "1", "--post-epochs", "2",
            "--sparsity", "0.5", "--method", "gohsp", "--precision", "fp32", "--threads", "1", "--out", outDir,
            "--head-graph-weight", "0", "--head-graph-scoring", "scaled", "--sparsity-ramp", "0.3", "--monotone-support", "off", "--projection-metric", "euclidean",
            "--admm-pull", "everywhere");

        exit.Should().Be(0, stderr);
        stdout.Should().Contain("Predictions of gohsp-50.zip, loaded in a fresh MLContext");
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
        var config = json.RootElement.GetProperty("config");
        config.GetProperty("data").GetString().Should().Be(images);
        config.GetProperty("classes").GetInt32().Should().Be(4);
        config.GetProperty("test_images").GetInt32().Should().Be(8, "25% of the 8 images of each of 4 classes");
        var gohspSettings = config.GetProperty("gohsp");
        (gohspSettings.GetProperty("head_graph_weight").GetDouble(), gohspSettings.GetProperty("sparsity_ramp").GetDouble(), gohspSettings.GetProperty("monotone_support").GetBoolean())
            .Should().Be((0.0, 0.3, false), "the GOHSP flags reach the options the run used");
        gohspSettings.GetProperty("head_graph_scoring").GetString().Should().Be("scaled");
        gohspSettings.GetProperty("projection_metric").GetString().Should().Be("euclidean", "the default is fisher; the flag reaches the run");
        gohspSettings.GetProperty("admm_pull").GetString().Should().Be("everywhere", "the default is outside; the flag reaches the run");
        config.GetProperty("test_split").GetString().Should().Be("25% of each class (seed 1)");
        int validation = config.GetProperty("validation_images").GetInt32();
        validation.Should().Be(4, "10% of each class's 6 training images rounds to 1");
        config.GetProperty("train_images").GetInt32().Should().Be(24 - validation);
        var dense = json.RootElement.GetProperty("dense");
        dense.GetProperty("params").GetInt64().Should().Be(VisionTransformer.ViTArchitecture.FromPreset("cifar-micro", 4).ParameterCount, "a 4-class head");
        var gohsp = json.RootElement.GetProperty("entries").EnumerateArray().Should().ContainSingle().Subject;
        gohsp.GetProperty("top1").GetDouble().Should().BeInRange(0, 1);
        gohsp.GetProperty("single_latency_ms").GetDouble().Should().BePositive();
        File.ReadAllText(Path.Combine(outDir, "report.md")).Should().Contain("# 'my images' images pruning run").And.Contain("| gohsp | 50% → ");
        foreach (var f in new[] { "dense.zip", "dense-reference.zip", "gohsp-50.zip", "top1-vs-params.png", "gohsp-50-architecture.png" })
            File.Exists(Path.Combine(outDir, f)).Should().BeTrue(f);
    }

    /// <summary>--sgmp-metric fisher runs SGMP in GOHSP's Fisher metric, and its entries are named apart from the magnitude baseline's.</summary>
    [Fact]
    public void SgmpInTheFisherMetricIsItsOwnEntry()
    {
        using var tmp = new TempDir();
        string outDir = Path.Combine(tmp.Path, "out");
        var (exit, _, stderr) = RunSample("--data", Cifar10Tests.SubsetDir, "--arch", "cifar-micro", "--epochs", "1", "--post-epochs", "2", "--max-train", "320",
            "--max-test", "64", "--sparsity", "0.5", "--method", "sgmp", "--sgmp-metric", "fisher", "--precision", "fp32", "--threads", "1", "--no-speed", "--out", outDir);

        exit.Should().Be(0, stderr);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
        var entry = json.RootElement.GetProperty("entries").EnumerateArray().Should().ContainSingle().Subject;
        entry.GetProperty("method").GetString().Should().Be("sgmp-fisher");
        entry.GetProperty("achieved_sparsity").GetDouble().Should().BeApproximately(0.5, 0.01);
        File.Exists(Path.Combine(outDir, "sgmp-fisher-50.zip")).Should().BeTrue();
    }

    /// <summary>
    /// --dense-from: a run that starts from an earlier run's dense model and dense reference reproduces that run's entries
    /// exactly (what lets a method's settings be tuned without retraining the dense model), records where its dense model
    /// came from and the SGMP settings, and refuses a run that would have trained another dense model. With --distil
    /// every-stage the same start gives another SGMP entry, and the report says so.
    /// </summary>
    [Fact]
    public void ARunFromAStoredDenseModelReproducesTheEntriesOfTheRunThatTrainedIt()
    {
        using var tmp = new TempDir();
        string first = Path.Combine(tmp.Path, "first"), second = Path.Combine(tmp.Path, "second");
        string[] common = ["--data", Cifar10Tests.SubsetDir, "--arch", "cifar-micro", "--epochs", "1", "--post-epochs", "2", "--max-train", "320",
            "--max-test", "64", "--method", "sgmp", "--sparsity", "0.5", "--sgmp-ramp", "0.5", "--no-speed", "--precision", "fp32", "--threads", "1"];
        var (exit1, _, stderr1) = RunSample([.. common, "--out", first]);
        exit1.Should().Be(0, stderr1);
        var (exit2, stdout2, stderr2) = RunSample([.. common, "--dense-from", first, "--out", second]);
        exit2.Should().Be(0, stderr2);
        stdout2.Should().Contain("not retrained").And.NotContain("Dense cifar-micro, 1 epoch on");

        using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(first, "report.json")));
        using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(second, "report.json")));
        b.RootElement.GetProperty("config").GetProperty("dense_from").GetString().Should().Be(Path.GetFullPath(first));
        a.RootElement.GetProperty("config").GetProperty("dense_from").ValueKind.Should().Be(JsonValueKind.Null);
        foreach (var doc in new[] { a, b })
            doc.RootElement.GetProperty("config").GetProperty("sgmp").GetProperty("ramp_fraction").GetDouble().Should().Be(0.5);
        foreach (string key in new[] { "dense_start_top1", "dense_start_validation_nll" })
            b.RootElement.GetProperty("config").GetProperty(key).GetDouble().Should().Be(a.RootElement.GetProperty("config").GetProperty(key).GetDouble(), key);
        JsonElement Entry(JsonDocument d) => d.RootElement.GetProperty("entries").EnumerateArray().Single();
        foreach (string key in new[] { "top1", "nll", "agreement", "achieved_sparsity" })
        {
            b.RootElement.GetProperty("dense").GetProperty(key).GetDouble().Should().Be(a.RootElement.GetProperty("dense").GetProperty(key).GetDouble(), "dense " + key);
            Entry(b).GetProperty(key).GetDouble().Should().Be(Entry(a).GetProperty(key).GetDouble(), "sgmp " + key);
        }

        var (exit3, _, stderr3) = RunSample([.. common.Select(x => x == "2" ? "3" : x), "--dense-from", first, "--out", Path.Combine(tmp.Path, "third")]);
        exit3.Should().NotBe(0);
        stderr3.Should().Contain($"Option '--dense-from': the run in '{first}' trained another dense model (1+2 epochs, this run 1+3).");

        string fourth = Path.Combine(tmp.Path, "fourth");
        var (exit4, _, stderr4) = RunSample([.. common, "--dense-from", first, "--distil", "every-stage", "--out", fourth]);
        exit4.Should().Be(0, stderr4);
        using var c = JsonDocument.Parse(File.ReadAllText(Path.Combine(fourth, "report.json")));
        c.RootElement.GetProperty("config").GetProperty("distil").GetString().Should().Be("every-stage");
        a.RootElement.GetProperty("config").GetProperty("distil").ValueKind.Should().Be(JsonValueKind.Null);
        Entry(c).GetProperty("nll").GetDouble().Should().NotBe(Entry(a).GetProperty("nll").GetDouble(), "SGMP distils from the dense model in its gradual stage and fine-tuning");
        File.ReadAllText(Path.Combine(fourth, "report.md")).Should().Contain("every method distils from the dense model (in every training stage");
    }

    /// <summary>
    /// --teacher with --teacher-weight, --teacher-temperature and --teacher-folds: the teacher is fitted and scores the
    /// training images out of fold, the report records the α, T and folds the ViTs distilled with, and the dense model and
    /// the dense reference carry validation figures (what α and T are chosen on). A second run on the same images reads the
    /// teacher's results from --teacher-cache and trains the same models; a damaged cache file is fitted again and rewritten.
    /// </summary>
    [Fact]
    public void ATeachersWeightAndTemperatureAreRecordedAndDenseModelsHaveValidationFigures()
    {
        using var tmp = new TempDir();
        string outDir = Path.Combine(tmp.Path, "out"), cache = Path.Combine(tmp.Path, "cache");
        string[] args = ["--data", Cifar10Tests.SubsetDir, "--arch", "cifar-micro", "--epochs", "1", "--post-epochs", "1", "--max-train", "200",
            "--max-test", "32", "--method", "somp", "--teacher", "resnet18", "--teacher-weight", "0.9", "--teacher-temperature", "2", "--teacher-folds", "3", "--no-speed",
            "--precision", "fp32", "--threads", "1", "--teacher-cache", cache];
        var (exit, stdout, stderr) = RunSample([.. args, "--out", outDir]);

        exit.Should().Be(0, stderr);
        stdout.Should().Contain("Teacher resnet18: fitting");
        Directory.GetFiles(cache).Should().ContainSingle();
        stdout.Should().Contain("Teacher resnet18: test top-1 ");
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
        var config = json.RootElement.GetProperty("config");
        var teacher = config.GetProperty("teacher");
        teacher.GetProperty("weight").GetDouble().Should().Be(0.9);
        teacher.GetProperty("temperature").GetDouble().Should().Be(2);
        teacher.GetProperty("folds").GetInt32().Should().Be(3);
        teacher.GetProperty("training_scores_top1").GetDouble().Should().BeInRange(0.2, 1, "out-of-fold scores of ResNet18 features beat chance (10%)");
        config.GetProperty("dense_start_validation_top1").GetDouble().Should().BeInRange(0, 1);
        config.GetProperty("dense_start_validation_nll").GetDouble().Should().BePositive();
        var dense = json.RootElement.GetProperty("dense");
        dense.GetProperty("validation_top1").GetDouble().Should().BeInRange(0, 1);
        dense.GetProperty("validation_nll").GetDouble().Should().BePositive();
        File.ReadAllText(Path.Combine(outDir, "report.md")).Should().Contain("α 0.9, T 2, out-of-fold scores from 3 folds").And.Contain("- dense model on the validation split: top-1 ");
        teacher.GetProperty("cached").GetBoolean().Should().BeFalse();

        // the same images again: the teacher's results come from the cache, and the ViTs learn from the same scores
        string again = Path.Combine(tmp.Path, "again");
        var (exit2, stdout2, stderr2) = RunSample([.. args, "--out", again]);
        exit2.Should().Be(0, stderr2);
        stdout2.Should().Contain("read from the cache").And.NotContain("Teacher resnet18: fitting");
        using var json2 = JsonDocument.Parse(File.ReadAllText(Path.Combine(again, "report.json")));
        var teacher2 = json2.RootElement.GetProperty("config").GetProperty("teacher");
        teacher2.GetProperty("cached").GetBoolean().Should().BeTrue();
        foreach (string key in new[] { "top1", "training_scores_top1" })
            teacher2.GetProperty(key).GetDouble().Should().Be(teacher.GetProperty(key).GetDouble(), key);
        foreach (string key in new[] { "top1", "nll" })
            json2.RootElement.GetProperty("dense").GetProperty(key).GetDouble().Should().Be(dense.GetProperty(key).GetDouble(), "dense " + key);

        // a cache file cut short is not read: the teacher is fitted again and the file rewritten whole
        string file = Directory.GetFiles(cache).Single();
        long length = new FileInfo(file).Length;
        using (var fs = new FileStream(file, FileMode.Open)) fs.SetLength(length - 100);
        var (exit3, stdout3, stderr3) = RunSample([.. args, "--out", Path.Combine(tmp.Path, "third")]);
        exit3.Should().Be(0, stderr3);
        stdout3.Should().Contain("Teacher resnet18: fitting").And.NotContain("read from the cache");
        new FileInfo(file).Length.Should().Be(length);
    }

    /// <summary>
    /// --target-latency: every method prunes to a share of the dense model's latency, the controls run beside GOHSP under
    /// their own names, and every pruned entry reports its target and its measured latency; the aggregation pairs GOHSP with
    /// each control at that budget.
    /// </summary>
    [Fact]
    public void ALatencyTargetPrunesEveryMethodToItAndReportsTheMeasuredLatency()
    {
        using var tmp = new TempDir();
        string outDir = Path.Combine(tmp.Path, "out");
        var (exit, stdout, stderr) = RunSample("--data", Cifar10Tests.SubsetDir, "--arch", "cifar-micro", "--epochs", "1", "--post-epochs", "2", "--max-train", "320",
            "--max-test", "64", "--target-latency", "0.6", "--method", "gohsp,somp-taylor,somp-fisher", "--precision", "fp32", "--threads", "1", "--out", outDir);

        exit.Should().Be(0, stderr);
        stdout.Should().Contain("SOMP (Taylor importance) to 60% of the dense latency");
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "report.json")));
        var entries = json.RootElement.GetProperty("entries").EnumerateArray().ToArray();
        entries.Select(e => e.GetProperty("method").GetString()).Should().Equal("gohsp", "somp-taylor", "somp-fisher");
        foreach (var e in entries)
        {
            e.GetProperty("target_latency").GetDouble().Should().Be(0.6);
            e.GetProperty("sparsity").GetDouble().Should().Be(0);
            e.GetProperty("latency_fraction").GetDouble().Should().BeInRange(0.05, 0.99, "a pruned model measured against the dense one");
            e.GetProperty("calibrated_latency_fraction").GetDouble().Should().BeInRange(0.05, 0.99);
            e.GetProperty("achieved_sparsity").GetDouble().Should().BePositive();
        }
        foreach (var f in new[] { "gohsp-lat60.zip", "somp-taylor-lat60.zip", "somp-fisher-lat60.zip", "somp-taylor-lat60-architecture.png" })
            File.Exists(Path.Combine(outDir, f)).Should().BeTrue(f);
        File.ReadAllText(Path.Combine(outDir, "report.md")).Should().Contain("| somp-taylor | latency 60% → ");

        string page = Path.Combine(tmp.Path, "results.md");
        var (exit2, _, stderr2) = RunSample("--aggregate", outDir, "--results-md", page);
        exit2.Should().Be(0, stderr2);
        var lines = File.ReadAllText(page).Split('\n');
        lines.Should().Contain(l => l.StartsWith("| somp-taylor | latency 60% (achieved sparsity "));
        lines.Should().Contain(l => l.StartsWith("| latency 60% | GOHSP − SOMP (Taylor importance) | 1 |"));
        lines.Should().Contain(l => l.StartsWith("| latency 60% | GOHSP − SOMP (Fisher metric) | 1 |"));
        lines.Should().NotContain(l => l.StartsWith("| latency 60% | GOHSP − SOMP |"), "no magnitude SOMP ran");
        lines.Should().NotContain(l => l.StartsWith("Latency timed again"), "no model was timed again yet");

        // --retime: the same zips timed again against dense.zip; the aggregate then puts both figures side by side.
        var (exit3, stdout3, stderr3) = RunSample("--retime", tmp.Path, "--threads", "1");
        exit3.Should().Be(0, stderr3);
        stdout3.Should().Contain("Wrote " + Path.Combine(outDir, "retimed.json"));
        using var retimed = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "retimed.json")));
        retimed.RootElement.GetProperty("rounds").GetInt32().Should().Be(15);
        retimed.RootElement.GetProperty("machine").GetProperty("cpu_model").GetString().Should().NotBeNullOrEmpty();
        var rows = retimed.RootElement.GetProperty("rows").EnumerateArray().ToArray();
        rows.Select(r => r.GetProperty("method").GetString()).Should().Equal("gohsp", "somp-taylor", "somp-fisher");
        for (int i = 0; i < rows.Length; i++)
        {
            rows[i].GetProperty("model").GetString().Should().Be(entries[i].GetProperty("model").GetString());
            rows[i].GetProperty("reported_fraction").GetDouble().Should().Be(entries[i].GetProperty("latency_fraction").GetDouble(), "the report's own figure is carried over");
            rows[i].GetProperty("retimed_fraction").GetDouble().Should().BeInRange(0.05, 0.99, "the pruned model timed against the dense one");
        }
        var (exit4, _, stderr4) = RunSample("--aggregate", outDir, "--results-md", page);
        exit4.Should().Be(0, stderr4);
        lines = File.ReadAllText(page).Split('\n');
        lines.Should().Contain(l => l.StartsWith("Latency timed again (`--retime`)") && l.Contains("15 interleaved rounds of 3 forwards"));
        lines.Should().Contain(l => l.StartsWith("| 0.6 | somp-taylor | 1 | "));
        lines.Should().Contain(l => l.StartsWith("Timed again, ") && l.Contains(" of 3 models are within ±10% of their target"));
    }

    public static TheoryData<string, string[], string> BadInputs => new()
    {
        { "--images missing", ["--images", "{tmp}/nothing"], "Option '--images': folder '{tmp}/nothing' does not exist" },
        { "--images empty", ["--images", "{empty}"], "Option '--images': folder '{empty}' has no class folders" },
        { "--images class without images", ["--images", "{noimages}"], "Option '--images': class folder '{noimages}/dog' has no image files" },
        { "--images undecodable", ["--images", "{undecodable}"], "Option '--images': '{undecodable}/dog/broken.png' holds 11 bytes that do not decode as an image" },
        { "--images and --data", ["--images", "{empty}", "--data", "{empty}"], "Option '--images': give either --data (CIFAR-10) or --images" },
        { "--images train/test classes", ["--images", "{splitmismatch}"], "class folder '{splitmismatch}/test/bird' has no counterpart in '{splitmismatch}/train'" },
        { "--arch 224 for CIFAR", ["--arch", "vit-tiny"], "preset 'vit-tiny' is for 224×224 images; CIFAR-10 is 32×32" },
        { "no CIFAR files", ["--data", "{empty}"], "contains no CIFAR-10 binary batches" },
        { "truncated batch", ["--data", "{truncated}"], "not a multiple of 3073" },
        { "unknown method", ["--method", "magnitude"], "unknown method 'magnitude'. Known: gohsp, sgmp, somp, sgmp-fisher, somp-fisher, somp-taylor, all, controls." },
        { "target latency 1", ["--target-latency", "0.5,1"], "Option '--target-latency': '1' is not a fraction in (0, 1) of the dense model's latency" },
        { "SGMP metric with sgmp-fisher only", ["--method", "sgmp-fisher", "--sgmp-metric", "fisher"], "Option '--sgmp-metric' sets an SGMP option, but --method sgmp-fisher runs no SGMP" },
        { "sparsity 1.5", ["--sparsity", "0.4,1.5"], "'1.5' is not a fraction in (0, 1)" },
        { "sparsity 0", ["--sparsity", "0"], "'0' is not a fraction in (0, 1)" },
        { "head graph weight negative", ["--head-graph-weight", "-1"], "Option '--head-graph-weight': '-1' is not a number in [0, ∞)" },
        { "monotone support yes", ["--monotone-support", "yes"], "Option '--monotone-support': unknown value 'yes'. Known: on, off." },
        { "admm pull inside", ["--admm-pull", "inside"], "Option '--admm-pull': unknown value 'inside'. Known: outside, everywhere." },
        { "sparsity ramp 1", ["--sparsity-ramp", "1"], "Option '--sparsity-ramp': '1' is not a number in [0, 1)" },
        { "head graph scoring unknown", ["--head-graph-scoring", "sorted"], "Option '--head-graph-scoring': unknown value 'sorted'. Known: scaled, rank-within-block." },
        { "projection metric unknown", ["--projection-metric", "mahalanobis"], "Option '--projection-metric': unknown value 'mahalanobis'. Known: euclidean, fisher." },
        { "SGMP metric unknown", ["--method", "sgmp", "--sgmp-metric", "taylor"], "Option '--sgmp-metric': unknown value 'taylor'. Known: euclidean, fisher." },
        { "SGMP metric without SGMP", ["--method", "gohsp", "--sgmp-metric", "fisher"], "Option '--sgmp-metric' sets an SGMP option, but --method gohsp runs no SGMP" },
        { "unknown teacher", ["--teacher", "resnet50"], "Option '--teacher': unknown teacher 'resnet50'. Known: resnet18." },
        { "first stage takes every epoch", ["--method", "gohsp", "--post-epochs", "4", "--first-stage-epochs", "4"], "Option '--first-stage-epochs': 4 leaves none of the 4 post-dense epochs (--post-epochs) for the fine-tuning after the cut; give 1 to 3." },
        { "first stage of no epochs", ["--first-stage-epochs", "0"], "Option '--first-stage-epochs' expects an integer ≥ 1, got '0'." },
        { "first stage without a stage before the cut", ["--method", "somp,somp-fisher", "--post-epochs", "4", "--first-stage-epochs", "3"], "Option '--first-stage-epochs' sets the training stage before the cut, but --method somp,somp-fisher runs no method with one (GOHSP, SGMP)." },
        { "carried moments without a stage before the cut", ["--method", "somp-taylor", "--carry-moments"], "Option '--carry-moments' sets the training stage before the cut, but --method somp-taylor runs no method with one (GOHSP, SGMP)." },
        { "SGMP ramp 0", ["--method", "sgmp", "--sgmp-ramp", "0"], "Option '--sgmp-ramp': '0' is not a fraction in (0, 1]." },
        { "SGMP frequency without SGMP", ["--method", "gohsp,somp", "--sgmp-frequency", "4"], "Option '--sgmp-frequency' sets an SGMP option, but --method gohsp,somp runs no SGMP." },
        { "dense-from missing", ["--dense-from", "{tmp}/nothing"], "Option '--dense-from': folder '{tmp}/nothing' does not exist." },
        { "dense-from two seeds", ["--dense-from", "{empty}", "--seeds", "1,2"], "Option '--dense-from' starts one seed's run from an earlier one; got 2 seeds." },
        { "dense-from without a report", ["--dense-from", "{empty}"], "Option '--dense-from': '{empty}' has no report.json" },
        { "teacher weight without teacher", ["--teacher-weight", "0.9"], "Option '--teacher-weight' sets how the ViT distils from a teacher, but no --teacher is given." },
        { "teacher cache without teacher", ["--teacher-cache", "{tmp}"], "Option '--teacher-cache' sets how the ViT distils from a teacher, but no --teacher is given." },
        { "teacher folds without teacher", ["--teacher-folds", "5"], "Option '--teacher-folds' sets how the ViT distils from a teacher, but no --teacher is given." },
        { "teacher weight 1.5", ["--teacher", "resnet18", "--teacher-weight", "1.5"], "Option '--teacher-weight': '1.5' is not a weight in [0, 1]." },
        { "teacher temperature 0", ["--teacher", "resnet18", "--teacher-temperature", "0"], "Option '--teacher-temperature': '0' is not a positive number." },
        { "distil unknown", ["--distil", "soft"], "Option '--distil': unknown value 'soft'. Known: off, fine-tune, every-stage." },
        { "distil with a teacher", ["--teacher", "resnet18", "--distil", "fine-tune"], "Option '--distil' distils from the dense model, and --teacher gives another teacher: choose one." },
        { "retime missing", ["--retime", "{tmp}/nothing"], "Option '--retime': folder '{tmp}/nothing' does not exist." },
        { "retime without reports", ["--retime", "{empty}"], "Option '--retime': no report.json under '{empty}'." },
        { "retime with aggregate", ["--retime", "{empty}", "--aggregate", "{empty}"], "Option '--retime' times stored models and trains nothing; it does not combine with --aggregate." },
        { "baselines without aggregate", ["--baselines", "{empty}"], "Option '--baselines' applies to --aggregate only" },
        { "GOHSP flag without GOHSP", ["--method", "sgmp,somp", "--monotone-support"], "Option '--monotone-support' sets a GOHSP option, but --method sgmp,somp runs no GOHSP" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void BadInputGivesOneLineErrorAndNonZeroExit(string name, string[] args, string expected)
    {
        using var tmp = new TempDir();
        string empty = Directory.CreateDirectory(Path.Combine(tmp.Path, "empty")).FullName;
        string truncated = Directory.CreateDirectory(Path.Combine(tmp.Path, "truncated")).FullName;
        if (args.Contains("{truncated}"))
        {
            // a copy of the real subset with data_batch_2.bin cut short (1000 bytes missing)
            foreach (var f in Directory.GetFiles(Cifar10Tests.SubsetDir)) File.Copy(f, Path.Combine(truncated, Path.GetFileName(f)));
            using var fs = new FileStream(Path.Combine(truncated, "data_batch_2.bin"), FileMode.Open);
            fs.SetLength(fs.Length - 1000);
        }
        string png = Path.Combine(tmp.Path, "cat.png");
        File.WriteAllBytes(png, EncodedImageInputTests.Png(Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 1).GetImage(0)));
        string Tree(string name, params string[] files)
        {
            foreach (var f in files)
            {
                string path = Path.Combine(tmp.Path, name, f);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                if (f.EndsWith("broken.png")) File.WriteAllText(path, "not a PNG!\n");
                else if (f.EndsWith(".png")) File.Copy(png, path);
                else File.WriteAllText(path, "notes");
            }
            return Path.Combine(tmp.Path, name);
        }
        var places = new Dictionary<string, string>
        {
            ["{empty}"] = empty, ["{truncated}"] = truncated,
            ["{noimages}"] = Tree("noimages", "cat/1.png", "dog/readme.txt"),
            ["{undecodable}"] = Tree("undecodable", "cat/1.png", "cat/2.png", "dog/1.png", "dog/broken.png"),
            ["{splitmismatch}"] = Tree("splitmismatch", "train/cat/1.png", "train/dog/1.png", "test/cat/1.png", "test/bird/1.png"),
            ["{tmp}"] = tmp.Path,
        };
        string Fill(string a) => places.Aggregate(a, (x, p) => x.Replace(p.Key, p.Value));
        expected = Fill(expected);
        string outDir = Path.Combine(tmp.Path, "out");
        var fullArgs = args.Select(Fill)
            .Concat(args.Contains("--data") || args.Contains("--images") ? [] : ["--data", Cifar10Tests.SubsetDir])
            .Concat(args.Contains("--arch") ? [] : ["--arch", "cifar-micro"]).Concat(["--epochs", "1", "--out", outDir]).ToArray();

        var (exit, _, stderr) = RunSample(fullArgs);

        exit.Should().NotBe(0, name);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        lines.Should().ContainSingle(name + " gives exactly one line on stderr").Which.Should().StartWith("error: ").And.Contain(expected);
        stderr.Should().NotContain("   at ", "no stack trace");
        File.Exists(Path.Combine(outDir, "report.json")).Should().BeFalse();
    }
}

public sealed class PredictedClassRow
{
    public float[] Score { get; set; }
    public string PredictedLabel { get; set; }
}
