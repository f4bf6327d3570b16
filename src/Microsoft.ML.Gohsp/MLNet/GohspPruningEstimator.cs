using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
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
    /// <summary>Options: the GOHSP options plus columns, validation data and progress.</summary>
    public sealed class Options : GohspOptions, IPruningEstimatorOptions
    {
        /// <inheritdoc />
        public string LabelColumnName { get; set; } = DefaultColumnNames.Label;
        /// <inheritdoc />
        public string? ImageColumnName { get; set; }
        /// <inheritdoc />
        public string? TeacherScoreColumnName { get; set; }
        /// <inheritdoc />
        public IDataView? ValidationSet { get; set; }
        /// <inheritdoc />
        public IProgress<ViTTrainingProgress>? Progress { get; set; }
    }

    internal GohspPruningEstimator(IHostEnvironment env, Options options, ITransformer? denseModel) : base(env, options, options, "GohspPrune", denseModel) { }
}
