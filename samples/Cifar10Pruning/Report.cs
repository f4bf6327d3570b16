using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Gohsp;
using Spectre.Console;

namespace Cifar10Pruning;

/// <summary>Shape of one transformer block of a (pruned) model.</summary>
internal sealed record BlockShape(int Heads, int QkDim, int VDim, int MlpWidth, int DenseHeads, int DenseQkDim, int DenseVDim, int DenseMlpWidth);

/// <summary>One model of the comparison: the dense reference or one (method, sparsity) pruned model.</summary>
internal sealed record ModelEntry
{
    /// <summary>"dense" or a <see cref="MethodVariant"/>'s name: "gohsp", "sgmp", "somp", "sgmp-fisher", "somp-fisher", "somp-taylor".</summary>
    public required string Method { get; init; }
    /// <summary>Requested fraction of parameters removed (0 for dense and for a latency target).</summary>
    public required double Sparsity { get; init; }
    /// <summary>With <c>--target-latency</c>: the requested batch latency as a fraction of the dense model's; null for a parameter budget.</summary>
    public double? TargetLatency { get; init; }
    /// <summary>
    /// This model's batch latency over the dense model's (the one every method starts from), timed interleaved on random
    /// images, batches of 64, median of the rounds' ratios (<see cref="Speed.LatencyFraction"/>); null for dense or with
    /// <c>--no-speed</c>.
    /// </summary>
    public double? LatencyFraction { get; init; }
    /// <summary>With a latency target: the share of the dense time the run's calibration timed for its plan before training.</summary>
    public double? CalibratedLatencyFraction { get; init; }
    /// <summary>Achieved fraction of parameters removed (0 for dense).</summary>
    public required double AchievedSparsity { get; init; }
    public required long Params { get; init; }
    /// <summary>Forward FLOPs per image, every block over every token.</summary>
    public required long Flops { get; init; }
    /// <summary>
    /// FLOPs per image the inference forward executes (<see cref="Microsoft.ML.Gohsp.VisionTransformer.ViTArchitecture.ExecutedForwardFlops"/>):
    /// the last block computes the class token alone, so its parameters cost about 1/tokens of another block's. The
    /// figure speed-ups are compared with.
    /// </summary>
    public long? ExecutedFlops { get; init; }
    /// <summary>Top-1 accuracy on the test split, 0–1 (ML.NET Evaluate of the reloaded zip).</summary>
    public required double Top1 { get; init; }
    /// <summary>Raw-model batch inference over the test split: ViTModelParameters.PredictProbabilities, batches of 64.</summary>
    public required double BatchImagesPerS { get; init; }
    /// <summary>Median latency of one PredictionEngine.Predict call on one MLImage (after warm-up).</summary>
    public required double SingleLatencyMs { get; init; }
    /// <summary>Median latency of a raw TorchSharp forward of the same model on one prepared [1, 3, 32, 32] tensor.</summary>
    public required double RawForwardLatencyMs { get; init; }
    /// <summary>Images/s of ML.NET Transform + Evaluate over the test split (reloaded zip, batches of 64: UseBatchScoring).</summary>
    public required double MlnetTransformImagesPerS { get; init; }
    public required int Seed { get; init; }
    /// <summary>Epochs this model was trained after the common dense model (the fair-protocol budget) and how they were used.</summary>
    public required int PostDenseEpochs { get; init; }
    public required string EpochSplit { get; init; }
    /// <summary>Wall-clock seconds of this model's training/pruning after the dense model.</summary>
    public required double TrainSeconds { get; init; }
    /// <summary>The saved ML.NET model zip (file name in the output folder).</summary>
    public required string Model { get; init; }
    public required IReadOnlyList<BlockShape> Blocks { get; init; }
    /// <summary>
    /// Top-1 of the raw batched model over the test split, computed with the NLL and KL (the same as <see cref="Top1"/>,
    /// ML.NET's Evaluate, up to ties): a check that the fidelity metrics read the right labels.
    /// </summary>
    public double? RawTop1 { get; init; }
    /// <summary>Test NLL: mean −ln p(label) of the reloaded model over the test split.</summary>
    public double? Nll { get; init; }
    /// <summary>Fraction of test images on which this model predicts the same class as the dense model every method starts from.</summary>
    public double? Agreement { get; init; }
    /// <summary>Mean KL(dense ‖ this model) of the class distributions over the test split (nats).</summary>
    public double? KlFromDense { get; init; }
    /// <summary>Validation top-1 right before the hard cut minus right after it, before fine-tuning (points × 0.01; null for dense).</summary>
    public double? CutShockTop1 { get; init; }
    /// <summary>Validation NLL right after the hard cut minus right before it.</summary>
    public double? CutShockNll { get; init; }
    /// <summary>Validation top-1 right after the hard cut, before fine-tuning.</summary>
    public double? HardPrunedValidationTop1 { get; init; }
    /// <summary>Validation NLL right after the hard cut, before fine-tuning.</summary>
    public double? HardPrunedValidationNll { get; init; }
    /// <summary>Validation top-1 of the finished model.</summary>
    public double? ValidationTop1 { get; init; }
    /// <summary>Validation NLL of the finished model.</summary>
    public double? ValidationNll { get; init; }
    /// <summary>GOHSP: primal residual at the end of soft pruning over its start.</summary>
    public double? ResidualRatio { get; init; }
    /// <summary>GOHSP: overlap of the cut plan (support of ADMM's final Z) with a fresh projection of W.</summary>
    public double? CutPlanOverlap { get; init; }

    [JsonIgnore] public double SingleOverRaw => SingleLatencyMs / RawForwardLatencyMs;
}

/// <summary>How a run was made (everything needed to reproduce it).</summary>
internal sealed record RunConfig
{
    public required string Command { get; init; }
    /// <summary>The CIFAR-10 folder or archive (<c>--data</c>), or the image folder (<c>--images</c>).</summary>
    public required string Data { get; init; }
    /// <summary>Number of classes (absent in reports written before it was recorded: CIFAR-10's 10).</summary>
    public int Classes { get; init; } = 10;
    /// <summary>Where the test images come from: CIFAR-10's test batch, <c>DIR/test</c>, or a seeded fraction of each class of <c>DIR</c>.</summary>
    public string? TestSplit { get; init; }
    public required string Arch { get; init; }
    public required int TrainImages { get; init; }
    public required int TestImages { get; init; }
    public required int DenseEpochs { get; init; }
    public required int PostEpochs { get; init; }
    public required string Precision { get; init; }
    public required int Threads { get; init; }
    public required int Seed { get; init; }
    /// <summary>Top-1 of the dense model every method starts from (after <see cref="DenseEpochs"/>; the reference has E + P).</summary>
    public required double DenseStartTop1 { get; init; }
    /// <summary>Validation top-1 of the dense model every method starts from (absent without a validation split).</summary>
    public double? DenseStartValidationTop1 { get; init; }
    /// <summary>Validation NLL of the dense model every method starts from (absent without a validation split).</summary>
    public double? DenseStartValidationNll { get; init; }
    public required double DenseSeconds { get; init; }
    public required string Date { get; init; }
    public required string Machine { get; init; }
    /// <summary>CPU model, cores, ISA flags and torch threads of the machine that measured the speed columns.</summary>
    public Microsoft.ML.Gohsp.Diagnostics.MachineInfo? MachineInfo { get; init; }
    /// <summary>
    /// How the speed columns were measured (<see cref="SampleReport.SpeedNotes"/> of the build that ran). Absent in reports
    /// written before it was recorded, whose batch rate was the median of 3 passes without a forced GC.
    /// </summary>
    public string? SpeedMethod { get; init; }
    /// <summary>Images of the validation split held out of the training images (0: none).</summary>
    public int ValidationImages { get; init; }
    /// <summary>The fraction held out.</summary>
    public double ValidationFraction { get; init; }
    /// <summary>The seed of the split.</summary>
    public int? ValidationSeed { get; init; }
    /// <summary>SHA-256 of the held-out indices (comma-separated, ascending), so two reports can be checked for the same split.</summary>
    public string? ValidationIndicesSha256 { get; init; }
    /// <summary>
    /// With <c>--aggregate --baselines</c>: the command of the stored run whose other methods this run is paired with (set
    /// when aggregating, never written by a run).
    /// </summary>
    [JsonIgnore]
    public string? BaselineCommand { get; init; }
    /// <summary>The teacher every ViT of the run distilled from (<c>--teacher</c>): name, its own test top-1, fit and scoring seconds; absent without one.</summary>
    public TeacherSummary? Teacher { get; init; }
    /// <summary>The GOHSP settings the run's GOHSP entries used (absent when no GOHSP ran, and in older reports).</summary>
    public GohspSettings? Gohsp { get; init; }
    /// <summary>The SGMP settings the run's SGMP entries (both metrics) used (absent when no SGMP ran, and in older reports).</summary>
    public SgmpSettings? Sgmp { get; init; }
    /// <summary>The earlier run whose dense model and dense reference this run started from (<c>--dense-from</c>); absent when it trained them.</summary>
    public string? DenseFrom { get; init; }
    /// <summary>Where every pruning method distilled from the dense model (<c>--distil</c>: fine-tune or every-stage); absent when none did.</summary>
    public string? Distil { get; init; }

    /// <summary>"CIFAR-10", or the image folder's name.</summary>
    [JsonIgnore]
    public string Title => TestSplit is null || TestSplit == Cifar10TestSplit ? "CIFAR-10" : $"'{Path.GetFileName(Data.TrimEnd('/', '\\'))}' images";

    /// <summary><see cref="TestSplit"/> of a CIFAR-10 run.</summary>
    public const string Cifar10TestSplit = "the CIFAR-10 test batch";

    /// <summary>The speed notes that describe this run's columns.</summary>
    [JsonIgnore]
    public string SpeedColumns => SpeedMethod ?? SampleReport.LegacySpeedNotes;
}

/// <summary>The GOHSP options that the sample's flags can change, as the run used them.</summary>
/// <remarks>
/// <see cref="ProjectionMetric"/> is null in reports written before the option existed, whose runs used the Euclidean metric;
/// <see cref="AdmmPull"/> is null in reports written before it existed, whose runs pulled outside the support only.
/// </remarks>
internal sealed record GohspSettings(double HeadGraphWeight, string HeadGraphScoring, double SparsityRamp, bool MonotoneSupport, string? ProjectionMetric = null,
    string? AdmmPull = null)
{
    public static GohspSettings Of(Microsoft.ML.Gohsp.Pruning.GohspOptions o) =>
        new(o.HeadGraphWeight, SampleOptions.NameOf(SampleOptions.HeadGraphScoringNames, o.HeadGraphScoring),
            o.Admm.SparsityRampFraction, o.Admm.MonotoneSupport, SampleOptions.NameOf(SampleOptions.ProjectionMetricNames, o.Admm.Metric),
            SampleOptions.NameOf(SampleOptions.AdmmPullNames, o.Admm.PullOutsideSupportOnly));

    /// <summary>The projection metric's name; "euclidean" for reports written before the option existed.</summary>
    [JsonIgnore]
    public string Metric => ProjectionMetric ?? "euclidean";

    /// <summary>Where ADMM's proximal term pulls; "outside" for reports written before the option existed.</summary>
    [JsonIgnore]
    public string Pull => AdmmPull ?? "outside";
}

/// <summary>The SGMP options that the sample's flags can change (the metric is in each entry's name), as the run used them.</summary>
internal sealed record SgmpSettings(double RampFraction, int PruningFrequency)
{
    public static SgmpSettings Of(Microsoft.ML.Gohsp.Pruning.SgmpOptions o) => new(o.RampFraction, o.PruningFrequency);
}

/// <summary>report.json: <c>{"config": {...}, "dense": {...}, "entries": [{...}, ...]}</c>.</summary>
internal sealed record SampleReport
{
    public required RunConfig Config { get; init; }
    public required ModelEntry Dense { get; init; }
    public required IReadOnlyList<ModelEntry> Entries { get; init; }

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public const string SpeedNotes = BatchNotes + "median of 5 passes, each after a full GC. " + LatencyNotes;

    private const string BatchNotes =
        "batch_images_per_s: the raw model (ViTModelParameters.PredictProbabilities, batches of 64, incl. normalisation and softmax) " +
        "over the test split, ";

    private const string LatencyNotes =
        "single_latency_ms: median of 100 PredictionEngine.Predict calls, each on one MLImage " +
        "(ExtractPixels + ViT + MapKeyToValue) of the reloaded zip, after 10 warm-up calls. raw_forward_latency_ms: median of 100 raw " +
        "TorchSharp forwards (no_grad) of the same model on one already-normalised [1, 3, 32, 32] tensor, timed interleaved with " +
        "the PredictionEngine calls, same threads. mlnet_transform_images_per_s: ML.NET Transform + Evaluate over the test split " +
        "(reloaded zip with UseBatchScoring: batches of 64 rows per forward).";

    /// <summary>What <see cref="SpeedNotes"/> said before <see cref="RunConfig.SpeedMethod"/> was recorded.</summary>
    public const string LegacySpeedNotes = BatchNotes + "median of 3 passes after one warm-up batch (no forced GC). " + LatencyNotes;

    public void WriteJson(string path) => Text.WriteAtomically(path, JsonSerializer.Serialize(this, Json));

    public static SampleReport ReadJson(string path) =>
        JsonSerializer.Deserialize<SampleReport>(File.ReadAllText(path), Json) ?? throw new InvalidDataException($"'{path}' is not a sample report.");

    public IEnumerable<ModelEntry> All => Entries.Prepend(Dense);

    public void WriteMarkdown(string path, IEnumerable<string> plots)
    {
        var c = Config;
        var sb = new StringBuilder();
        sb.AppendLine(Text.Invariant($"# {c.Title} pruning run (seed {c.Seed})"));
        sb.AppendLine();
        sb.AppendLine(Text.Invariant($"`{c.Command}` — {c.Date}, {c.Machine}"));
        sb.AppendLine();
        sb.AppendLine(Text.Invariant($"- data: `{c.Data}` ({c.Classes} classes; {c.TrainImages:N0} training / {c.TestImages:N0} test images, test split: {c.TestSplit ?? "the test batch"}), arch `{c.Arch}`, {c.Precision} training, {Text.Count(c.Threads, "thread")}"));
        sb.AppendLine(Text.Invariant($"- fair protocol: one dense model trained {Text.Count(c.DenseEpochs, "epoch")} ({c.DenseSeconds:F0} s, top-1 {c.DenseStartTop1:P2}); every method prunes it and trains {Text.Count(c.PostEpochs, "epoch")} after it; the dense reference is the same model trained {Text.Count(c.PostEpochs, "more epoch")} ({c.DenseEpochs + c.PostEpochs} in all)"));
        if (c.Teacher is { } teacher)
            sb.AppendLine(Text.Invariant($"- teacher `{teacher.Name}` (every ViT below distils from its scores of the training images, α {teacher.Weight}, T {teacher.Temperature}, {(teacher.Folds == 1 ? "in-sample scores" : $"out-of-fold scores from {teacher.Folds} folds")}): test top-1 {teacher.Top1:P2}, fit {teacher.FitSeconds:F0} s, scoring {teacher.ScoreSeconds:F0} s"));
        if (c.Distil is { } distil)
            sb.AppendLine(Text.Invariant($"- every method distils from the dense model ({(SampleOptions.DistilNames.GetValueOrDefault(distil) == DenseDistillation.EveryStage ? "in every training stage" : "in fine-tuning")}, the library's α and T)"));
        if (c.DenseStartValidationTop1 is double vTop1)
            sb.AppendLine(Text.Invariant($"- dense model on the validation split: top-1 {vTop1:P2}, NLL {c.DenseStartValidationNll:F4}"));
        sb.AppendLine();
        sb.AppendLine(MarkdownTable(All));
        sb.AppendLine();
        sb.AppendLine("Epochs after the dense model (train s = wall-clock seconds of these epochs; equal epochs are not equal compute): " +
            string.Join("; ", All.Select(e => $"{Label(e)}: {e.EpochSplit}")) + ".");
        sb.AppendLine();
        sb.AppendLine("Speed columns: " + Config.SpeedColumns);
        sb.AppendLine();
        foreach (var p in plots) sb.AppendLine($"![{Path.GetFileNameWithoutExtension(p)}]({Path.GetFileName(p)})");
        Text.WriteAtomically(path, sb.ToString());
    }

    public static string MarkdownTable(IEnumerable<ModelEntry> entries)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| method | budget (requested → achieved sparsity) | params | MFLOPs/image | latency / dense (target) | top-1 | NLL | agreement | KL(dense‖·) | cut shock (val top-1, pts) | batch img/s | PredictionEngine ms | raw forward ms | engine / raw | train s |");
        sb.AppendLine("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        foreach (var e in entries)
            sb.AppendLine(Text.Invariant($"| {e.Method} | {SparsityText(e)} | {e.Params:N0} | {e.Flops / 1e6:F1} | {LatencyText(e)} | {e.Top1:P2} | {Opt(e.Nll, "F4")} | {Opt(e.Agreement * 100, "F1")} | {Opt(e.KlFromDense, "F4")} | {Opt(e.CutShockTop1 * 100, "F2")} | {e.BatchImagesPerS:F0} | {e.SingleLatencyMs:F3} | {e.RawForwardLatencyMs:F3} | {e.SingleOverRaw:F3} | {e.TrainSeconds:F0} |"));
        return sb.ToString().TrimEnd();
    }

    /// <summary>The final table on the console (a Spectre table when interactive, the markdown table otherwise).</summary>
    public void Print(ConsoleUi ui)
    {
        if (Config.Teacher is { } teacher)
            ui.Line(Text.Invariant($"Teacher {teacher.Name}: test top-1 {teacher.Top1:P2} (the students' top-1 is in the table)."));
        if (!ui.Interactive)
        {
            ui.Line(MarkdownTable(All));
            return;
        }
        var t = new Table().RoundedBorder().Title($"{Config.Title}, {Config.Arch}, seed {Config.Seed}");
        foreach (var h in new[] { "method", "sparsity", "params", "MFLOPs", "top-1", "batch img/s", "engine ms", "raw ms", "engine/raw", "train s" })
            t.AddColumn(new TableColumn(h) { Alignment = h is "method" or "sparsity" ? Justify.Left : Justify.Right });
        foreach (var e in All)
            t.AddRow(Text.Invariant($"{e.Method}"), SparsityText(e), Text.Invariant($"{e.Params:N0}"), Text.Invariant($"{e.Flops / 1e6:F1}"), Text.Invariant($"{e.Top1:P2}"),
                Text.Invariant($"{e.BatchImagesPerS:F0}"), Text.Invariant($"{e.SingleLatencyMs:F3}"), Text.Invariant($"{e.RawForwardLatencyMs:F3}"), Text.Invariant($"{e.SingleOverRaw:F3}"), Text.Invariant($"{e.TrainSeconds:F0}"));
        AnsiConsole.Write(t);
    }

    /// <summary>A value or "—" when it was not measured.</summary>
    public static string Opt(double? v, string format) => v is double x && double.IsFinite(x) ? x.ToString(format, Text.Culture) : "—";

    public static string Label(ModelEntry e) => e.Method == "dense" ? "dense" : $"{e.Method} {PruningBudgetSpec.Of(e).Short}";

    private static string SparsityText(ModelEntry e) => e.Method == "dense" ? "—"
        : e.TargetLatency is null ? Text.Invariant($"{e.Sparsity:P0} → {e.AchievedSparsity:P1}") : Text.Invariant($"latency {e.TargetLatency:P0} → {e.AchievedSparsity:P1}");

    /// <summary>The measured latency over the dense model's, with the target when there is one.</summary>
    public static string LatencyText(ModelEntry e) => e.Method == "dense" ? "1" : Opt(e.LatencyFraction, "F3") + (e.TargetLatency is double t ? Text.Invariant($" ({t:F2})") : "");

}

/// <summary>Formatting and file helpers shared by the reports.</summary>
internal static class Text
{
    /// <summary>The invariant culture with percentages written "40%" rather than "40 %".</summary>
    public static readonly CultureInfo Culture = CreateCulture();

    /// <summary>Culture-invariant formatting (reports read the same on every machine).</summary>
    public static string Invariant(FormattableString s) => s.ToString(Culture);

    /// <summary>"1 epoch", "2 epochs".</summary>
    public static string Count(long n, string noun) => Invariant($"{n:N0} {noun}{(n == 1 ? "" : "s")}");

    private static CultureInfo CreateCulture()
    {
        var c = (CultureInfo)CultureInfo.InvariantCulture.Clone();
        c.NumberFormat.PercentPositivePattern = 1;
        c.NumberFormat.PercentNegativePattern = 1;
        return CultureInfo.ReadOnly(c);
    }

    /// <summary>Text files are written like the models: to a temporary file, then renamed into place.</summary>
    public static void WriteAtomically(string path, string text) => AtomicFile.Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));
}
