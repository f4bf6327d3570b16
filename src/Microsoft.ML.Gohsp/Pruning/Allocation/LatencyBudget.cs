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
}
