using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The budget a pruning run spends, resolved once against the dense architecture from <see cref="PruningOptions"/>: a
/// fraction of the parameters (<see cref="PruningOptions.Sparsity"/>), or a fraction of the latency that a measured table
/// estimates (<see cref="PruningOptions.TargetLatencyMs"/> / <see cref="PruningOptions.TargetLatencyFraction"/> become
/// 1 − target / dense; with <see cref="PruningOptions.LatencyCalibrationIterations"/> above 0, the share that timing the
/// planned model on this machine calibrated: <c>Resolve(options, model, previous)</c>).
/// Every allocation of the run (GOHSP's head choice, ADMM's projections and the cut, SOMP's plan,
/// SGMP's ramp) goes through <see cref="Allocate"/>, so all of them spend the same budget. A method gets its run's budget
/// from <see cref="PruningRun.Budget"/>: <see cref="PruningRun.Start"/> resolves it, and calibrates a latency target, before
/// any training.
/// </summary>
public sealed class PruningBudget
{
    private readonly BudgetOptions _options;

    private PruningBudget(BudgetOptions options, double fraction, LatencyModel? latency, ViTArchitecture dense, double? targetMs)
    {
        _options = options;
        Fraction = fraction;
        Latency = latency;
        Cost = latency?.CostOf(dense);
        TargetMs = targetMs;
        DenseMs = latency?.ModelMs(dense);
    }

    private PruningBudget(PruningBudget table, double fraction, LatencyCalibrationSummary? calibration, string? calibrationNote)
    {
        _options = table._options;
        Fraction = fraction;
        Latency = table.Latency;
        Cost = table.Cost;
        TargetMs = table.TargetMs;
        DenseMs = table.DenseMs;
        Calibration = calibration;
        CalibrationNote = calibrationNote;
    }

    /// <summary>Fraction of the budget's cost to remove: of the parameters, or of the estimated latency.</summary>
    public double Fraction { get; }
    /// <summary>The latency table a latency target is spent against; null for a parameter budget.</summary>
    public LatencyModel? Latency { get; }
    /// <summary>What the allocator counts: the latency table's cost, or null for parameters.</summary>
    public IBlockCost? Cost { get; }
    /// <summary>The target in ms per forward of <see cref="LatencyModel.Batch"/> images (latency budgets only).</summary>
    public double? TargetMs { get; }
    /// <summary>The table's estimate of the dense model (latency budgets only).</summary>
    public double? DenseMs { get; }
    /// <summary>
    /// The timing calibration that <see cref="Fraction"/> comes from (<see cref="PruningOptions.LatencyCalibrationIterations"/>),
    /// measured by this run or carried from the previous stage's report; null when the run spends the table's estimate alone.
    /// </summary>
    public LatencyCalibrationSummary? Calibration { get; }
    /// <summary>The log line about the calibration; null when there is nothing to say (a parameter budget, or no calibration asked for).</summary>
    public string? CalibrationNote { get; }

    /// <summary>A run's calibration stops when a timed plan is within this share of the target (<see cref="LatencyBudget.Calibrate"/>'s default).</summary>
    internal const double CalibrationTolerance = 0.03;
    /// <summary>Interleaved rounds per timed plan (<see cref="LatencyBudget.Calibrate"/>'s default).</summary>
    internal const int CalibrationRounds = 5;

    /// <summary>
    /// Resolves <paramref name="options"/> (validated) for <paramref name="dense"/>: a latency target reads the given table
    /// or measures (and caches) one on this machine, and is checked against the dense model's estimate and the floors.
    /// </summary>
    /// <exception cref="ArgumentException">The target is not below the dense model's latency, or below what the floors allow (names the option).</exception>
    public static PruningBudget Resolve(PruningOptions options, ViTArchitecture dense)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(dense);
        if (!options.HasLatencyTarget) return new PruningBudget(options.Budget, options.Sparsity, null, dense, null);
        string option = options.TargetLatencyMs is null ? nameof(PruningOptions.TargetLatencyFraction) : nameof(PruningOptions.TargetLatencyMs);
        var table = options.LatencyTable;
        int maxHeads = dense.Blocks.Max(b => b.Heads);
        if (table is not null && table.AttentionMs.Length < maxHeads)
            throw new ArgumentException($"LatencyTable covers blocks of up to {table.AttentionMs.Length} heads; the model has {maxHeads}. Measure it for this model (LatencyModel.Measure).",
                nameof(PruningOptions.LatencyTable));
        table ??= LatencyModel.LoadOrMeasure(dense, options.LatencyBatchSize);
        double denseMs = table.ModelMs(dense);
        double targetMs = options.TargetLatencyMs ?? options.TargetLatencyFraction!.Value * denseMs;
        if (!(targetMs < denseMs))
            throw new ArgumentOutOfRangeException(option, options.TargetLatencyMs ?? options.TargetLatencyFraction,
                $"{option} asks for {targetMs:F2} ms per batch of {table.Batch}; the dense model already takes {denseMs:F2} ms by the latency table of {table.Device}. The target must be below it.");
        // the smallest model the floors allow (every block at its floors; the parts outside the blocks are never pruned)
        var b = options.Budget;
        var floor = dense.WithBlocks(dense.Blocks.Select(s => new ViTBlockSpec(Math.Clamp(b.MinHeads, 1, s.Heads),
            Math.Clamp(b.MinHeadDim, 1, s.QkDim), Math.Clamp(b.MinHeadDim, 1, s.VDim), Math.Clamp(b.MinMlpWidth, 1, s.MlpHidden))));
        double floorMs = table.ModelMs(floor);
        if (targetMs < floorMs - b.Tolerance * denseMs / 2)
            throw new ArgumentOutOfRangeException(option, options.TargetLatencyMs ?? options.TargetLatencyFraction,
                $"{option} asks for {targetMs:F2} ms per batch of {table.Batch}; the smallest model the Budget floors allow (≥{b.MinHeads} head(s), " +
                $"≥{b.MinHeadDim} dim(s) per head, ≥{b.MinMlpWidth} MLP neuron(s) per block, with the embeddings and head never pruned) takes {floorMs:F2} ms " +
                $"of the dense model's {denseMs:F2} ms by the latency table of {table.Device}.");
        // a fraction target is spent as 1 − fraction exactly, so that a calibrated run's TableLatencyFraction passed back gives the same budget
        double fraction = 1 - (options.TargetLatencyMs is null ? options.TargetLatencyFraction!.Value : targetMs / denseMs);
        return new PruningBudget(options.Budget, fraction, table, dense, targetMs);
    }

    /// <summary>
    /// The budget a run spends (<see cref="PruningRun.Start"/>): <see cref="Resolve(PruningOptions, ViTArchitecture)"/> for
    /// <paramref name="model"/>'s architecture and, for a latency target with
    /// <see cref="PruningOptions.LatencyCalibrationIterations"/> above 0, calibrated by timing on this machine
    /// (<see cref="LatencyBudget.Calibrate"/> with <paramref name="importance"/>, by default the magnitude importance of
    /// <paramref name="model"/>'s weights): the run then removes the calibrated share of the table's latency. A later stage whose <paramref name="previous"/> report has
    /// the same target on the same table spends that report's budget (its calibration, or the table's estimate) and times
    /// nothing. A table measured on another machine or thread count is spent as it is: timing here would not say how that
    /// machine runs the plan.
    /// </summary>
    /// <param name="options">The run's options (validated).</param>
    /// <param name="model">The model the run starts from: the dense model, or the output of an earlier stage.</param>
    /// <param name="previous">The earlier stage's report of a staged run; null for a run that starts from the dense model.</param>
    /// <param name="timer">
    /// Times a pruned architecture against the dense one at a batch size and returns (pruned / dense, dense ms); null uses
    /// <see cref="LatencyCalibration.TimeAgainstDense"/>. Tests pass a deterministic one.
    /// </param>
    /// <param name="importance">
    /// The importance the method allocates its plan by, when it knows it before any training (a one-shot method): the
    /// calibration then times the plans the method itself would make. Null plans by the magnitude of the weights (a
    /// gradual method's final importance exists only after its training).
    /// </param>
    internal static PruningBudget Resolve(PruningOptions options, VisionTransformerModel model, PruningReport? previous,
        Func<ViTArchitecture, ViTArchitecture, int, (double Ratio, double DenseMs)>? timer = null, IReadOnlyList<BlockImportance>? importance = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var arch = model.Architecture;
        var budget = Resolve(options, arch);
        if (budget.Latency is not { } table) return budget;
        if (previous is { TargetLatencyMs: double previousTarget } && previousTarget == budget.TargetMs && previous.LatencyDevice == table.Device)
        {
            return previous.LatencyCalibration is { } carried
                ? new PruningBudget(budget, 1 - carried.TableLatencyFraction, carried,
                    $"latency calibration of the {previous.Stage} stage reused (no timing): {Summarize(carried)}")
                : budget;
        }
        int iterations = options.LatencyCalibrationIterations;
        if (iterations == 0) return budget;
        string here = MachineInfo.Probe().ToString();
        if (table.Device != here)
            return new PruningBudget(budget, budget.Fraction, null,
                $"latency calibration skipped: the latency table was measured on {table.Device}, not on this machine and thread count ({here}); the run spends the table's estimate");
        string option = options.TargetLatencyMs is null ? nameof(PruningOptions.TargetLatencyFraction) : nameof(PruningOptions.TargetLatencyMs);
        timer ??= (dense, pruned, batch) => LatencyCalibration.TimeAgainstDense(dense, pruned, batch, CalibrationRounds);
        LatencyCalibration calibration;
        try
        {
            calibration = LatencyBudget.CalibrateWith(arch, importance ?? MagnitudeImportance.Measure(model), table, options.TargetLatencyMs, options.TargetLatencyFraction,
                options.Budget, iterations, CalibrationTolerance, pruned => timer(arch, pruned, table.Batch));
        }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == "targetRatioOfDenseMs")
        {
            throw new ArgumentOutOfRangeException(option, options.TargetLatencyMs ?? options.TargetLatencyFraction,
                $"{option} asks for {e.ActualValue:P1} of the dense model's time as the latency calibration measured it on this machine now " +
                "(LatencyCalibrationIterations); it must be below 100%. Set a lower target, or LatencyCalibrationIterations = 0 to spend the table's estimate alone.");
        }
        var summary = calibration.Summary();
        return new PruningBudget(budget, 1 - summary.TableLatencyFraction, summary, $"latency calibration: {Summarize(summary)}");
    }

    private static string Summarize(LatencyCalibrationSummary c) =>
        $"the table's plan timed at {c.TableOnlyRatio:P1} of the dense model's {c.DenseMs:F2} ms (target {c.TargetRatio:P1}); " +
        $"after {c.Iterations} plan(s) {c.MeasuredRatio:P1}; the run spends {c.TableLatencyFraction:P2} of the table's estimate " +
        $"(TargetLatencyFraction = {c.TableLatencyFraction:R} with LatencyCalibrationIterations = 0 and the same table gives this budget without timing)";

    /// <summary>
    /// <see cref="StructuredProjection.Allocate"/> with this budget's cost, removing <paramref name="fraction"/> of it
    /// (default <see cref="Fraction"/>; a ramp passes less).
    /// </summary>
    public StructurePlan Allocate(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, double? fraction = null,
        IReadOnlyList<IReadOnlyList<int>>? fixedHeads = null, StructurePlan? within = null) =>
        StructuredProjection.Allocate(arch, importance, fraction ?? Fraction, _options, fixedHeads, within, Cost);

    /// <summary>The table's estimate of <paramref name="arch"/> (latency budgets only).</summary>
    public double? EstimateMs(ViTArchitecture arch) => Latency?.ModelMs(arch);

    /// <summary>One log line that says what the run spends.</summary>
    public string Describe() => Latency is null
        ? $"budget: {Fraction:P1} of the parameters"
        : $"latency budget: {TargetMs:F2} ms per batch of {Latency.Batch} = {TargetMs / DenseMs:P1} of the dense model's estimated {DenseMs:F2} ms " +
          $"({Latency.Device}): {Fraction:P1} of the latency is removed";
}
