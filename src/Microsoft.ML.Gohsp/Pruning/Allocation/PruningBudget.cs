using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The budget a pruning run spends, resolved once against the dense architecture from <see cref="PruningOptions"/>: a
/// fraction of the parameters (<see cref="PruningOptions.Sparsity"/>), or a fraction of the latency that a measured table
/// estimates (<see cref="PruningOptions.TargetLatencyMs"/> / <see cref="PruningOptions.TargetLatencyFraction"/> become
/// 1 − target / dense). Every allocation of the run (GOHSP's head choice, ADMM's projections and the cut, SOMP's plan,
/// SGMP's ramp) goes through <see cref="Allocate"/>, so all of them spend the same budget.
/// </summary>
internal sealed class PruningBudget
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
        return new PruningBudget(options.Budget, 1 - targetMs / denseMs, table, dense, targetMs);
    }

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
