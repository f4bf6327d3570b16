using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>The ML.NET side of a pruning estimator's options: columns, validation data and progress.</summary>
public interface IPruningEstimatorOptions
{
    /// <summary>Key-typed label column. Default "Label".</summary>
    string LabelColumnName { get; set; }
    /// <summary>Image column; null uses the dense model's feature column.</summary>
    string? ImageColumnName { get; set; }
    /// <summary>Optional validation data: accuracy after every stage goes into the report.</summary>
    IDataView? ValidationSet { get; set; }
    /// <summary>Optional progress callback for the training stages.</summary>
    IProgress<ViTTrainingProgress>? Progress { get; set; }
}

/// <summary>
/// What every structured-pruning estimator (<see cref="GohspPruningEstimator"/>, <see cref="SompPruningEstimator"/>,
/// <see cref="SgmpPruningEstimator"/>) shares: finding the dense ViT (explicit model, or upstream in the chain via
/// <see cref="DenseViTLocator"/>), schema checks with the column named, reading the images once, copying the dense model's
/// pre-processing into every training stage, and wrapping the pruned model in the same kind of transformer
/// <see cref="ViTClassificationTrainer"/> produces, so Evaluate, Model.Save/Load and PredictionEngine work unchanged.
/// </summary>
/// <typeparam name="TOptions">The method's options with the ML.NET columns.</typeparam>
public abstract class PruningEstimatorBase<TOptions> : IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>
    where TOptions : PruningOptions, IPruningEstimatorOptions
{
    private readonly IHost _host;
    private readonly DenseViT? _dense;
    private readonly string _method;
    private readonly TOptions _options; // the training stages receive the dense model's pre-processing at Fit

    private protected PruningEstimatorBase(IHostEnvironment env, TOptions options, ITransformer? denseModel)
    {
        _host = Contracts.CheckRef(env, nameof(env)).Register(GetType().Name);
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _method = options.Method.ToString().ToUpperInvariant();
        options.Validate();
        if (denseModel is not null)
            _dense = (DenseViTLocator.FindViT(denseModel) is { } t ? new DenseViT(t.Model, DenseViTLocator.ImageColumnOf(t)) : null) ?? throw new ArgumentException(
                $"The model passed to {_method} is a {denseModel.GetType().Name}, not a ViT from Microsoft.ML.Gohsp (expected a MulticlassPredictionTransformer<ViTModelParameters> or a chain that contains one).", nameof(denseModel));
    }

    /// <summary>The report of the last <see cref="Fit"/>.</summary>
    public PruningReport? LastReport { get; private set; }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        _host.CheckValue(inputSchema, nameof(inputSchema));
        // Without an explicit model the image column is the upstream trainer's feature column, known only at Fit.
        string? image = _options.ImageColumnName ?? _dense?.FeatureColumnName;
        if (image is not null) ImageColumn.Check(inputSchema, image, _dense?.Model.Architecture.Channels ?? 3, nameof(IPruningEstimatorOptions.ImageColumnName));
        if (!inputSchema.TryFindColumn(_options.LabelColumnName, out var label) || !label.IsKey)
            throw new ArgumentOutOfRangeException(nameof(IPruningEstimatorOptions.LabelColumnName), $"Label column '{_options.LabelColumnName}' must exist and be a key type (use MapValueToKey).");
        var cols = inputSchema.ToDictionary(c => c.Name);
        foreach (var c in ViTClassificationTrainer.OutputColumns(inputSchema, _options.LabelColumnName)) cols[c.Name] = c;
        return new SchemaShape(cols.Values);
    }

    /// <inheritdoc />
    public MulticlassPredictionTransformer<ViTModelParameters> Fit(IDataView input)
    {
        _host.CheckValue(input, nameof(input));
        _host.CheckAlive();
        _options.Validate(); // options objects are mutable: checked again before any work
        var dense = _dense ?? DenseViTLocator.FindUpstreamViT(input) ?? throw new InvalidOperationException(
            $"{_method} could not find the dense ViT: pass the trained model to the catalog method, or append the pruning estimator " +
            "directly after ViTClassification (an AppendCacheCheckpoint in between hides the upstream model).");
        var p = dense.Model;
        var arch = p.Architecture;
        string image = _options.ImageColumnName ?? dense.FeatureColumnName;
        string labelName = _options.LabelColumnName;
        GetOutputSchema(SchemaShape.Create(input.Schema));
        var kind = ImageColumn.Check(input.Schema, image, arch.Channels, arch.ImageSize, nameof(IPruningEstimatorOptions.ImageColumnName));
        if (kind != p.InputKind || !input.Schema[image].Type.Equals(p.InputType))
            throw new ArgumentOutOfRangeException(nameof(IPruningEstimatorOptions.ImageColumnName),
                $"Image column '{image}' has type {input.Schema[image].Type}; the dense model was trained on {p.InputType}.");
        var labelType = (KeyDataViewType)input.Schema[labelName].Type;
        if (labelType.GetCountAsInt32(_host) != arch.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(IPruningEstimatorOptions.LabelColumnName),
                $"Label column '{labelName}' has {labelType.Count} classes; the dense model has {arch.NumClasses}.");

        // a latency target is checked against the dense model's estimate (measuring this machine's table once) before the data is read
        PruningBudget.Resolve(_options, arch);
        using var ch = _host.Start(_method);
        if (_dense is null && p.PruningReport is null)
            ch.Warning("{0} prunes the ViT trained upstream in this chain; the chain keeps that dense ViT too, and saves it. " +
                "To keep only the pruned model, pass the trainer instead: mlContext.Transforms.{1}(options, mlContext.MulticlassClassification.Trainers.ViTClassification(...)).",
                _method, _method switch { "GOHSP" => "GohspPrune", "SOMP" => "SompPrune", "SGMP" => "SgmpPrune", _ => "GohspPrune" });
        var train = ImageColumn.ReadAll(input, image, labelName, arch.Channels, arch.ImageSize, out _);
        if (train.Count == 0) throw new ArgumentException("The calibration/training data has no labelled rows.", nameof(input));
        var valid = _options.ValidationSet is null ? null
            : ImageColumn.ReadAll(_options.ValidationSet, image, labelName, arch.Channels, arch.ImageSize, out _);
        foreach (var (_, stage) in _options.TrainingStages) CopyPreprocessing(p.Preprocessing, stage);
        // MLContext.CancelExecution() stops the run within one optimiser step: every stage reports progress through the options.
        var userProgress = _options.Progress;
        PruningResult result;
        using (var cancellation = new HostCancellation(_host, userProgress))
        {
            _options.Progress = cancellation;
            try { result = Prune(p, train, valid, _options, line => ch.Info(line)); }
            finally { _options.Progress = userProgress; }
        }
        LastReport = result.Report;
        var pruned = p.WithModel(result.Model, result.Report);
        return MLNetInternals.PredictionTransformer(_host, pruned, input.Schema, image, labelName);
    }

    /// <summary>
    /// Runs the pruning method on <paramref name="input"/>'s model (not modified) and returns the new model with its report.
    /// The default runs the whole method the options configure; the GOHSP stage estimators run one stage.
    /// </summary>
    private protected virtual PruningResult Prune(ViTModelParameters input, ImageTensorData train, ImageTensorData? validation, TOptions options,
        Action<string> log)
        => PruningProtocol.Run(input.Model, train, validation, options, log, options.Progress);

    private static void CopyPreprocessing(ViTPreprocessing pre, ViTTrainingOptions? o)
    {
        if (o is null) return; // reported by the run's option checks
        o.PixelScale = pre.PixelScale;
        o.Mean = pre.Mean.ToArray();
        o.Std = pre.Std.ToArray();
    }
}
