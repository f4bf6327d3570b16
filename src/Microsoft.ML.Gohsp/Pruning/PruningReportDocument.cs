using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The JSON form of a <see cref="PruningReport"/>, as the model zip stores it (<c>ViTModelParameters.PruningReportJson</c>):
/// one flat object with the field names and order of every earlier version, so that zips written before and after the
/// report had its <see cref="PruningReport.Details"/> read the same. GOHSP's details are fields of it (each block's
/// stationary probabilities in the block's line); the read-only figures (achieved sparsity, cut shock, residual ratio) are
/// written for readers of the JSON and computed again on reading.
/// </summary>
internal sealed class PruningReportDocument
{
    public required string Method { get; init; }
    public string Stage { get; init; } = PruningReport.FinalStage;
    public required double? RequestedSparsity { get; init; }
    public double? TargetLatencyMs { get; init; }
    public int? LatencyBatchSize { get; init; }
    public double? DenseLatencyMs { get; init; }
    public double? EstimatedLatencyMs { get; init; }
    public string? LatencyDevice { get; init; }
    public LatencyCalibrationSummary? LatencyCalibration { get; init; }
    public double AchievedSparsity { get; init; }
    public required long ParametersBefore { get; init; }
    public required long ParametersAfter { get; init; }
    public required long FlopsBefore { get; init; }
    public required long FlopsAfter { get; init; }
    public required BlockDocument[] Blocks { get; init; }
    public double[]? ResidualHistory { get; init; }
    public IReadOnlyDictionary<string, double>? ValidationAccuracy { get; init; }
    public IReadOnlyDictionary<string, double>? ValidationNll { get; init; }
    public string? PreCutStage { get; init; }
    public double? CutShockTop1 { get; init; }
    public double? CutShockNll { get; init; }
    public double? ResidualStart { get; init; }
    public double? ResidualRatio { get; init; }
    public StructurePlan? CutPlan { get; init; }
    public double? CutPlanOverlap { get; init; }

    /// <summary>A block's line: <see cref="BlockReport"/> with GOHSP's stationary probabilities of its kept heads.</summary>
    internal sealed record BlockDocument(int Block, int[] KeptHeads, double[]? StationaryProbabilities, int QkDim, int VDim, int MlpWidth,
        int DenseHeads, int DenseQkDim, int DenseVDim, int DenseMlpWidth);

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    public static string Write(PruningReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var gohsp = report.Details as GohspDetails;
        double[] Stationary(int block) => gohsp is not null && block < gohsp.StationaryProbabilities.Count ? gohsp.StationaryProbabilities[block] : [];
        var document = new PruningReportDocument
        {
            Method = report.Method,
            Stage = report.Stage,
            RequestedSparsity = report.RequestedSparsity,
            TargetLatencyMs = report.TargetLatencyMs,
            LatencyBatchSize = report.LatencyBatchSize,
            DenseLatencyMs = report.DenseLatencyMs,
            EstimatedLatencyMs = report.EstimatedLatencyMs,
            LatencyDevice = report.LatencyDevice,
            LatencyCalibration = report.LatencyCalibration,
            AchievedSparsity = report.AchievedSparsity,
            ParametersBefore = report.ParametersBefore,
            ParametersAfter = report.ParametersAfter,
            FlopsBefore = report.FlopsBefore,
            FlopsAfter = report.FlopsAfter,
            Blocks = report.Blocks.Select((b, i) => new BlockDocument(b.Block, b.KeptHeads, Stationary(i), b.QkDim, b.VDim, b.MlpWidth,
                b.DenseHeads, b.DenseQkDim, b.DenseVDim, b.DenseMlpWidth)).ToArray(),
            ResidualHistory = gohsp?.ResidualHistory.ToArray() ?? [],
            ValidationAccuracy = report.ValidationAccuracy,
            ValidationNll = report.ValidationNll,
            PreCutStage = report.PreCutStage,
            CutShockTop1 = report.CutShockTop1,
            CutShockNll = report.CutShockNll,
            ResidualStart = gohsp?.ResidualStart,
            ResidualRatio = gohsp?.ResidualRatio,
            CutPlan = gohsp?.CutPlan,
            CutPlanOverlap = gohsp?.CutPlanOverlap,
        };
        return JsonSerializer.Serialize(document, Json);
    }

    public static PruningReport Read(string json)
    {
        PruningReportDocument document;
        try
        {
            document = JsonSerializer.Deserialize<PruningReportDocument>(json, Json) ?? throw new InvalidDataException("The pruning report is empty.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException("The pruning report is not valid JSON of a PruningReport: " + e.Message, e);
        }
        var blocks = document.Blocks ?? throw new InvalidDataException("The pruning report has no blocks.");
        return new PruningReport
        {
            Method = document.Method,
            Stage = document.Stage,
            RequestedSparsity = document.RequestedSparsity,
            TargetLatencyMs = document.TargetLatencyMs,
            LatencyBatchSize = document.LatencyBatchSize,
            DenseLatencyMs = document.DenseLatencyMs,
            EstimatedLatencyMs = document.EstimatedLatencyMs,
            LatencyDevice = document.LatencyDevice,
            LatencyCalibration = document.LatencyCalibration,
            ParametersBefore = document.ParametersBefore,
            ParametersAfter = document.ParametersAfter,
            FlopsBefore = document.FlopsBefore,
            FlopsAfter = document.FlopsAfter,
            Blocks = blocks.Select(b => new BlockReport(b.Block, b.KeptHeads, b.QkDim, b.VDim, b.MlpWidth,
                b.DenseHeads, b.DenseQkDim, b.DenseVDim, b.DenseMlpWidth)).ToArray(),
            ValidationAccuracy = document.ValidationAccuracy ?? new Dictionary<string, double>(),
            ValidationNll = document.ValidationNll ?? new Dictionary<string, double>(),
            PreCutStage = document.PreCutStage,
            // the fields of GOHSP's details are GOHSP's: another method's report leaves them empty
            Details = document.Method != GohspPruner.MethodName ? null : new GohspDetails
            {
                StationaryProbabilities = blocks.Select(b => b.StationaryProbabilities ?? []).ToArray(),
                ResidualHistory = document.ResidualHistory ?? [],
                ResidualStart = document.ResidualStart,
                CutPlan = document.CutPlan,
                CutPlanOverlap = document.CutPlanOverlap,
            },
        };
    }
}
