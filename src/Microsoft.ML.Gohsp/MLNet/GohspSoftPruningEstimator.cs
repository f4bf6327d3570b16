using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// GOHSP stage 2 alone as an ML.NET estimator: ADMM soft structured pruning — training on the task loss plus
/// ρ/2·Σ‖W − Z + U‖² towards the structured-sparse set. Usually appended after <see cref="GohspHeadRankingEstimator"/> (its
/// head mask fixes the kept heads; a model without one has its heads chosen by magnitude). The result still has the dense
/// shape; its report (stage "soft-pruned") has the primal residual per epoch and what each block will keep. Continue with
/// <see cref="GohspHardPruningEstimator"/>. Reads <see cref="PruningOptions.Sparsity"/>, <see cref="GohspOptions.SoftPruning"/>,
/// <see cref="GohspOptions.Admm"/> and <see cref="PruningOptions.Budget"/>.
/// </summary>
public sealed class GohspSoftPruningEstimator : PruningEstimatorBase<GohspPruningEstimator.Options>
{
    internal GohspSoftPruningEstimator(IHostEnvironment env, GohspPruningEstimator.Options options, ITransformer? model) : base(env, options, "GohspPrune", model) { }

    private protected override PruningResult Prune(ViTModelParameters input, PruningContext context, GohspPruningEstimator.Options options)
        => new GohspPruner(options).SoftPrune(context.With(context.Model, GohspStages.Previous(input, GohspPruner.HeadMaskedStage), teacher: null));
}

/// <summary>How the GOHSP stage estimators hand their findings to the next stage.</summary>
internal static class GohspStages
{
    /// <summary>The report of the stage that produced <paramref name="input"/> when it is one of <paramref name="stages"/>; otherwise null.</summary>
    public static PruningReport? Previous(ViTModelParameters input, params string[] stages)
        => input.PruningReport is { Method: GohspPruner.MethodName } r && stages.Contains(r.Stage) ? r : null;
}
