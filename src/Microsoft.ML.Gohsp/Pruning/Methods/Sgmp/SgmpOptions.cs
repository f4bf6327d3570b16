using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Options of SGMP (structured gradual magnitude pruning): the shared <see cref="PruningOptions"/> (<see cref="PruningOptions.Sparsity"/>
/// is the final sparsity s_f; with a latency target, s_f and every s_t are fractions of the estimated latency), the gradual phase's training options and the cubic schedule (see <see cref="SgmpSchedule"/>).
/// </summary>
public class SgmpOptions : PruningOptions
{
    /// <summary>Creates the default options (5 gradual + 5 fine-tuning epochs).</summary>
    public SgmpOptions() : base(fineTuneEpochs: 5) { }

    /// <inheritdoc />
    public override PruningMethod? Method => PruningMethod.Sgmp;

    /// <inheritdoc />
    public override IPruningMethod CreateMethod() => new SgmpPruner(this);

    /// <summary>
    /// Training options of the gradual phase. Default 5 epochs at a constant lr of 5e-4, no warm-up — the same as GOHSP's
    /// soft-pruning stage, so that the two methods differ only in how they prune.
    /// </summary>
    public ViTTrainingOptions Gradual { get; set; } = new() { Epochs = 5, LearningRate = 5e-4, MinLearningRate = 5e-4, WarmupEpochs = 0 };

    /// <summary>Initial sparsity s_i (the target at the start step), in [0, <see cref="PruningOptions.Sparsity"/>). Default 0.</summary>
    public double InitialSparsity { get; set; }

    /// <summary>Start step t₀ (0-based optimiser step of the gradual phase) of the first pruning step, ≥ 0. Default 0.</summary>
    public long StartStep { get; set; }

    /// <summary>
    /// Pruning frequency Δt in optimiser steps, ≥ 0; 0 (default) = automatic: ⌈ramp length / 10⌉, i.e. at most 10 pruning
    /// steps after t₀.
    /// </summary>
    public int PruningFrequency { get; set; }

    /// <summary>
    /// Fraction of the gradual phase's steps by which the ramp ends, in (0, 1]. Default 0.75: the sparsity reaches s_f
    /// at (or just before) 75% of the gradual phase and the rest trains at s_f. The number of pruning steps is
    /// n = ⌊(⌊RampFraction·steps⌋ − t₀) / Δt⌋.
    /// </summary>
    public double RampFraction { get; set; } = 0.75;

    /// <summary>
    /// The metric of the ranking at every pruning step. Default <see cref="ProjectionMetric.Euclidean"/>: the ℓ2 magnitude,
    /// which makes SGMP the gradual magnitude baseline. <see cref="ProjectionMetric.Fisher"/> ranks by GOHSP's Fisher-weighted
    /// importance (the same estimate its ADMM projection uses, accumulated over the gradual phase's batches): SGMP then
    /// differs from GOHSP only in how it trains toward the support, which is the ablation docs/gohsp.md reports.
    /// </summary>
    public ProjectionMetric Metric { get; set; } = ProjectionMetric.Euclidean;

    /// <inheritdoc />
    protected internal override IReadOnlyList<PruningStage> TrainingStages =>
        [new(nameof(Gradual), () => Gradual, o => Gradual = o), new(nameof(FineTune), () => FineTune, o => FineTune = o)];

    /// <summary>Throws naming the first invalid option (<see cref="SgmpSchedule.For(SgmpOptions, long)"/> checks the ramp against the data).</summary>
    public override void Validate()
    {
        base.Validate();
        // with a latency target, s_f is a fraction of the latency known at run start (SgmpSchedule.For checks it then)
        if (!(InitialSparsity >= 0 && (HasLatencyTarget ? InitialSparsity < 1 : InitialSparsity < Sparsity)))
            throw new ArgumentOutOfRangeException(nameof(InitialSparsity), InitialSparsity, HasLatencyTarget
                ? "InitialSparsity must be in [0, 1) and below the fraction of the latency the target removes."
                : $"InitialSparsity must be in [0, Sparsity = {Sparsity}).");
        if (StartStep < 0) throw new ArgumentOutOfRangeException(nameof(StartStep), StartStep, "StartStep must be ≥ 0.");
        if (PruningFrequency < 0) throw new ArgumentOutOfRangeException(nameof(PruningFrequency), PruningFrequency, "PruningFrequency must be ≥ 0 steps (0 = automatic).");
        if (!(RampFraction > 0 && RampFraction <= 1)) throw new ArgumentOutOfRangeException(nameof(RampFraction), RampFraction, "RampFraction must be in (0, 1].");
        if (!Enum.IsDefined(Metric)) throw new ArgumentOutOfRangeException(nameof(Metric), Metric, "Metric must be Euclidean or Fisher.");
    }
}
