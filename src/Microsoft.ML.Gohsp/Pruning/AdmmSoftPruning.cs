using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Options of GOHSP stage 2 (ADMM-style soft structured pruning).</summary>
public sealed class AdmmOptions
{
    /// <summary>Initial penalty ρ₀ of ρ/2·Σ‖W − Z + U‖². Default 0.01.</summary>
    public double Rho { get; set; } = 0.01;
    /// <summary>Factor applied to ρ after every Z/U update. Default 1.5.</summary>
    public double RhoGrowth { get; set; } = 1.5;
    /// <summary>Largest ρ. Default 10.</summary>
    public double RhoMax { get; set; } = 10;
    /// <summary>Optimiser steps between Z/U updates; 0 = once per epoch. Default 0.</summary>
    public int UpdateEverySteps { get; set; }

    internal void Validate()
    {
        if (!(Rho > 0)) throw new ArgumentOutOfRangeException(nameof(Rho), Rho, "Rho must be positive.");
        if (!(RhoGrowth >= 1)) throw new ArgumentOutOfRangeException(nameof(RhoGrowth), RhoGrowth, "RhoGrowth must be ≥ 1.");
        if (!(RhoMax >= Rho)) throw new ArgumentOutOfRangeException(nameof(RhoMax), RhoMax, "RhoMax must be ≥ Rho.");
        if (UpdateEverySteps < 0) throw new ArgumentOutOfRangeException(nameof(UpdateEverySteps), UpdateEverySteps, "UpdateEverySteps must be ≥ 0.");
    }
}

/// <summary>
/// GOHSP stage 2 as a <see cref="ITrainingHook"/>: trains the (head-masked) model on the task loss plus
/// ρ/2·Σ‖W − Z + U‖² over every prunable matrix. The penalty's gradient ρ(W − Z + U) is added after backward; every
/// <see cref="AdmmOptions.UpdateEverySteps"/> steps Z ← Π(W + U) (the structured projection with the stage-1 heads
/// fixed), U ← U + W − Z and ρ ← min(ρ·growth, ρ_max). The primal residual ‖W − Z‖ is logged per epoch.
/// </summary>
public sealed class AdmmSoftPruning : ITrainingHook
{
    private readonly AdmmOptions _o;
    private readonly double _sparsity;
    private readonly BudgetOptions _budget;
    private readonly IReadOnlyList<IReadOnlyList<int>>? _heads;
    private readonly List<(Parameter W, Tensor Z, Tensor U)> _vars = new();
    private int _updateEvery;
    private double _rho;

    /// <summary>Creates the hook.</summary>
    /// <param name="sparsity">Fraction of total parameters to remove.</param>
    /// <param name="keptHeads">Kept heads per block (stage 1), fixed in every projection; null lets the projection choose heads by magnitude.</param>
    /// <param name="options">ADMM options.</param>
    /// <param name="budget">Budget floors and tolerance.</param>
    public AdmmSoftPruning(double sparsity, IReadOnlyList<IReadOnlyList<int>>? keptHeads, AdmmOptions options, BudgetOptions? budget = null)
    {
        _o = options ?? throw new ArgumentNullException(nameof(options));
        _o.Validate();
        _sparsity = sparsity;
        _heads = keptHeads;
        _budget = budget ?? new BudgetOptions();
        _rho = _o.Rho;
    }

    /// <summary>Primal residual ‖W − Z‖ (over all prunable matrices) after every epoch.</summary>
    public List<double> ResidualHistory { get; } = new();

    /// <summary>The structure plan of the latest Z.</summary>
    public StructurePlan? Plan { get; private set; }

    /// <summary>Current ρ.</summary>
    public double Rho => _rho;

    /// <inheritdoc />
    public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch)
    {
        _updateEvery = _o.UpdateEverySteps > 0 ? _o.UpdateEverySteps : stepsPerEpoch;
        if (_vars.Count == 0)
        {
            using var _ = no_grad();
            foreach (var p in StructuredProjection.Prunable(model))
                _vars.Add((p, zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope()));
            if (_restored is null) UpdateZ(model);
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
            var imp = StructuredProjection.Magnitude(model, p => _vars.First(v => ReferenceEquals(v.W, p)).Z);
            Plan = StructuredProjection.Allocate(model.Architecture, imp, _sparsity, _budget, _heads);
        }
    }

    private void UpdateZ(VisionTransformerModel model)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var uOf = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (w, _, u) in _vars) uOf[w] = u;
        var imp = StructuredProjection.Magnitude(model, p => p + uOf[p]);
        Plan = StructuredProjection.Allocate(model.Architecture, imp, _sparsity, _budget, _heads);
        var masks = StructuredProjection.Masks(model.Architecture, Plan, model.parameters().First().device);
        int i = 0;
        foreach (var (_, mask) in StructuredProjection.PrunableWithMasks(model, masks))
        {
            var (w, z, u) = _vars[i++];
            z.copy_((w + u) * mask);
        }
        foreach (var m in masks) m.Dispose();
    }

    /// <inheritdoc />
    public void AfterBackward(VisionTransformerModel model, long globalStep)
    {
        using var _ = no_grad();
        foreach (var (w, z, u) in _vars)
        {
            if (w.grad is null) continue;
            using var d = w - z + u;
            w.grad.add_(d, alpha: _rho);
        }
    }

    /// <inheritdoc />
    public void AfterStep(VisionTransformerModel model, long globalStep)
    {
        if ((globalStep + 1) % _updateEvery != 0) return;
        UpdateZ(model);
        using var _ = no_grad();
        foreach (var (w, z, u) in _vars) u.add_(w).sub_(z);
        _rho = Math.Min(_rho * _o.RhoGrowth, _o.RhoMax);
    }

    /// <summary>‖W − Z‖ over all prunable matrices.</summary>
    public double PrimalResidual()
    {
        using var _ = no_grad();
        double s = 0;
        foreach (var (w, z, _) in _vars) { using var d = (w - z).square().sum(); s += d.ToDouble(); }
        return Math.Sqrt(s);
    }

    /// <inheritdoc />
    public void OnEpochEnd(VisionTransformerModel model, int epoch, IDictionary<string, double> extra)
    {
        double r = PrimalResidual();
        ResidualHistory.Add(r);
        extra["primal_residual"] = r;
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
    }

    /// <inheritdoc />
    public void LoadState(BinaryReader reader)
    {
        if (_vars.Count > 0) throw new InvalidOperationException("ADMM state must be loaded before training starts.");
        _rho = reader.ReadDouble();
        int n = reader.ReadInt32();
        if (n < 0) throw new InvalidDataException($"Corrupted ADMM state ({n} matrices).");
        var restored = new List<(Tensor Z, Tensor U)>(n);
        for (int i = 0; i < n; i++) restored.Add((Tensor.Load(reader).DetachFromDisposeScope(), Tensor.Load(reader).DetachFromDisposeScope()));
        ResidualHistory.Clear();
        int h = reader.ReadInt32();
        for (int i = 0; i < h; i++) ResidualHistory.Add(reader.ReadDouble());
        foreach (var (z, u) in _restored ?? []) { z.Dispose(); u.Dispose(); }
        _restored = restored;
    }

    // Z and U read from a checkpoint, applied by OnTrainingStart once the model's matrices are known.
    private List<(Tensor Z, Tensor U)>? _restored;
}
