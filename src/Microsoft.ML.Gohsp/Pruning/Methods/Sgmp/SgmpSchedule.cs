namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The cubic sparsity schedule of gradual magnitude pruning (Zhu &amp; Gupta, 2017):
/// s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(n·Δt))³ for t₀ ≤ t ≤ t₀ + n·Δt, s_i before t₀ and s_f after the ramp.
/// Steps are 0-based global optimiser steps of the gradual phase; pruning happens after the optimiser step of every
/// step t₀ + k·Δt, k = 0…n (see <see cref="IsPruningStep"/>).
/// </summary>
public sealed class SgmpSchedule
{
    /// <summary>Creates a schedule.</summary>
    /// <param name="initialSparsity">s_i, in [0, <paramref name="finalSparsity"/>).</param>
    /// <param name="finalSparsity">s_f, in (0, 1).</param>
    /// <param name="startStep">t₀, the first pruning step (≥ 0).</param>
    /// <param name="frequency">Δt, steps between pruning steps (≥ 1).</param>
    /// <param name="pruningSteps">n, the number of pruning steps after t₀ (≥ 1); the ramp ends at t₀ + n·Δt.</param>
    public SgmpSchedule(double initialSparsity, double finalSparsity, long startStep, long frequency, int pruningSteps)
    {
        if (!(finalSparsity > 0 && finalSparsity < 1)) throw new ArgumentOutOfRangeException(nameof(finalSparsity), finalSparsity, "The final sparsity must be in (0, 1).");
        if (!(initialSparsity >= 0 && initialSparsity < finalSparsity))
            throw new ArgumentOutOfRangeException(nameof(initialSparsity), initialSparsity, $"The initial sparsity must be in [0, final sparsity {finalSparsity}).");
        if (startStep < 0) throw new ArgumentOutOfRangeException(nameof(startStep), startStep, "The start step must be ≥ 0.");
        if (frequency < 1) throw new ArgumentOutOfRangeException(nameof(frequency), frequency, "The pruning frequency must be ≥ 1 step.");
        if (pruningSteps < 1) throw new ArgumentOutOfRangeException(nameof(pruningSteps), pruningSteps, "The number of pruning steps must be ≥ 1.");
        InitialSparsity = initialSparsity; FinalSparsity = finalSparsity; StartStep = startStep; Frequency = frequency; PruningSteps = pruningSteps;
    }

    /// <summary>s_i.</summary>
    public double InitialSparsity { get; }
    /// <summary>s_f.</summary>
    public double FinalSparsity { get; }
    /// <summary>t₀.</summary>
    public long StartStep { get; }
    /// <summary>Δt.</summary>
    public long Frequency { get; }
    /// <summary>n.</summary>
    public int PruningSteps { get; }
    /// <summary>t₀ + n·Δt, the last pruning step (where s_t reaches s_f).</summary>
    public long EndStep => StartStep + PruningSteps * Frequency;

    /// <summary>The target sparsity s_t at global step <paramref name="step"/>.</summary>
    public double SparsityAt(long step)
    {
        if (step <= StartStep) return InitialSparsity;
        if (step >= EndStep) return FinalSparsity;
        double f = 1.0 - (double)(step - StartStep) / (PruningSteps * Frequency);
        return FinalSparsity + (InitialSparsity - FinalSparsity) * f * f * f;
    }

    /// <summary>Whether the structures are re-ranked and the sparsity raised after step <paramref name="step"/>: t = t₀ + k·Δt, 0 ≤ k ≤ n.</summary>
    public bool IsPruningStep(long step) => step >= StartStep && step <= EndStep && (step - StartStep) % Frequency == 0;

    /// <summary>
    /// The schedule of <paramref name="options"/> for a gradual phase of <paramref name="totalSteps"/> optimiser steps:
    /// the ramp ends at or before step ⌊<see cref="SgmpOptions.RampFraction"/>·totalSteps⌋ (and before the last step);
    /// Δt = <see cref="SgmpOptions.PruningFrequency"/>, or ⌈ramp length / 10⌉ when it is 0 (at most 10 pruning steps after t₀);
    /// n = ⌊ramp length / Δt⌋.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The start step or the frequency leaves no room for a ramp (names the option).</exception>
    public static SgmpSchedule For(SgmpOptions options, long totalSteps)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.HasLatencyTarget)
            throw new ArgumentException("These options have a latency target, whose final sparsity (a fraction of the latency) is known only against a " +
                "latency table: pass it with For(options, totalSteps, finalSparsity).", nameof(options));
        return For(options, totalSteps, options.Sparsity);
    }

    /// <summary>
    /// As <see cref="For(SgmpOptions, long)"/>, with the final sparsity s_f given: the fraction of the budget's cost (for a latency
    /// target, of the estimated latency) the ramp ends at.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">As <see cref="For(SgmpOptions, long)"/>, or <see cref="SgmpOptions.InitialSparsity"/> not below <paramref name="finalSparsity"/>.</exception>
    public static SgmpSchedule For(SgmpOptions options, long totalSteps, double finalSparsity)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (!(options.InitialSparsity < finalSparsity))
            throw new ArgumentOutOfRangeException(nameof(SgmpOptions.InitialSparsity), options.InitialSparsity,
                $"InitialSparsity must be below the final sparsity ({finalSparsity:G4}{(options.HasLatencyTarget ? ", the fraction of the estimated latency the latency target removes" : "")}).");
        if (totalSteps < 1) throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "The gradual phase needs at least one step.");
        long rampEnd = Math.Min((long)Math.Floor(options.RampFraction * totalSteps), totalSteps - 1);
        long length = rampEnd - options.StartStep;
        if (length < 1)
            throw new ArgumentOutOfRangeException(nameof(SgmpOptions.StartStep), options.StartStep,
                $"StartStep ({options.StartStep}) must be before the end of the ramp: step {rampEnd} (RampFraction {options.RampFraction} of the " +
                $"{totalSteps} steps of the gradual phase). Lower StartStep or give the Gradual phase more epochs.");
        long dt = options.PruningFrequency > 0 ? options.PruningFrequency : (length + 9) / 10;
        long n = length / dt;
        if (n < 1)
            throw new ArgumentOutOfRangeException(nameof(SgmpOptions.PruningFrequency), options.PruningFrequency,
                $"PruningFrequency ({dt} steps) is longer than the ramp ({length} steps from StartStep {options.StartStep} to step {rampEnd}, " +
                $"RampFraction {options.RampFraction} of {totalSteps} steps): there would be no pruning step. Lower it (0 = automatic).");
        return new SgmpSchedule(options.InitialSparsity, finalSparsity, options.StartStep, dt, (int)Math.Min(n, int.MaxValue));
    }
}
