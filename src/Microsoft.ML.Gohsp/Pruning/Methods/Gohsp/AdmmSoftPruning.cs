using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// GOHSP stage 2 as a <see cref="ITrainingHook"/>: trains the model on the task loss plus ρ/2·Σ‖W − Z + U‖² over every
/// prunable matrix, so that the weights converge to the structured-sparse set before the hard cut. The penalty is applied
/// as a decoupled proximal step after each optimiser step (or as a gradient, <see cref="AdmmOptions.Penalty"/>). Every
/// <see cref="AdmmOptions.UpdateEverySteps"/> steps: Z ← Π_s(W + U) (the structured projection at the current target
/// sparsity s of the progressive ramp, with the fixed heads), U ← (U + W − Z)·ρ/ρ′ with ρ′ = min(ρ·growth, ρ_max) (the scaled
/// dual follows ρ), ρ ← ρ′. The primal
/// residual ‖W − Z‖ is recorded per epoch and compared with its start, ‖W₀ − Π(W₀)‖ at the full target.
/// Z, U and the Fisher estimate are three model-sized sets of tensors: dispose the hook when the stage is over.
/// </summary>
public sealed class AdmmSoftPruning : ITrainingHook, IDisposable
{
    private readonly AdmmOptions _o;
    private readonly double _sparsity;
    private readonly BudgetOptions _budget;
    private readonly IReadOnlyList<IReadOnlyList<int>>? _heads;
    private readonly Func<VisionTransformerModel, Func<TorchSharp.Modules.Parameter, Tensor>, BlockImportance[]> _importance;
    private readonly int _epochs;
    private readonly IBlockCost? _cost;
    private readonly List<(Parameter W, Tensor Z, Tensor U)> _vars = new();
    // per matrix: 1 outside the current support of Z, 0 on it (a broadcastable row or column vector)
    private readonly List<Tensor> _outside = new();
    // the Fisher metric's estimate (null with the Euclidean metric)
    private FisherImportance? _fisher;
    private int _updateEvery;
    private long _rampSteps, _totalSteps;
    private double _rho, _growth;

    /// <summary>Creates the hook.</summary>
    /// <param name="sparsity">Fraction of total parameters to remove.</param>
    /// <param name="keptHeads">Kept heads per block (stage 1), fixed in every projection; null lets the projection choose heads by magnitude.</param>
    /// <param name="options">ADMM options.</param>
    /// <param name="budget">Budget floors and tolerance.</param>
    /// <param name="epochs">Epochs of the stage (needed for the sparsity ramp and the automatic ρ growth); 0 = unknown: no ramp, ρ grows by 1.5 per update.</param>
    /// <param name="importance">Structure importance for the projection, given the tensor to measure per parameter; default <see cref="StructuredProjection.Magnitude"/>.</param>
    /// <param name="costModel">
    /// What the projection's budget counts (default parameters); with a latency table (<see cref="LatencyModel.CostOf"/>),
    /// <paramref name="sparsity"/> is the fraction of the estimated latency removed, and the ramp, every Z and the final plan
    /// follow it.
    /// </param>
    public AdmmSoftPruning(double sparsity, IReadOnlyList<IReadOnlyList<int>>? keptHeads, AdmmOptions options, BudgetOptions? budget = null, int epochs = 0,
        Func<VisionTransformerModel, Func<TorchSharp.Modules.Parameter, Tensor>, BlockImportance[]>? importance = null, IBlockCost? costModel = null)
    {
        _cost = costModel;
        _o = options ?? throw new ArgumentNullException(nameof(options));
        _o.Validate();
        if (!(sparsity > 0 && sparsity < 1)) throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, "Sparsity must be in (0, 1).");
        if (epochs < 0) throw new ArgumentOutOfRangeException(nameof(epochs), epochs, "Epochs must be ≥ 0.");
        _sparsity = sparsity;
        _heads = keptHeads;
        _budget = budget ?? new BudgetOptions();
        _epochs = epochs;
        _importance = importance ?? ((m, f) => StructuredProjection.Magnitude(m, f));
        _rho = _o.Rho;
    }

    /// <inheritdoc />
    /// <remarks>
    /// The target, the stage's epochs, the fixed heads, what the budget counts, and every ADMM and budget option. A latency
    /// table enters by its kind only: its timings are re-measured by every run.
    /// </remarks>
    public string Fingerprint =>
        $"AdmmSoftPruning(sparsity={RunFingerprint.Value(_sparsity)} epochs={_epochs} heads="
        + (_heads is null ? "magnitude" : string.Join(";", _heads.Select(h => string.Join(",", h))))
        + $" cost={_cost?.GetType().Name ?? "parameters"}) {RunFingerprint.Of(_o)} {RunFingerprint.Of(_budget)}";

    /// <summary>Primal residual ‖W − Z‖ (over all prunable matrices) after every epoch.</summary>
    public List<double> ResidualHistory { get; } = new();

    /// <summary>‖W₀ − Π(W₀)‖ at the full target sparsity, when the stage started (NaN before).</summary>
    public double ResidualStart { get; private set; } = double.NaN;

    /// <summary>The latest residual over <see cref="ResidualStart"/> (NaN before the first epoch).</summary>
    public double ResidualRatio => ResidualHistory.Count == 0 ? double.NaN : ResidualHistory[^1] / ResidualStart;

    /// <summary>The structure plan of the latest Z: its support is what the hard cut keeps.</summary>
    public StructurePlan? Plan { get; private set; }

    /// <summary>Current ρ.</summary>
    public double Rho => _rho;

    /// <summary>Target sparsity of the projection after <paramref name="step"/> optimiser steps (the progressive ramp).</summary>
    public double TargetSparsityAt(long step)
    {
        if (_rampSteps <= 0 || step >= _rampSteps) return _sparsity;
        double f = 1 - (double)step / _rampSteps;
        return Math.Max(Math.Min(_sparsity, 0.01), _sparsity * (1 - f * f * f));
    }

    /// <inheritdoc />
    public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _updateEvery = _o.UpdateEverySteps > 0 ? _o.UpdateEverySteps : stepsPerEpoch;
        _totalSteps = (long)_epochs * stepsPerEpoch;
        _rampSteps = (long)Math.Floor(_o.SparsityRampFraction * _totalSteps);
        // the automatic ρ growth reaches RhoMax at RhoRampFraction of the stage, or at the last update of the ramp (or of
        // the stage, without a ramp)
        long rhoSteps = (long)Math.Floor(_o.RhoRampFraction * _totalSteps);
        long growUntil = rhoSteps > 0 ? rhoSteps : _rampSteps > 0 ? _rampSteps : _totalSteps;
        // (a ramp shorter than one update interval reaches RhoMax at the first update)
        long updates = Math.Max(1, growUntil / _updateEvery);
        _growth = _o.RhoGrowth > 0 ? _o.RhoGrowth
            : _totalSteps > 0 ? Math.Pow(_o.RhoMax / _o.Rho, 1.0 / updates) : 1.5;
        if (_vars.Count == 0)
        {
            using var _ = no_grad();
            foreach (var p in StructuredProjection.Prunable(model))
                _vars.Add((p, zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope()));
            if (_o.Metric == ProjectionMetric.Fisher) _fisher = new FisherImportance(model);
            if (_restored is null)
            {
                UpdateZ(model, _sparsity);
                ResidualStart = PrimalResidual();
                UpdateZ(model, TargetSparsityAt(0));
            }
        }
        if (_restored is { } restored)
        {
            // a checkpoint was loaded before training started (the loop restores hook state first): Z and U come from it
            _restored = null;
            if (restored.Count != _vars.Count)
                throw new InvalidDataException($"The checkpoint has ADMM state for {restored.Count} matrices; the model has {_vars.Count}.");
            using var _ = no_grad();
            for (int i = 0; i < _vars.Count; i++)
                using (var z = restored[i].Z)
                using (var u = restored[i].U)
                {
                    if (!z.shape.SequenceEqual(_vars[i].Z.shape) || !u.shape.SequenceEqual(_vars[i].U.shape))
                        throw new InvalidDataException($"The checkpoint's ADMM state for matrix {i} has shape [{string.Join(", ", z.shape)}]; the model's is [{string.Join(", ", _vars[i].Z.shape)}].");
                    _vars[i].Z.copy_(z);
                    _vars[i].U.copy_(u);
                }
            using (var fisher = _restoredFisher!)   // LoadState sets it with Z and U
            {
                _restoredFisher = null;
                if (_fisher is not null) _fisher.Restore(fisher, "ADMM");
                else if (fisher.F.Count != 0)
                    throw new InvalidDataException($"The checkpoint has Fisher state for {fisher.F.Count} matrices; this run's metric ({_o.Metric}) keeps none.");
            }
            Plan = _restoredPlan;
            _planSparsity = _restoredPlanSparsity;
            if (Plan is not null) SetSupport(model, Plan);
        }
    }

    /// <summary>
    /// The support of ADMM's final Z at the full target sparsity: <see cref="Plan"/> when the last update was already at the
    /// full target (the ramp ended before it), else one more Z/U-free projection of W + U at the full target.
    /// </summary>
    public StructurePlan FinalPlan(VisionTransformerModel model)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_vars.Count == 0) throw new InvalidOperationException("Soft pruning has not started.");
        if (Plan is null || _planSparsity < _sparsity) UpdateZ(model, _sparsity);
        return Plan!;
    }

    private double _planSparsity;

    private void UpdateZ(VisionTransformerModel model, double sparsity)
    {
        // a monotone support: while the ramp's target grows, the new support lies inside the previous one
        var within = _o.MonotoneSupport && Plan is not null && sparsity >= _planSparsity ? Plan : null;
        _planSparsity = sparsity;
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var uOf = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (w, _, u) in _vars) uOf[w] = u;
        var imp = Importance(model, p => p.add(uOf[p], Scalars.One));
        Plan = StructuredProjection.Allocate(model.Architecture, imp, sparsity, _budget, _heads, within, _cost);
        SetSupport(model, Plan);
        for (int i = 0; i < _vars.Count; i++)
        {
            var (w, z, u) = _vars[i];
            using var keep = ones_like(_outside[i]).sub_(_outside[i]);
            z.copy_(w.add(u, Scalars.One).mul_(keep));
        }
    }

    /// <summary>
    /// The importance of every structure of <paramref name="model"/> in the projection's metric
    /// (<see cref="AdmmOptions.Metric"/>), measured on the tensors <paramref name="weightOf"/> gives (W + U for Z, W for a
    /// fresh plan).
    /// </summary>
    public BlockImportance[] Importance(VisionTransformerModel model, Func<Parameter, Tensor> weightOf) =>
        _fisher is null ? _importance(model, weightOf) : _fisher.Measure(model, weightOf, _importance);

    private void SetSupport(VisionTransformerModel model, StructurePlan plan)
    {
        using var _ = no_grad();
        foreach (var t in _outside) t.Dispose();
        _outside.Clear();
        var masks = StructuredProjection.Masks(model.Architecture, plan, model.parameters().First().device);
        try
        {
            foreach (var (_, mask) in StructuredProjection.PrunableWithMasks(model, masks))
                _outside.Add(ones_like(mask).sub_(mask).DetachFromDisposeScope());
        }
        finally { foreach (var m in masks) m.Dispose(); }
    }

    /// <inheritdoc />
    public void AfterBackward(VisionTransformerModel model, long globalStep)
    {
        _fisher?.Accumulate();
        if (_o.Penalty != AdmmPenalty.Gradient) return;
        using var _ = no_grad();
        using var rho = _rho.ToScalar();
        foreach (var (w, z, u) in _vars)
        {
            if (w.grad is null) continue;
            using var d = w.sub(z).add_(u, Scalars.One);
            w.grad.add_(d, alpha: rho);
        }
    }

    /// <inheritdoc />
    public void AfterStep(VisionTransformerModel model, long globalStep, double learningRate)
    {
        if (_o.Penalty == AdmmPenalty.Decoupled && learningRate > 0)
        {
            // exact proximal map of (ρ/2)‖W − (Z − U)‖² with step η: W ← (W + ηρ(Z − U)) / (1 + ηρ)
            double c = learningRate * _rho / (1 + learningRate * _rho);
            using var _ = no_grad();
            using var alpha = (-c).ToScalar();   // held across the native calls (an implicit Scalar can be finalized mid-call)
            for (int i = 0; i < _vars.Count; i++)
            {
                var (w, z, u) = _vars[i];
                // outside the support Z is 0, so W − Z + U = W + U there
                using var d = _o.PullOutsideSupportOnly ? w.add(u, Scalars.One).mul_(_outside[i]) : w.sub(z).add_(u, Scalars.One);
                w.add_(d, alpha: alpha);
            }
        }
        AfterStep(model, globalStep);
    }

    /// <inheritdoc />
    public void AfterStep(VisionTransformerModel model, long globalStep)
    {
        if ((globalStep + 1) % _updateEvery != 0) return;
        UpdateZ(model, TargetSparsityAt(globalStep + 1));
        double next = Math.Min(_rho * _growth, _o.RhoMax);
        using var _ = no_grad();
        // U is the scaled dual λ/ρ: when ρ changes, U is rescaled by ρ_old/ρ_new (Boyd et al., ADMM §3.4.1), or the pull
        // toward Z − U would overshoot zero by the accumulated dual
        using var rescale = (_rho / next).ToScalar();
        foreach (var (w, z, u) in _vars) u.add_(w, Scalars.One).sub_(z).mul_(rescale);
        _rho = next;
    }

    /// <summary>‖W − Z‖ over all prunable matrices.</summary>
    public double PrimalResidual()
    {
        using var _ = no_grad();
        double s = 0;
        for (int i = 0; i < _vars.Count; i++)
        {
            var (w, z, _) = _vars[i];
            // with the pull outside the support only, Z tracks W on its support: the residual is W outside it
            using var d = Tracking ? (w * _outside[i]).square().sum() : (w - z).square().sum();
            s += d.ToDouble();
        }
        return Math.Sqrt(s);
    }

    private bool Tracking => _o.Penalty == AdmmPenalty.Decoupled && _o.PullOutsideSupportOnly;

    /// <inheritdoc />
    public void OnEpochEnd(VisionTransformerModel model, int epoch, IDictionary<string, double> extra)
    {
        double r = PrimalResidual();
        ResidualHistory.Add(r);
        extra["primal_residual"] = r;
        extra["residual_ratio"] = r / ResidualStart;
        extra["rho"] = _rho;
    }

    /// <inheritdoc />
    public void SaveState(BinaryWriter writer)
    {
        writer.Write(_rho);
        writer.Write(_vars.Count);
        foreach (var (_, z, u) in _vars) { z.Save(writer); u.Save(writer); }
        writer.Write(ResidualHistory.Count);
        foreach (var r in ResidualHistory) writer.Write(r);
        writer.Write(ResidualStart);
        writer.Write(Plan is not null);
        Plan?.Write(writer);
        writer.Write(_planSparsity);
        FisherImportance.Write(writer, _fisher);
    }

    /// <inheritdoc />
    public void LoadState(BinaryReader reader)
    {
        if (_vars.Count > 0) throw new InvalidOperationException("ADMM state must be loaded before training starts.");
        // everything is read into locals first: a checkpoint that fails part-way leaves the hook as it was
        var restored = new List<(Tensor Z, Tensor U)>();
        FisherImportance.Saved? fisher = null;
        try
        {
            double rho = reader.ReadDouble();
            int n = reader.ReadInt32();
            if (n < 0) throw new InvalidDataException($"Corrupted ADMM state ({n} matrices).");
            for (int i = 0; i < n; i++) restored.Add((Tensor.Load(reader).DetachFromDisposeScope(), Tensor.Load(reader).DetachFromDisposeScope()));
            int h = reader.ReadInt32();
            if (h < 0) throw new InvalidDataException($"Corrupted ADMM state (residual history length {h}).");
            var history = new double[h];
            for (int i = 0; i < h; i++) history[i] = reader.ReadDouble();
            double start = reader.ReadDouble();
            var plan = reader.ReadBoolean() ? StructurePlan.Read(reader) : null;
            double planSparsity = reader.ReadDouble();
            fisher = FisherImportance.Read(reader, "ADMM");

            _rho = rho;
            ResidualHistory.Clear();
            ResidualHistory.AddRange(history);
            ResidualStart = start;
            _restoredPlan = plan;
            _restoredPlanSparsity = planSparsity;
            foreach (var (z, u) in _restored ?? []) { z.Dispose(); u.Dispose(); }
            _restoredFisher?.Dispose();
            _restored = restored;
            _restoredFisher = fisher;
        }
        catch
        {
            foreach (var (z, u) in restored) { z.Dispose(); u.Dispose(); }
            fisher?.Dispose();
            throw;
        }
    }

    private bool _disposed;

    /// <summary>Releases Z, U, the support masks and the Fisher estimate (and a checkpoint's state not yet applied).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var (_, z, u) in _vars) { z.Dispose(); u.Dispose(); }
        _vars.Clear();
        foreach (var t in _outside) t.Dispose();
        _outside.Clear();
        _fisher?.Dispose();
        _fisher = null;
        foreach (var (z, u) in _restored ?? []) { z.Dispose(); u.Dispose(); }
        _restored = null;
        _restoredFisher?.Dispose();
        _restoredFisher = null;
    }

    // Z, U and the plan read from a checkpoint, applied by OnTrainingStart once the model's matrices are known.
    private List<(Tensor Z, Tensor U)>? _restored;
    private FisherImportance.Saved? _restoredFisher;
    private StructurePlan? _restoredPlan;
    private double _restoredPlanSparsity;
}
