using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
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
    /// <summary>Options: the SOMP options plus columns, validation data and progress.</summary>
    public sealed class Options : SompOptions, IPruningEstimatorOptions
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

    internal SompPruningEstimator(IHostEnvironment env, Options options, ITransformer? denseModel) : base(env, options, options, "SompPrune", denseModel) { }
}
