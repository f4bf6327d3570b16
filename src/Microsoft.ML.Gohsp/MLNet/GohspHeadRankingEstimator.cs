using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// GOHSP stage 1 alone as an ML.NET estimator: graph-based head ranking on calibration images and the head mask Mᴴ. The
/// result is the same kind of transformer the trainer produces, over a copy of the model whose least important heads are
/// masked (saved with the model); its <see cref="ViTModelParameters.PruningReport"/> (stage "head-masked") lists the kept
/// heads and their stationary probabilities. Continue with <see cref="GohspSoftPruningEstimator"/>. Reads
/// <see cref="GohspOptions.HeadPruningFraction"/>, <see cref="GohspOptions.CalibrationImages"/>,
/// <see cref="GohspOptions.Similarity"/>, <see cref="GohspOptions.Direction"/>, <see cref="GohspOptions.Damping"/>,
/// <see cref="GohspOptions.PowerIterationTolerance"/> and <see cref="BudgetOptions.MinHeads"/>.
/// </summary>
public sealed class GohspHeadRankingEstimator : PruningEstimatorBase<GohspPruningEstimator.Options>
{
    internal GohspHeadRankingEstimator(IHostEnvironment env, GohspPruningEstimator.Options options, ITransformer? model) : base(env, options, "GohspPrune", model) { }

    private protected override PruningResult Prune(ViTModelParameters input, PruningContext context, GohspPruningEstimator.Options options)
        => new GohspPruner(options).RankAndMaskHeads(context);
}
