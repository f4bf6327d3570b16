using Microsoft.ML;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// Any structured pruning method (<see cref="IPruningMethod"/>, through <see cref="PruningOptions.CreateMethod"/>) of a
/// trained ViT as an ML.NET estimator: <c>mlContext.Transforms.Prune(methodOptions, denseModel)</c>. Same input, output and
/// dense-model lookup as <see cref="GohspPruningEstimator"/>, which is this estimator for GOHSP.
/// </summary>
public sealed class PruningEstimator : PruningEstimatorBase<PruningOptions>
{
    internal PruningEstimator(IHostEnvironment env, PruningOptions options, ITransformer? denseModel) : base(env, options, "Prune", denseModel) { }
}
