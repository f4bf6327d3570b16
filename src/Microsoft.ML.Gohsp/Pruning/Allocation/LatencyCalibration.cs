using Microsoft.ML.Gohsp.VisionTransformer;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// What <see cref="LatencyBudget.Calibrate"/> found: the share of the latency table's cost to remove so that the planned
/// architecture, timed on this machine against the dense one, takes the target share of its time.
/// </summary>
/// <param name="Fraction">The share of the table's estimated latency the calibrated plan removes.</param>
/// <param name="TargetRatio">The target as a share of the dense model's time on this machine.</param>
/// <param name="MeasuredRatio">The calibrated plan's time over the dense model's, timed interleaved on this machine.</param>
/// <param name="TableOnlyRatio">The same for the first plan, spent against the table alone.</param>
/// <param name="DenseMs">The dense model's time per forward of the table's batch, timed in the same rounds.</param>
/// <param name="Iterations">Plans timed (1 when the table's plan already met the tolerance).</param>
/// <param name="Plan">The calibrated plan for the architecture and importance given.</param>
public sealed record LatencyCalibration(double Fraction, double TargetRatio, double MeasuredRatio, double TableOnlyRatio, double DenseMs,
    int Iterations, StructurePlan Plan)
{
    /// <summary>
    /// The value for <see cref="PruningOptions.TargetLatencyFraction"/> (with the same table in
    /// <see cref="PruningOptions.LatencyTable"/>) that makes a pruning run spend the calibrated share of the table's latency.
    /// </summary>
    public double TableLatencyFraction => 1 - Fraction;

    /// <summary>What a pruning report records of this calibration (<see cref="PruningReport.LatencyCalibration"/>).</summary>
    public LatencyCalibrationSummary Summary() => new(TableLatencyFraction, TargetRatio, MeasuredRatio, TableOnlyRatio, DenseMs, Iterations);

    /// <summary>The smallest fraction of the table's latency a calibrated plan removes (an allocation needs a positive one).</summary>
    internal const double MinimumFraction = 0.01;

    /// <summary>
    /// The closed loop of <see cref="LatencyBudget.Calibrate"/>. <paramref name="measureRatio"/> times a pruned
    /// architecture against the dense one and returns (pruned / dense, dense ms); tests pass a deterministic one.
    /// </summary>
    internal static LatencyCalibration Run(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, LatencyModel latency,
        Func<double, double> targetRatioOfDenseMs, BudgetOptions? options, int maxIterations, double tolerance,
        Func<ViTArchitecture, (double Ratio, double DenseMs)> measureRatio)
    {
        var cost = latency.CostOf(arch);
        // the dense model against itself first: its time on this machine, of which a target in milliseconds is a share
        double denseMs = measureRatio(arch).DenseMs;
        double target = targetRatioOfDenseMs(denseMs);
        if (!(target > 0 && target < 1))
            throw new ArgumentOutOfRangeException(nameof(targetRatioOfDenseMs), target,
                $"The target is {target:P1} of the dense model's {denseMs:F2} ms measured on this machine; it must be between 0 and 100%.");
        double fraction = 1 - target;
        var plan = StructuredProjection.Allocate(arch, importance, fraction, options, costModel: cost);
        var measured = measureRatio(plan.PrunedArchitecture(arch));
        double tableOnly = measured.Ratio;
        var best = (Fraction: fraction, Plan: plan, Measured: measured);
        int iterations = 1;
        while (iterations < maxIterations && Math.Abs(measured.Ratio - target) > tolerance * target)
        {
            // the kept share of the table's latency, scaled by how far the timed plan missed; a plan timed far below the
            // target (timing noise on a small model) asks for less than nothing removed, so the fraction keeps a floor
            double next = Math.Clamp(1 - (1 - fraction) * target / measured.Ratio, MinimumFraction, 0.99);
            if (Math.Abs(next - fraction) < 1e-4) break; // the floors or the granularity allow no other plan
            fraction = next;
            plan = StructuredProjection.Allocate(arch, importance, fraction, options, costModel: cost);
            measured = measureRatio(plan.PrunedArchitecture(arch));
            iterations++;
            if (Math.Abs(measured.Ratio - target) < Math.Abs(best.Measured.Ratio - target)) best = (fraction, plan, measured);
        }
        return new LatencyCalibration(best.Fraction, target, best.Measured.Ratio, tableOnly, best.Measured.DenseMs, iterations, best.Plan);
    }

    /// <summary>
    /// Times <paramref name="pruned"/> against <paramref name="dense"/> on this machine: random weights (time does not
    /// depend on them), float32 inference without autograd, batches of <paramref name="batch"/> images, in
    /// <paramref name="rounds"/> interleaved rounds of <see cref="LatencyMeasurement.TimeRounds"/> (the table's own
    /// timer: warm-ups, then <see cref="LatencyMeasurement.RunsPerRound"/> forwards of each model per round); the medians
    /// of the per-round ratios and of the dense times per forward (several forwards a round: one is too coarse for the
    /// calibration's 3% tolerance, docs/benchmarks.md).
    /// </summary>
    internal static (double Ratio, double DenseMs) TimeAgainstDense(ViTArchitecture dense, ViTArchitecture pruned, int batch, int rounds)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var d = new VisionTransformerModel(dense, seed: 0);
        using var p = new VisionTransformerModel(pruned, seed: 0);
        d.eval();
        p.eval();
        var x = randn(batch, dense.Channels, dense.ImageSize, dense.ImageSize);
        var times = LatencyMeasurement.TimeRounds([() => d.forward(x), () => p.forward(x)], rounds);
        var ratios = Enumerable.Range(0, rounds).Select(r => times[1][r] / times[0][r]);
        return (LatencyMeasurement.Median(ratios), LatencyMeasurement.Median(times[0]));
    }
}

/// <summary>
/// The latency calibration of a pruning run (<see cref="PruningOptions.LatencyCalibrationIterations"/>), as its report
/// records it (<see cref="PruningReport.LatencyCalibration"/>): what <see cref="LatencyBudget.Calibrate"/> found for the
/// dense model's magnitude importance.
/// </summary>
/// <param name="TableLatencyFraction">
/// The share of the latency table's dense estimate the run spends down to (1 − the share removed). Passed back as
/// <see cref="PruningOptions.TargetLatencyFraction"/> with <see cref="PruningOptions.LatencyCalibrationIterations"/> = 0
/// and the same <see cref="PruningOptions.LatencyTable"/>, it gives exactly the same budget and so the same plan, without timing.
/// </param>
/// <param name="TargetRatio">The target as a share of the dense model's time on this machine.</param>
/// <param name="MeasuredRatio">The calibrated plan's time over the dense model's, timed interleaved on this machine.</param>
/// <param name="TableOnlyRatio">The same for the plan the table alone gives.</param>
/// <param name="DenseMs">The dense model's time per forward of the table's batch, timed in the same rounds.</param>
/// <param name="Iterations">Plans timed.</param>
public sealed record LatencyCalibrationSummary(double TableLatencyFraction, double TargetRatio, double MeasuredRatio, double TableOnlyRatio,
    double DenseMs, int Iterations);
