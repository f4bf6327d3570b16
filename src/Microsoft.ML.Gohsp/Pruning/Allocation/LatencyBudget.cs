using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Pruning to a latency instead of a parameter fraction.</summary>
public static class LatencyBudget
{
    /// <summary>
    /// The plan that brings <paramref name="arch"/> to <paramref name="targetMs"/> per forward of
    /// <see cref="LatencyModel.Batch"/> images, by <paramref name="latency"/>'s estimate: the same global allocation as
    /// <see cref="StructuredProjection.Allocate"/> (importance normalised per kind, granularity, floors), spending
    /// latency instead of parameters. <see cref="BudgetOptions.Tolerance"/> is a fraction of the dense latency.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The target is not below the dense latency, or not reachable under the floors.</exception>
    public static StructurePlan Allocate(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, double targetMs,
        LatencyModel latency, BudgetOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(arch);
        ArgumentNullException.ThrowIfNull(latency);
        double denseMs = latency.ModelMs(arch);
        if (!(targetMs > 0 && targetMs < denseMs))
            throw new ArgumentOutOfRangeException(nameof(targetMs), targetMs,
                $"The target latency must be positive and below the dense model's {denseMs:F2} ms (batch {latency.Batch}).");
        return StructuredProjection.Allocate(arch, importance, 1 - targetMs / denseMs, options, costModel: latency.CostOf(arch));
    }

    /// <summary>
    /// The plan for a latency target, corrected by timing it on this machine. A table estimates a block from its parts,
    /// each timed alone, and this machine's speed drifts after the table is cached; the plan the table alone gives can
    /// miss its target when re-timed (docs/benchmarks.md). This allocates as <see cref="Allocate"/> does, times the planned architecture against
    /// the dense one (random weights, float32 inference, batches of <see cref="LatencyModel.Batch"/>, 3 forwards of each
    /// in each of <paramref name="rounds"/> interleaved rounds), and scales the share of the table's latency the plan
    /// keeps by target / measured until the measured share is within <paramref name="tolerance"/> of the target
    /// (relative) or <paramref name="maxIterations"/> plans were timed; it returns the plan closest to the target. Give
    /// exactly one of <paramref name="targetMs"/> (ms per forward on this machine now) and <paramref name="targetFraction"/>
    /// (of the dense model's time). A pruning run spends the calibrated budget with
    /// <see cref="PruningOptions.TargetLatencyFraction"/> = <see cref="LatencyCalibration.TableLatencyFraction"/> and the
    /// same table in <see cref="PruningOptions.LatencyTable"/>; the result depends on timing, so a run that must be
    /// reproducible stores that value rather than calibrating again.
    /// </summary>
    /// <exception cref="ArgumentException">Not exactly one target, or a target outside (0, dense).</exception>
    public static LatencyCalibration Calibrate(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, LatencyModel latency,
        double? targetMs = null, double? targetFraction = null, BudgetOptions? options = null, int maxIterations = 3,
        double tolerance = 0.03, int rounds = 5)
    {
        ArgumentNullException.ThrowIfNull(arch);
        ArgumentNullException.ThrowIfNull(importance);
        ArgumentNullException.ThrowIfNull(latency);
        if (targetMs.HasValue == targetFraction.HasValue)
            throw new ArgumentException("Give exactly one of targetMs and targetFraction.", targetMs.HasValue ? nameof(targetFraction) : nameof(targetMs));
        if (targetFraction is { } f && !(f > 0 && f < 1))
            throw new ArgumentOutOfRangeException(nameof(targetFraction), f, "targetFraction must be between 0 and 1 (a share of the dense model's time).");
        if (targetMs is { } ms && !(ms > 0))
            throw new ArgumentOutOfRangeException(nameof(targetMs), ms, "targetMs must be positive.");
        ArgumentOutOfRangeException.ThrowIfLessThan(maxIterations, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        return CalibrateWith(arch, importance, latency, targetMs, targetFraction, options, maxIterations, tolerance,
            pruned => LatencyCalibration.TimeAgainstDense(arch, pruned, latency.Batch, rounds));
    }

    /// <summary>
    /// <see cref="Calibrate"/> with its timer given (arguments checked by the caller): <paramref name="measureRatio"/> times a pruned architecture
    /// against <paramref name="arch"/> and returns (pruned / dense, dense ms).
    /// </summary>
    internal static LatencyCalibration CalibrateWith(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, LatencyModel latency,
        double? targetMs, double? targetFraction, BudgetOptions? options, int maxIterations, double tolerance,
        Func<ViTArchitecture, (double Ratio, double DenseMs)> measureRatio) =>
        LatencyCalibration.Run(arch, importance, latency, denseMs => targetFraction ?? targetMs!.Value / denseMs, options,
            maxIterations, tolerance, measureRatio);
}
