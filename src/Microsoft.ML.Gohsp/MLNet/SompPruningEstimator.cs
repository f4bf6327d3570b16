using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// SOMP (structured one-shot magnitude pruning, a baseline for GOHSP) of a trained ViT as an ML.NET estimator: ranks heads,
/// q/k dims, v dims and MLP neurons once by the ℓ2 magnitude of the dense weights, removes the least important ones until
/// <see cref="PruningOptions.Sparsity"/> of the parameters is gone, and fine-tunes (see <see cref="SompPruner"/>). Same
/// input, output and dense-model lookup as <see cref="GohspPruningEstimator"/>.
/// </summary>
public sealed class SompPruningEstimator : PruningEstimatorBase<SompPruningEstimator.Options>
{
    /// <summary>
    /// The estimator's options: the SOMP options (<see cref="SompOptions"/>), whose columns, validation data and
    /// progress every method's options carry.
    /// </summary>
    public sealed class Options : SompOptions { }

    internal SompPruningEstimator(IHostEnvironment env, Options options, ITransformer? denseModel) : base(env, options, "SompPrune", denseModel) { }
}
