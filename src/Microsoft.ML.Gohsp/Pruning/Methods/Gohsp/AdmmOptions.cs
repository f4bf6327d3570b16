namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>How the ADMM penalty ρ/2·‖W − Z + U‖² enters the W-subproblem.</summary>
public enum AdmmPenalty
{
    /// <summary>
    /// Decoupled proximal step (default): after every optimiser step, W ← (W + ηρ(Z − U)) / (1 + ηρ) with η the step's
    /// learning rate — the exact proximal map of the penalty, applied outside the optimiser the way AdamW decouples weight
    /// decay. Adam's per-weight normalisation would otherwise cap the pull toward Z at about η per step.
    /// </summary>
    Decoupled = 0,
    /// <summary>The penalty's gradient ρ(W − Z + U) is added to the task gradient before the optimiser step.</summary>
    Gradient = 1,
}

/// <summary>Options of GOHSP stage 2 (ADMM-style soft structured pruning).</summary>
public sealed class AdmmOptions
{
    /// <summary>Initial penalty ρ₀ of ρ/2·Σ‖W − Z + U‖². Default 1.</summary>
    public double Rho { get; set; } = 1;
    /// <summary>
    /// Factor applied to ρ after every Z/U update; 0 (default) chooses it so that ρ grows geometrically from
    /// <see cref="Rho"/> to <see cref="RhoMax"/> by the end of the target-sparsity ramp (or by the last update when there is
    /// no ramp), whatever the stage's length.
    /// </summary>
    public double RhoGrowth { get; set; }
    /// <summary>
    /// Largest ρ. Default 1000: with the decoupled penalty and lr 5e-4, a pull of a third of the way to Z − U per step,
    /// enough to hold the pruned weights near zero against Adam's steps of about lr each (the residual ends at ≤ 5% of its
    /// start; docs/gohsp.md).
    /// </summary>
    public double RhoMax { get; set; } = 1000;
    /// <summary>
    /// With the automatic growth (<see cref="RhoGrowth"/> = 0): the fraction of the stage's steps by which ρ reaches
    /// <see cref="RhoMax"/>, in [0, 1). 0 (default) ties it to the end of the target-sparsity ramp
    /// (<see cref="SparsityRampFraction"/>), or to the last update when there is no ramp. A value below a long ramp holds
    /// the structures that leave the support at ρ_max as soon as they leave it, instead of pulling every one of them hard
    /// only at the end of the ramp.
    /// </summary>
    public double RhoRampFraction { get; set; }
    /// <summary>Optimiser steps between Z/U updates; 0 = once per epoch. Default 10.</summary>
    public int UpdateEverySteps { get; set; } = 10;
    /// <summary>
    /// Progressive ADMM: the target sparsity of the projection Π ramps from 0 to <see cref="PruningOptions.Sparsity"/>
    /// along SGMP's cubic schedule over this fraction of the stage's steps, then stays there; 0 projects onto the full
    /// target from the first step. In [0, 1). Default 0.5, with <see cref="MonotoneSupport"/>: chosen on the validation
    /// split from dense models trained 16 epochs, where it lowered the NLL against a ramp of 0.25 without a monotone support
    /// in 5 of 6 runs at 70% and 90%; from dense models trained only 4 epochs 0.25 is better (docs/gohsp.md).
    /// </summary>
    public double SparsityRampFraction { get; set; } = 0.5;
    /// <summary>How the penalty enters the W-subproblem. Default <see cref="AdmmPenalty.Decoupled"/>.</summary>
    public AdmmPenalty Penalty { get; set; } = AdmmPenalty.Decoupled;
    /// <summary>
    /// With the decoupled penalty: apply the proximal pull only outside Z's support (Z tracks W on its support between
    /// updates), so the kept weights learn at the optimiser's rate instead of being pulled back to their values at the last
    /// Z update. Default true.
    /// </summary>
    public bool PullOutsideSupportOnly { get; set; } = true;

    /// <summary>
    /// Keeps each projection's support inside the previous one's while the ramp's target sparsity grows, so that a structure
    /// once outside Z never returns (as SGMP's masks), with every kind's importance normalised over the structures still
    /// kept (heads fixed at stage 1 stay fixed). False re-allocates every projection from all structures. Default true
    /// (with the ramp of <see cref="SparsityRampFraction"/>; docs/gohsp.md).
    /// </summary>
    public bool MonotoneSupport { get; set; } = true;

    /// <summary>
    /// The metric of the projection that chooses Z's support (measured on W + U). Default <see cref="ProjectionMetric.Fisher"/>: chosen on the
    /// validation split, where it lowered GOHSP's NLL against the Euclidean projection in 14 of 15 paired runs (dense models
    /// trained 16 and 4 epochs at 70% and 90%, and the default sample's short budget; docs/gohsp.md).
    /// </summary>
    public ProjectionMetric Metric { get; set; } = ProjectionMetric.Fisher;

    internal void Validate()
    {
        if (!(Rho > 0) || double.IsInfinity(Rho)) throw new ArgumentOutOfRangeException("Admm.Rho", Rho, "Admm.Rho must be a positive finite number.");
        if (!(RhoGrowth == 0 || RhoGrowth >= 1) || double.IsInfinity(RhoGrowth))
            throw new ArgumentOutOfRangeException("Admm.RhoGrowth", RhoGrowth, "Admm.RhoGrowth must be 0 (automatic) or a finite number ≥ 1.");
        if (!(RhoMax >= Rho) || double.IsInfinity(RhoMax)) throw new ArgumentOutOfRangeException("Admm.RhoMax", RhoMax, "Admm.RhoMax must be finite and ≥ Admm.Rho.");
        if (UpdateEverySteps < 0) throw new ArgumentOutOfRangeException("Admm.UpdateEverySteps", UpdateEverySteps, "Admm.UpdateEverySteps must be ≥ 0 (0 = once per epoch).");
        if (!(SparsityRampFraction >= 0 && SparsityRampFraction < 1))
            throw new ArgumentOutOfRangeException("Admm.SparsityRampFraction", SparsityRampFraction, "Admm.SparsityRampFraction must be in [0, 1).");
        if (!(RhoRampFraction >= 0 && RhoRampFraction < 1))
            throw new ArgumentOutOfRangeException("Admm.RhoRampFraction", RhoRampFraction, "Admm.RhoRampFraction must be in [0, 1) (0 = the end of the sparsity ramp).");
        if (!Enum.IsDefined(Metric)) throw new ArgumentOutOfRangeException("Admm.Metric", Metric, "Admm.Metric must be Euclidean or Fisher.");
        if (!Enum.IsDefined(Penalty)) throw new ArgumentOutOfRangeException("Admm.Penalty", Penalty, "Admm.Penalty must be Decoupled or Gradient.");
    }
}
