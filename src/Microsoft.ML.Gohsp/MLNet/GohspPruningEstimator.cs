using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// GOHSP structured pruning of a trained ViT as an ML.NET estimator: graph-based head ranking and masking, ADMM soft
/// pruning, then physical removal of heads / q-k dims / v dims / MLP neurons and fine-tuning. The result is the same
/// kind of transformer <see cref="ViTClassificationTrainer"/> produces (a smaller, heterogeneous ViT), so Evaluate,
/// Model.Save/Load and PredictionEngine work unchanged. The dense model comes either from the constructor (a trained or
/// loaded ViT transformer or chain) or, when the estimator is appended right after the ViT trainer in one chain, from the
/// scored data the trainer's transformer hands it.
/// </summary>
public sealed class GohspPruningEstimator : PruningEstimatorBase<GohspPruningEstimator.Options>
{
    /// <summary>
    /// The estimator's options: the GOHSP options (<see cref="GohspOptions"/>), whose columns, validation data and
    /// progress every method's options carry.
    /// </summary>
    public sealed class Options : GohspOptions { }

    internal GohspPruningEstimator(IHostEnvironment env, Options options, ITransformer? denseModel) : base(env, options, "GohspPrune", denseModel) { }
}
