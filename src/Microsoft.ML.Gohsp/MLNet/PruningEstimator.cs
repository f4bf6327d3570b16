using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// The options of <see cref="PruningEstimator"/>: the ML.NET settings (columns, validation data, progress) and the pruning
/// method's options they hold.
/// </summary>
public sealed class PruningEstimatorOptions : IPruningEstimatorOptions
{
    /// <summary>Creates the options of an estimator that runs the method <paramref name="methodOptions"/> configure.</summary>
    /// <param name="methodOptions">
    /// The method's options (<see cref="GohspOptions"/>, <see cref="SompOptions"/>, <see cref="SgmpOptions"/> or another
    /// method's): what to prune and how.
    /// </param>
    public PruningEstimatorOptions(PruningOptions methodOptions) =>
        MethodOptions = methodOptions ?? throw new ArgumentNullException(nameof(methodOptions), "The pruning method's options must be set.");

    /// <summary>The method's options.</summary>
    public PruningOptions MethodOptions { get; }

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

/// <summary>
/// Any structured pruning method (<see cref="IPruningMethod"/>, through <see cref="PruningOptions.CreateMethod"/>) of a
/// trained ViT as an ML.NET estimator: <c>mlContext.Transforms.Prune(new PruningEstimatorOptions(methodOptions), denseModel)</c>.
/// Same input, output and dense-model lookup as <see cref="GohspPruningEstimator"/>, which is this estimator for GOHSP with
/// the options in one object.
/// </summary>
public sealed class PruningEstimator : PruningEstimatorBase<PruningEstimatorOptions>
{
    internal PruningEstimator(IHostEnvironment env, PruningEstimatorOptions options, ITransformer? denseModel)
        : base(env, options, options?.MethodOptions!, "Prune", denseModel) { }
}
