using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>One pruning step of <see cref="GradualMagnitudePruning"/>.</summary>
/// <param name="Step">Global optimiser step after which it happened (−1: the final step after training).</param>
/// <param name="TargetSparsity">s_t of the schedule.</param>
/// <param name="AchievedSparsity">Fraction of the parameters (of the estimated latency, with a latency target) the mask removes after this step.</param>
public sealed record SgmpPruningEvent(long Step, double TargetSparsity, double AchievedSparsity);

/// <summary>
/// SGMP's training hook: after the optimiser step of every pruning step of an <see cref="SgmpSchedule"/>, re-ranks the
/// structures that are still kept (heads, q/k dims, v dims, MLP neurons) by the ℓ2 magnitude of the current weights (or in
/// the Fisher metric, whose estimate the hook accumulates after every backward pass) and
/// extends the mask until s_t of the parameters is removed (<see cref="StructuredProjection.Allocate"/> with the previous
/// plan as <c>within</c>: pruned structures never come back). After every optimiser step the mask is re-applied, so the
/// pruned structures stay exactly zero. The plan and the event history are part of training checkpoints.
/// </summary>
public sealed class GradualMagnitudePruning : ITrainingHook, IDisposable
{
    private readonly BudgetOptions _budget;
    private readonly IBlockCost? _cost;
    private readonly List<SgmpPruningEvent> _history = new();
    private StructuredProjection.BlockMasks[]? _masks;
    private readonly ProjectionMetric _metric;
    private FisherImportance? _fisher;
    // the Fisher state of a checkpoint, restored once the model's matrices are known
    private FisherImportance.Saved? _restoredFisher;

    /// <summary>Creates the hook.</summary>
    /// <param name="schedule">When and how far to prune.</param>
    /// <param name="budget">Budget floors and tolerance (default <see cref="BudgetOptions"/>).</param>
    /// <param name="costModel">
    /// What the sparsities count (default parameters); with a latency table (<see cref="LatencyModel.CostOf"/>), every s_t is a
    /// fraction of the estimated latency.
    /// </param>
    /// <param name="metric">The ranking's metric (default <see cref="ProjectionMetric.Euclidean"/>, the magnitude).</param>
    public GradualMagnitudePruning(SgmpSchedule schedule, BudgetOptions? budget = null, IBlockCost? costModel = null,
        ProjectionMetric metric = ProjectionMetric.Euclidean)
    {
        if (!Enum.IsDefined(metric)) throw new ArgumentOutOfRangeException(nameof(metric), metric, "The metric must be Euclidean or Fisher.");
        _metric = metric;
        _cost = costModel;
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        _budget = budget ?? new BudgetOptions();
    }

    /// <summary>The schedule.</summary>
    public SgmpSchedule Schedule { get; }

    /// <inheritdoc />
    /// <remarks>The schedule, the metric, what the budget counts (a latency table by its kind only) and the budget options.</remarks>
    public string Fingerprint =>
        $"GradualMagnitudePruning(metric={_metric} cost={_cost?.GetType().Name ?? "parameters"}) {RunFingerprint.Of(Schedule)} {RunFingerprint.Of(_budget)}";

    /// <summary>What the mask keeps; null until the first pruning step with a positive target.</summary>
    public StructurePlan? Plan { get; private set; }

    /// <summary>Every pruning step so far (including steps that removed nothing new).</summary>
    public IReadOnlyList<SgmpPruningEvent> History => _history;

    /// <inheritdoc />
    public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch)
    {
        if (_metric == ProjectionMetric.Fisher) _fisher ??= new FisherImportance(model);
        if (_restoredFisher is { } restored)
        {
            _restoredFisher = null;
            using (restored) _fisher!.Restore(restored, "SGMP");
        }
        if (Plan is not null) SetMasks(model); // resumed from a checkpoint (or reused): restore the mask on the model's device
    }

    /// <inheritdoc />
    public void AfterBackward(VisionTransformerModel model, long globalStep) => _fisher?.Accumulate();

    /// <inheritdoc />
    public void AfterStep(VisionTransformerModel model, long globalStep)
    {
        if (_masks is not null) StructuredProjection.Apply(model, _masks);
        if (Schedule.IsPruningStep(globalStep)) PruneTo(model, Schedule.SparsityAt(globalStep), globalStep);
    }

    /// <summary>
    /// Raises the mask to <paramref name="sparsity"/> of the parameters (nothing happens when it already removes that
    /// much, or when <paramref name="sparsity"/> ≤ 0): re-ranks the kept structures by magnitude (in the Fisher metric once
    /// it has seen a gradient), extends the plan and zeroes the newly pruned structures in place.
    /// </summary>
    public void PruneTo(VisionTransformerModel model, double sparsity, long step = -1)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (sparsity <= 0) return;
        var arch = model.Architecture;
        var importance = _fisher is null ? StructuredProjection.Magnitude(model) : _fisher.Measure(model);
        Plan = StructuredProjection.Allocate(arch, importance, sparsity, _budget, within: Plan, costModel: _cost);
        SetMasks(model);
        _history.Add(new SgmpPruningEvent(step, sparsity, AchievedSparsity(arch)));
    }

    /// <summary>
    /// Fraction of <paramref name="arch"/>'s parameters (of its estimated latency, with a latency cost model) the current mask
    /// removes (0 before any pruning).
    /// </summary>
    public double AchievedSparsity(ViTArchitecture arch) =>
        Plan is null ? 0 : StructuredProjection.RemovedFraction(arch, Plan.PrunedArchitecture(arch), _cost);

    private void SetMasks(VisionTransformerModel model)
    {
        DisposeMasks();
        _masks = StructuredProjection.Masks(model.Architecture, Plan!, model.parameters().First().device);
        // kept across steps: AfterStep runs inside the training step's dispose scope
        foreach (var m in _masks) { m.QkvRows.DetachFromDisposeScope(); m.ProjCols.DetachFromDisposeScope(); m.Mlp.DetachFromDisposeScope(); }
        StructuredProjection.Apply(model, _masks);
    }

    /// <inheritdoc />
    public void OnEpochEnd(VisionTransformerModel model, int epoch, IDictionary<string, double> extra) =>
        extra["sparsity"] = AchievedSparsity(model.Architecture);

    /// <inheritdoc />
    public void SaveState(BinaryWriter writer)
    {
        writer.Write(Plan is not null);
        Plan?.Write(writer);
        writer.Write(_history.Count);
        foreach (var e in _history) { writer.Write(e.Step); writer.Write(e.TargetSparsity); writer.Write(e.AchievedSparsity); }
        // the Euclidean metric's state is what it always was; the Fisher metric's adds its estimate
        if (_metric == ProjectionMetric.Fisher) FisherImportance.Write(writer, _fisher);
    }

    /// <inheritdoc />
    public void LoadState(BinaryReader reader)
    {
        // read into locals first: a checkpoint that fails part-way leaves the hook as it was
        var plan = reader.ReadBoolean() ? StructurePlan.Read(reader) : null;
        int n = reader.ReadInt32();
        if (n < 0) throw new InvalidDataException($"Corrupted SGMP state (history length {n}).");
        var history = new SgmpPruningEvent[n];
        for (int i = 0; i < n; i++) history[i] = new SgmpPruningEvent(reader.ReadInt64(), reader.ReadDouble(), reader.ReadDouble());
        var fisher = _metric == ProjectionMetric.Fisher ? FisherImportance.Read(reader, "SGMP") : null;
        _restoredFisher?.Dispose();
        _restoredFisher = fisher;
        DisposeMasks();
        Plan = plan;
        _history.Clear();
        _history.AddRange(history);
    }

    private void DisposeMasks()
    {
        if (_masks is null) return;
        foreach (var m in _masks) m.Dispose();
        _masks = null;
    }

    /// <summary>Releases the mask tensors and the Fisher estimate.</summary>
    public void Dispose()
    {
        DisposeMasks();
        _fisher?.Dispose();
        _fisher = null;
        _restoredFisher?.Dispose();
        _restoredFisher = null;
    }
}
