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
    /// <summary>
    /// Optional teacher: a column of class probabilities per image (a known-size Single vector of the class count, e.g. the
    /// <c>Score</c> column of any upstream ML.NET multiclass model trained on the same label). Every stage that trains
    /// distils from it, with the loss α·T²·KL(teacher ‖ student) + (1 − α)·CE(label) and α, T taken from that stage's
    /// <see cref="ViTTrainingOptions.TeacherWeight"/> and <see cref="ViTTrainingOptions.TeacherTemperature"/>. Read once
    /// with the images before the run (with augmentation the teacher saw the un-augmented image). It replaces the dense-model
    /// teacher: setting it together with <see cref="PruningOptions.Distillation"/> is refused. Null (default): no teacher.
    /// </summary>
    string? TeacherScoreColumnName { get; set; }
    /// <summary>Optional progress callback for the training stages.</summary>
    IProgress<ViTTrainingProgress>? Progress { get; set; }
}

/// <summary>
/// What every structured-pruning estimator (<see cref="PruningEstimator"/> for any method, and
/// <see cref="GohspPruningEstimator"/>, <see cref="SompPruningEstimator"/>, <see cref="SgmpPruningEstimator"/> and the GOHSP
/// stage estimators) shares: finding the dense ViT (explicit model, or upstream in the chain via
/// <see cref="ViTLocator"/>), schema checks with the column named, reading the images once, copying the dense model's
/// pre-processing into every training stage, running the method (<see cref="PruningOptions.CreateMethod"/>) and wrapping
/// the pruned model in the same kind of transformer <see cref="ViTClassificationTrainer"/> produces, so Evaluate,
/// Model.Save/Load and PredictionEngine work unchanged. An estimator is composed of the ML.NET settings
/// (<see cref="IPruningEstimatorOptions"/>) and the method's options (<see cref="PruningOptions"/>); the built-in estimators'
/// <c>Options</c> are both in one object.
/// </summary>
/// <typeparam name="TOptions">The estimator's options: the ML.NET settings, holding or being the method's options.</typeparam>
public abstract class PruningEstimatorBase<TOptions> : IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>
    where TOptions : class, IPruningEstimatorOptions
{
    private readonly IHost _host;
    private readonly FoundViT? _dense;
    private readonly string _method;
    private readonly string _catalogEntry;
    private readonly TOptions _options;
    private readonly PruningOptions _methodOptions; // the training stages receive the dense model's pre-processing at Fit

    private protected PruningEstimatorBase(IHostEnvironment env, TOptions options, PruningOptions methodOptions, string catalogEntry,
        ITransformer? denseModel)
    {
        _host = Contracts.CheckRef(env, nameof(env)).Register(GetType().Name);
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _methodOptions = methodOptions ?? throw new ArgumentNullException(nameof(options), "The pruning method's options must be set.");
        _method = methodOptions.CreateMethod().Name.ToUpperInvariant();
        _catalogEntry = catalogEntry;
        methodOptions.Validate();
        if (denseModel is not null)
            _dense = (ViTLocator.FindViT(denseModel) is { } t ? new FoundViT(t.Model, ViTLocator.ImageColumnOf(t)) : null) ?? throw new ArgumentException(
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
        if (_options.TeacherScoreColumnName is { } teacher)
        {
            CheckTeacherOptions(teacher);
            TeacherColumn.Check(inputSchema, teacher, nameof(IPruningEstimatorOptions.TeacherScoreColumnName));
        }
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
        _methodOptions.Validate(); // options objects are mutable: checked again before any work
        var dense = _dense ?? ViTLocator.FindUpstreamViT(input, _method) ?? throw new InvalidOperationException(
            $"{_method} could not find the dense ViT: pass the trained model to the catalog method, or append the pruning estimator " +
            "directly after ViTClassification (an AppendCacheCheckpoint in between hides the upstream model).");
        var p = dense.Model;
        var arch = p.Architecture;
        string image = _options.ImageColumnName ?? dense.FeatureColumnName;
        string labelName = _options.LabelColumnName;
        CheckColumns(input.Schema, p, image, labelName);

        // a latency target is checked against the dense model's estimate (measuring this machine's table once) before the data is read
        PruningBudget.Resolve(_methodOptions, arch);
        using var ch = _host.Start(_method);
        if (_dense is null && p.PruningReport is null)
            ch.Warning("{0} prunes the ViT trained upstream in this chain; the chain keeps that dense ViT too, and saves it. " +
                "To keep only the pruned model, pass the trainer instead: mlContext.Transforms.{1}(options, mlContext.MulticlassClassification.Trainers.ViTClassification(...)).",
                _method, _catalogEntry);
        string? teacher = _options.TeacherScoreColumnName;
        if (teacher is not null) TeacherColumn.Check(input.Schema, teacher, arch.NumClasses, labelName, nameof(IPruningEstimatorOptions.TeacherScoreColumnName));
        var train = ImageColumn.ReadAll(input, image, labelName, arch.Channels, arch.ImageSize, out _, teacher, arch.NumClasses);
        if (train.Count == 0) throw new ArgumentException("The calibration/training data has no labelled rows.", nameof(input));
        var valid = _options.ValidationSet is null ? null
            : ImageColumn.ReadAll(_options.ValidationSet, image, labelName, arch.Channels, arch.ImageSize, out _);
        foreach (var (_, stage) in _methodOptions.TrainingStages) CopyPreprocessing(p.Preprocessing, stage);
        // MLContext.CancelExecution() stops the run within one optimiser step: every stage reports progress through the context.
        PruningResult result;
        using (var cancellation = new HostCancellation(_host, _options.Progress))
        {
            var context = new PruningContext(p.Model, train, valid)
            {
                Log = line => ch.Info(line), Progress = cancellation, CancellationToken = cancellation.Token,
            };
            result = Prune(p, context, _options);
        }
        LastReport = result.Report;
        var pruned = p.WithModel(result.Model, result.Report);
        return MLNetInternals.PredictionTransformer(_host, pruned, input.Schema, image, labelName);
    }

    private void CheckTeacherOptions(string teacher)
    {
        if (string.IsNullOrWhiteSpace(teacher) || teacher == _options.LabelColumnName || teacher == _options.ImageColumnName)
            throw new ArgumentException($"TeacherScoreColumnName '{teacher}' must name a column of class probabilities, other than the image and label columns; null for no teacher.",
                nameof(IPruningEstimatorOptions.TeacherScoreColumnName));
        if (_methodOptions.Distillation)
            throw new ArgumentException($"TeacherScoreColumnName '{teacher}' and Distillation (the dense model as teacher) are two teachers: a teacher column replaces " +
                "the dense-model teacher, so set Distillation = false, or remove TeacherScoreColumnName.", nameof(IPruningEstimatorOptions.TeacherScoreColumnName));
    }

    private void CheckColumns(DataViewSchema schema, ViTModelParameters p, string image, string labelName)
    {
        var arch = p.Architecture;
        GetOutputSchema(SchemaShape.Create(schema));
        var kind = ImageColumn.Check(schema, image, arch.Channels, arch.ImageSize, nameof(IPruningEstimatorOptions.ImageColumnName));
        if (kind != p.InputKind || !schema[image].Type.Equals(p.InputType))
            throw new ArgumentOutOfRangeException(nameof(IPruningEstimatorOptions.ImageColumnName),
                $"Image column '{image}' has type {schema[image].Type}; the dense model was trained on {p.InputType}.");
        var labelType = (KeyDataViewType)schema[labelName].Type;
        if (labelType.GetCountAsInt32(_host) != arch.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(IPruningEstimatorOptions.LabelColumnName),
                $"Label column '{labelName}' has {labelType.Count} classes; the dense model has {arch.NumClasses}.");
    }

    /// <summary>
    /// Runs the pruning method on <paramref name="input"/>'s model (the context's model; not modified) and returns the new
    /// model with its report. The default runs the whole method of the options (<see cref="PruningOptions.CreateMethod"/>);
    /// the GOHSP stage estimators run one stage.
    /// </summary>
    private protected virtual PruningResult Prune(ViTModelParameters input, PruningContext context, TOptions options)
        => PruningProtocol.Run(context, _methodOptions);

    private static void CopyPreprocessing(ViTPreprocessing pre, ViTTrainingOptions? o)
    {
        if (o is null) return; // reported by the run's option checks
        o.PixelScale = pre.PixelScale;
        o.Mean = pre.Mean.ToArray();
        o.Std = pre.Std.ToArray();
    }
}
