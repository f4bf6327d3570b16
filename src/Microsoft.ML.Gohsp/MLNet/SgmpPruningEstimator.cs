using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// SGMP (structured gradual magnitude pruning, a baseline for GOHSP) of a trained ViT as an ML.NET estimator: trains while
/// raising the structured sparsity on Zhu &amp; Gupta's cubic schedule (re-ranking heads, q/k dims, v dims and MLP neurons by
/// ℓ2 magnitude at every pruning step and keeping the pruned ones at zero), then removes them and fine-tunes (see
/// <see cref="SgmpPruner"/>). Same input, output and dense-model lookup as <see cref="GohspPruningEstimator"/>.
/// </summary>
public sealed class SgmpPruningEstimator : PruningEstimatorBase<SgmpPruningEstimator.Options>
{
    /// <summary>
    /// The estimator's options: the SGMP options (<see cref="SgmpOptions"/>), whose columns, validation data and
    /// progress every method's options carry.
    /// </summary>
    public sealed class Options : SgmpOptions { }

    internal SgmpPruningEstimator(IHostEnvironment env, Options options, ITransformer? denseModel) : base(env, options, "SgmpPrune", denseModel) { }
}
