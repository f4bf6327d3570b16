using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Per-block line of a <see cref="PruningReport"/>.</summary>
/// <param name="Block">Block index.</param>
/// <param name="KeptHeads">Kept head indices (of the dense block).</param>
/// <param name="QkDim">Kept q/k dimensions per head.</param>
/// <param name="VDim">Kept v dimensions per head.</param>
/// <param name="MlpWidth">Kept MLP neurons.</param>
/// <param name="DenseHeads">Heads of the dense block.</param>
/// <param name="DenseQkDim">q/k dimension per head of the dense block.</param>
/// <param name="DenseVDim">v dimension per head of the dense block.</param>
/// <param name="DenseMlpWidth">MLP width of the dense block.</param>
public sealed record BlockReport(int Block, int[] KeptHeads, int QkDim, int VDim, int MlpWidth,
    int DenseHeads, int DenseQkDim, int DenseVDim, int DenseMlpWidth);

/// <summary>
/// What only one method reports, beside the figures every method shares (<see cref="PruningReport.Details"/>):
/// <see cref="GohspDetails"/> for GOHSP.
/// </summary>
public abstract record PruningDetails
{
    private protected PruningDetails() { }
}

/// <summary>
/// What a pruning run did: per-block shapes, sizes and FLOPs before/after, the budget, accuracies per stage — the figures
/// every method shares — and the method's own figures (<see cref="Details"/>).
/// </summary>
public sealed record PruningReport
{
    /// <summary>Stage of a finished run: the model is physically pruned and fine-tuned.</summary>
    public const string FinalStage = "fine-tuned";

    /// <summary>Method name ("gohsp", "somp", "sgmp").</summary>
    public required string Method { get; init; }
    /// <summary>
    /// How far the run went: <see cref="FinalStage"/> ("fine-tuned") for a finished run; a staged GOHSP run also reports
    /// <see cref="GohspPruner.HeadMaskedStage"/> and <see cref="GohspPruner.SoftPrunedStage"/>, whose model still has the
    /// dense shape (parameters before = after) and whose <see cref="Blocks"/> say what the final model will keep.
    /// </summary>
    public string Stage { get; init; } = FinalStage;
    /// <summary>Requested fraction of parameters removed; null when the budget was a latency target (<see cref="TargetLatencyMs"/>).</summary>
    public required double? RequestedSparsity { get; init; }
    /// <summary>
    /// The latency target in ms per forward of <see cref="LatencyBatchSize"/> images (<see cref="PruningOptions.TargetLatencyMs"/>,
    /// or <see cref="PruningOptions.TargetLatencyFraction"/> × <see cref="DenseLatencyMs"/>); null for a parameter budget.
    /// </summary>
    public double? TargetLatencyMs { get; init; }
    /// <summary>Images per forward of the latency figures; null for a parameter budget.</summary>
    public int? LatencyBatchSize { get; init; }
    /// <summary>The latency table's estimate of the dense model, ms per forward of <see cref="LatencyBatchSize"/> images; null for a parameter budget.</summary>
    public double? DenseLatencyMs { get; init; }
    /// <summary>
    /// The latency table's estimate of the model <see cref="Blocks"/> describe (for an intermediate stage, of the model the
    /// cut will give), ms per forward of <see cref="LatencyBatchSize"/> images; null for a parameter budget. Timing the
    /// pruned model on the machine the table was measured on gives its actual latency. With a
    /// <see cref="LatencyCalibration"/> the estimate differs from the target by what the timing corrected.
    /// </summary>
    public double? EstimatedLatencyMs { get; init; }
    /// <summary>The machine the latency table was measured on (<see cref="LatencyModel.Device"/>); null for a parameter budget.</summary>
    public string? LatencyDevice { get; init; }
    /// <summary>
    /// The timing calibration the latency budget was spent with (<see cref="PruningOptions.LatencyCalibrationIterations"/>):
    /// the share of the table's estimate spent, the timed shares of the calibrated and the table's own plan, and the plans
    /// timed; a later stage of a staged run carries its earlier stage's. Null for a parameter budget and for a latency
    /// budget spent against the table alone. Its <see cref="LatencyCalibrationSummary.TableLatencyFraction"/>, passed back
    /// as <see cref="PruningOptions.TargetLatencyFraction"/> with <see cref="PruningOptions.LatencyCalibrationIterations"/> = 0
    /// and the same <see cref="PruningOptions.LatencyTable"/>, gives exactly the same budget without timing.
    /// </summary>
    public LatencyCalibrationSummary? LatencyCalibration { get; init; }
    /// <summary>Achieved fraction of parameters removed.</summary>
    public double AchievedSparsity => 1.0 - (double)ParametersAfter / ParametersBefore;
    /// <summary>Parameters of the dense model.</summary>
    public required long ParametersBefore { get; init; }
    /// <summary>Parameters of the pruned model.</summary>
    public required long ParametersAfter { get; init; }
    /// <summary>Forward FLOPs per image of the dense model.</summary>
    public required long FlopsBefore { get; init; }
    /// <summary>Forward FLOPs per image of the pruned model.</summary>
    public required long FlopsAfter { get; init; }
    /// <summary>Per-block details.</summary>
    public required IReadOnlyList<BlockReport> Blocks { get; init; }
    /// <summary>
    /// Validation accuracy after each stage (when a validation set was given): "dense", then GOHSP "head-masked",
    /// "soft-pruned"; SGMP "gradually-pruned"; then every method "hard-pruned", "fine-tuned".
    /// </summary>
    public IReadOnlyDictionary<string, double> ValidationAccuracy { get; init; } = new Dictionary<string, double>();
    /// <summary>Validation NLL (mean cross-entropy) after each stage, the same stages as <see cref="ValidationAccuracy"/>.</summary>
    public IReadOnlyDictionary<string, double> ValidationNll { get; init; } = new Dictionary<string, double>();
    /// <summary>
    /// The stage measured right before the hard cut ("dense" for SOMP, "soft-pruned" for GOHSP, "gradually-pruned" for
    /// SGMP); null when there is none.
    /// </summary>
    public string? PreCutStage { get; init; }
    /// <summary>
    /// The cut shock in validation top-1: accuracy right before the hard cut minus accuracy right after it, before any
    /// fine-tuning (positive = the cut lost accuracy). Null without a validation set or before the cut.
    /// </summary>
    public double? CutShockTop1 => Shock(ValidationAccuracy, -1);
    /// <summary>The cut shock in validation NLL: NLL right after the hard cut minus NLL right before it (positive = worse).</summary>
    public double? CutShockNll => Shock(ValidationNll, +1);
    /// <summary>
    /// What only this run's method reports: <see cref="GohspDetails"/> for GOHSP (head ranking, ADMM residuals, the cut);
    /// null for SOMP and SGMP, which report the shared figures alone.
    /// </summary>
    public PruningDetails? Details { get; init; }

    private double? Shock(IReadOnlyDictionary<string, double> values, int sign) =>
        PreCutStage is not null && values.TryGetValue(PreCutStage, out var before) && values.TryGetValue(HardPrunedStage, out var after)
            ? sign * (after - before) : null;

    /// <summary>Stage right after the hard cut, before fine-tuning.</summary>
    public const string HardPrunedStage = "hard-pruned";

    /// <summary>
    /// The report as indented JSON, as the model zip stores it: one flat object whose field names are those of every
    /// earlier version (GOHSP's details among the shared fields, each block's stationary probabilities in its line).
    /// </summary>
    public string ToJson() => PruningReportDocument.Write(this);

    /// <summary>Reads a report written by <see cref="ToJson"/> (by this or an earlier version).</summary>
    /// <exception cref="InvalidDataException">The text is not a pruning report.</exception>
    public static PruningReport FromJson(string json) => PruningReportDocument.Read(json);
}

/// <summary>The result of a pruning run (<see cref="GohspPruner.Run"/>, <see cref="SompPruner.Run"/>, <see cref="SgmpPruner.Run"/>).</summary>
/// <param name="Model">The physically pruned, fine-tuned model (float32, evaluation mode).</param>
/// <param name="Report">What happened.</param>
public sealed record PruningResult(VisionTransformerModel Model, PruningReport Report);
