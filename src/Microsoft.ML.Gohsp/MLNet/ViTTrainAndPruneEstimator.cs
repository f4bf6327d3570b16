using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// Trains a dense ViT with a <see cref="ViTClassificationTrainer"/> and prunes it with a pruning estimator, as one
/// estimator (ML.NET's meta-estimator pattern, like <c>OneVersusAll(binaryTrainer)</c>):
/// <c>mlContext.Transforms.GohspPrune(options, mlContext.MulticlassClassification.Trainers.ViTClassification(...))</c>.
/// Its transformer is the pruned model alone, so a pipeline that ends with it saves only the pruned ViT; the dense model
/// stays available in memory as <see cref="LastDenseModel"/>.
/// </summary>
public sealed class ViTTrainAndPruneEstimator : IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>
{
    private readonly IHost _host;
    private readonly ViTClassificationTrainer _trainer;
    private readonly Func<ITransformer?, IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>> _pruner;

    internal ViTTrainAndPruneEstimator(IHostEnvironment env, ViTClassificationTrainer denseTrainer,
        Func<ITransformer?, IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>> pruner)
    {
        _host = Contracts.CheckRef(env, nameof(env)).Register(nameof(ViTTrainAndPruneEstimator));
        _trainer = denseTrainer ?? throw new ArgumentNullException(nameof(denseTrainer));
        _pruner = pruner;
        _pruner(null); // the pruning options are checked now, not after the dense training
    }

    /// <summary>The dense model the last <see cref="Fit"/> trained (in memory; not part of the fitted transformer).</summary>
    public MulticlassPredictionTransformer<ViTModelParameters>? LastDenseModel { get; private set; }

    /// <summary>Checks the columns (as the trainer does) and returns the output schema: <c>Score</c> and <c>PredictedLabel</c> added.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        _host.CheckValue(inputSchema, nameof(inputSchema));
        return _trainer.GetOutputSchema(inputSchema);
    }

    /// <summary>Trains the dense model on <paramref name="input"/>, then prunes it on the same data; returns the pruned model.</summary>
    public MulticlassPredictionTransformer<ViTModelParameters> Fit(IDataView input)
    {
        _host.CheckValue(input, nameof(input));
        var dense = _trainer.Fit(input);
        LastDenseModel = dense;
        return _pruner(dense).Fit(input);
    }
}
