using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// What every structured-pruning estimator (<see cref="PruningEstimator"/> for any method, and
/// <see cref="GohspPruningEstimator"/>, <see cref="SompPruningEstimator"/>, <see cref="SgmpPruningEstimator"/> and the GOHSP
/// stage estimators) shares: finding the dense ViT (explicit model, or upstream in the chain via
/// <see cref="ViTLocator"/>), schema checks with the column named, reading the images once, copying the dense model's
/// pre-processing into every training stage, running the method (<see cref="PruningOptions.CreateMethod"/>) and wrapping
/// the pruned model in the same kind of transformer <see cref="ViTClassificationTrainer"/> produces, so Evaluate,
/// Model.Save/Load and PredictionEngine work unchanged. Its options are the method's options (<see cref="PruningOptions"/>),
/// which carry the columns, validation data and progress the estimator reads.
/// </summary>
/// <typeparam name="TOptions">The method's options.</typeparam>
public abstract class PruningEstimatorBase<TOptions> : IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>
    where TOptions : PruningOptions
{
    private readonly IHost _host;
    private readonly FoundViT? _dense;
    private readonly string _method;
    private readonly string _catalogEntry;
    private readonly TOptions _options; // the training stages receive the dense model's pre-processing at Fit

    private protected PruningEstimatorBase(IHostEnvironment env, TOptions options, string catalogEntry, ITransformer? denseModel)
    {
        _host = Contracts.CheckRef(env, nameof(env)).Register(GetType().Name);
        _options = options ?? throw new ArgumentNullException(nameof(options), "The pruning method's options must be set.");
        _method = options.CreateMethod().Name.ToUpperInvariant();
        _catalogEntry = catalogEntry;
        options.Validate();
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
        if (image is not null) ImageColumn.Check(inputSchema, image, _dense?.Model.Architecture.Channels ?? 3, nameof(PruningOptions.ImageColumnName));
        if (_options.TeacherScoreColumnName is { } teacher)
        {
            CheckTeacherOptions(teacher);
            TeacherColumn.Check(inputSchema, teacher, nameof(PruningOptions.TeacherScoreColumnName));
        }
        if (!inputSchema.TryFindColumn(_options.LabelColumnName, out var label) || !label.IsKey)
            throw new ArgumentOutOfRangeException(nameof(PruningOptions.LabelColumnName), $"Label column '{_options.LabelColumnName}' must exist and be a key type (use MapValueToKey).");
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
        var dense = _dense ?? ViTLocator.FindUpstreamViT(input, _method) ?? throw new InvalidOperationException(
            $"{_method} could not find the dense ViT: pass the trained model to the catalog method, or append the pruning estimator " +
            "directly after ViTClassification (an AppendCacheCheckpoint in between hides the upstream model).");
        var p = dense.Model;
        var arch = p.Architecture;
        string image = _options.ImageColumnName ?? dense.FeatureColumnName;
        string labelName = _options.LabelColumnName;
        CheckColumns(input.Schema, p, image, labelName);

        // a latency target is checked against the dense model's estimate (measuring this machine's table once) before the data is read
        PruningBudget.Resolve(_options, arch);
        using var ch = _host.Start(_method);
        if (_dense is null && p.PruningReport is null)
            ch.Warning("{0} prunes the ViT trained upstream in this chain; the chain keeps that dense ViT too, and saves it. " +
                "To keep only the pruned model, pass the trainer instead: mlContext.Transforms.{1}(options, mlContext.MulticlassClassification.Trainers.ViTClassification(...)).",
                _method, _catalogEntry);
        string? teacher = _options.TeacherScoreColumnName;
        if (teacher is not null) TeacherColumn.Check(input.Schema, teacher, arch.NumClasses, labelName, nameof(PruningOptions.TeacherScoreColumnName));
        var train = ImageColumn.ReadAll(input, image, labelName, arch.Channels, arch.ImageSize, out _, teacher, arch.NumClasses);
        if (train.Count == 0) throw new ArgumentException("The calibration/training data has no labelled rows.", nameof(input));
        var valid = _options.ValidationSet is null ? null
            : ImageColumn.ReadAll(_options.ValidationSet, image, labelName, arch.Channels, arch.ImageSize, out _);
        foreach (var (_, stage) in _options.TrainingStages) CopyPreprocessing(p.Preprocessing, stage);
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
                nameof(PruningOptions.TeacherScoreColumnName));
        if (_options.Distillation)
            throw new ArgumentException($"TeacherScoreColumnName '{teacher}' and Distillation (the dense model as teacher) are two teachers: a teacher column replaces " +
                "the dense-model teacher, so set Distillation = false, or remove TeacherScoreColumnName.", nameof(PruningOptions.TeacherScoreColumnName));
    }

    private void CheckColumns(DataViewSchema schema, ViTModelParameters p, string image, string labelName)
    {
        var arch = p.Architecture;
        GetOutputSchema(SchemaShape.Create(schema));
        var kind = ImageColumn.Check(schema, image, arch.Channels, arch.ImageSize, nameof(PruningOptions.ImageColumnName));
        if (kind != p.InputKind || !schema[image].Type.Equals(p.InputType))
            throw new ArgumentOutOfRangeException(nameof(PruningOptions.ImageColumnName),
                $"Image column '{image}' has type {schema[image].Type}; the dense model was trained on {p.InputType}.");
        var labelType = (KeyDataViewType)schema[labelName].Type;
        if (labelType.GetCountAsInt32(_host) != arch.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(PruningOptions.LabelColumnName),
                $"Label column '{labelName}' has {labelType.Count} classes; the dense model has {arch.NumClasses}.");
    }

    /// <summary>
    /// Runs the pruning method on <paramref name="input"/>'s model (the context's model; not modified) and returns the new
    /// model with its report. The default runs the whole method of the options (<see cref="PruningOptions.CreateMethod"/>);
    /// the GOHSP stage estimators run one stage.
    /// </summary>
    private protected virtual PruningResult Prune(ViTModelParameters input, PruningContext context, TOptions options)
        => PruningProtocol.Run(context, options);

    private static void CopyPreprocessing(ViTPreprocessing pre, ViTTrainingOptions? o)
    {
        if (o is null) return; // reported by the run's option checks
        o.PixelScale = pre.PixelScale;
        o.Mean = pre.Mean.ToArray();
        o.Std = pre.Std.ToArray();
    }
}
