namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// GOHSP's own figures in a <see cref="PruningReport"/> (<see cref="PruningReport.Details"/>): the head ranking of stage 1,
/// the ADMM residuals of stage 2 and how well the cut agrees with the final weights. A later stage carries its earlier
/// stages' figures.
/// </summary>
public sealed record GohspDetails : PruningDetails
{
    /// <summary>
    /// Per block (the order of <see cref="PruningReport.Blocks"/>): the stationary probability of each kept head in its head
    /// graph, in the order of <see cref="BlockReport.KeptHeads"/>. Empty arrays when no stage-1 ranking is known (a stage
    /// run without the report of stage 1); NaN for a kept head the ranking did not score.
    /// </summary>
    public IReadOnlyList<double[]> StationaryProbabilities { get; init; } = [];

    /// <summary>Primal residual ‖W − Z‖ after each soft-pruning epoch; empty before stage 2.</summary>
    public IReadOnlyList<double> ResidualHistory { get; init; } = [];

    /// <summary>‖W₀ − Π(W₀)‖ at the full target when soft pruning started; null before stage 2.</summary>
    public double? ResidualStart { get; init; }

    /// <summary>The primal residual at the end of soft pruning over <see cref="ResidualStart"/>; null before stage 2.</summary>
    public double? ResidualRatio => ResidualStart is > 0 && ResidualHistory.Count > 0 ? ResidualHistory[^1] / ResidualStart : null;

    /// <summary>
    /// Fraction of the prunable parameters kept by the cut (the support of ADMM's final Z) that a fresh projection of the
    /// final W would also keep (1 = the same structures); null before stage 2.
    /// </summary>
    public double? CutPlanOverlap { get; init; }

    /// <summary>
    /// Stage-to-stage state: the support of ADMM's final Z, which stage 3 cuts (carried from stage 2 to the cut, also through
    /// a saved model); null before stage 2.
    /// </summary>
    internal StructurePlan? CutPlan { get; init; }
}
