using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp.MLNet;

/// <summary>
/// GOHSP structured pruning of a trained ViT as an ML.NET estimator: graph-based head ranking and masking, ADMM soft
/// pruning, then physical removal of heads / q-k dims / v dims / MLP neurons and fine-tuning. The result is the same
/// kind of transformer <see cref="ViTClassificationTrainer"/> produces (a smaller, heterogeneous ViT), so Evaluate,
/// Model.Save/Load and PredictionEngine work unchanged. The dense model comes either from the constructor (a trained or
/// loaded ViT transformer or chain) or, when the estimator is appended right after the ViT trainer in one chain, from the
/// scored data the trainer's transformer hands it.
/// </summary>
public sealed class GohspPruningEstimator : IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>
{
    /// <summary>Options: the GOHSP options plus columns, validation data and progress.</summary>
    public sealed class Options : GohspOptions
    {
        /// <summary>Key-typed label column. Default "Label".</summary>
        public string LabelColumnName { get; set; } = DefaultColumnNames.Label;
        /// <summary>Image column; null uses the dense model's feature column.</summary>
        public string? ImageColumnName { get; set; }
        /// <summary>Optional validation data: accuracy after every stage goes into the report.</summary>
        public IDataView? ValidationSet { get; set; }
        /// <summary>Optional progress callback for the training stages.</summary>
        public IProgress<ViTTrainingProgress>? Progress { get; set; }
    }

    private readonly IHost _host;
    private readonly Options _options;
    private readonly DenseViT? _dense;

    internal GohspPruningEstimator(IHostEnvironment env, Options options, ITransformer? denseModel)
    {
        _host = Contracts.CheckRef(env, nameof(env)).Register(nameof(GohspPruningEstimator));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        options.Validate();
        if (denseModel is not null)
            _dense = (DenseViTLocator.FindViT(denseModel) is { } t ? new DenseViT(t.Model, t.FeatureColumnName) : null) ?? throw new ArgumentException(
                $"The model passed to GOHSP is a {denseModel.GetType().Name}, not a ViT from Microsoft.ML.Gohsp (expected a MulticlassPredictionTransformer<ViTModelParameters> or a chain that contains one).", nameof(denseModel));
    }

    /// <summary>The report of the last <see cref="Fit"/>.</summary>
    public PruningReport? LastReport { get; private set; }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        _host.CheckValue(inputSchema, nameof(inputSchema));
        // Without an explicit model the image column is the upstream trainer's feature column, known only at Fit.
        string? image = _options.ImageColumnName ?? _dense?.FeatureColumnName;
        if (image is not null) ImageColumn.Check(inputSchema, image, _dense?.Model.Architecture.Channels ?? 3, nameof(Options.ImageColumnName));
        if (!inputSchema.TryFindColumn(_options.LabelColumnName, out var label) || !label.IsKey)
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName), $"Label column '{_options.LabelColumnName}' must exist and be a key type (use MapValueToKey).");
        var cols = inputSchema.ToDictionary(c => c.Name);
        foreach (var c in ViTClassificationTrainer.OutputColumns(inputSchema, _options.LabelColumnName)) cols[c.Name] = c;
        return new SchemaShape(cols.Values);
    }

    /// <inheritdoc />
    public MulticlassPredictionTransformer<ViTModelParameters> Fit(IDataView input)
    {
        _host.CheckValue(input, nameof(input));
        var dense = _dense ?? DenseViTLocator.FindUpstreamViT(input) ?? throw new InvalidOperationException(
            "GOHSP could not find the dense ViT: pass the trained model to the catalog method, or append the pruning estimator " +
            "directly after ViTClassification (an AppendCacheCheckpoint in between hides the upstream model).");
        var p = dense.Model;
        var arch = p.Architecture;
        string image = _options.ImageColumnName ?? dense.FeatureColumnName;
        GetOutputSchema(SchemaShape.Create(input.Schema));
        var kind = ImageColumn.Check(input.Schema, image, arch.Channels, arch.ImageSize, nameof(Options.ImageColumnName));
        if (kind != p.InputKind || !input.Schema[image].Type.Equals(p.InputType))
            throw new ArgumentOutOfRangeException(nameof(Options.ImageColumnName),
                $"Image column '{image}' has type {input.Schema[image].Type}; the dense model was trained on {p.InputType}.");
        var labelType = (KeyDataViewType)input.Schema[_options.LabelColumnName].Type;
        if (labelType.GetCountAsInt32(_host) != arch.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName),
                $"Label column '{_options.LabelColumnName}' has {labelType.Count} classes; the dense model has {arch.NumClasses}.");

        using var ch = _host.Start("GOHSP");
        var train = ImageColumn.ReadAll(input, image, _options.LabelColumnName, arch.Channels, arch.ImageSize, out _);
        if (train.Count == 0) throw new ArgumentException("The calibration/training data has no labelled rows.", nameof(input));
        var valid = _options.ValidationSet is null ? null
            : ImageColumn.ReadAll(_options.ValidationSet, image, _options.LabelColumnName, arch.Channels, arch.ImageSize, out _);
        CopyPreprocessing(p.Preprocessing, _options.SoftPruning);
        CopyPreprocessing(p.Preprocessing, _options.FineTune);
        var result = GohspPruner.Run(p.Model, train, valid, _options, line => ch.Info(line), _options.Progress);
        LastReport = result.Report;
        var pruned = p.WithModel(result.Model, result.Report);
        return new MulticlassPredictionTransformer<ViTModelParameters>(_host, pruned, input.Schema, image, _options.LabelColumnName);
    }

    private static void CopyPreprocessing(ViTPreprocessing pre, ViTTrainingOptions o)
    {
        o.PixelScale = pre.PixelScale;
        o.Mean = pre.Mean.ToArray();
        o.Std = pre.Std.ToArray();
    }
}
