using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Platform;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.Runtime;
using Microsoft.ML.Trainers;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// Trains a vision transformer (ViT/DeiT family, TorchSharp) for multiclass image classification inside an
/// ML.NET pipeline. Input: an <see cref="MLImage"/> column or a planar float vector column
/// (<c>ExtractPixels(interleavePixelColors: false)</c>) and a key-typed label. Output: <c>Score</c> (class
/// probabilities with the label's key values as slot names) and <c>PredictedLabel</c>. The result is a standard
/// <see cref="MulticlassPredictionTransformer{TModel}"/>, so <c>Evaluate</c>, <c>Model.Save</c>/<c>Model.Load</c>
/// and <c>CreatePredictionEngine</c> work as with any ML.NET trainer.
/// </summary>
public sealed class ViTClassificationTrainer :
    TrainerEstimatorBase<MulticlassPredictionTransformer<ViTModelParameters>, ViTModelParameters>,
    IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>
{
    internal const string LoadName = "ViTClassification";

    /// <summary>Options of <see cref="ViTClassificationTrainer"/>.</summary>
    public sealed class Options : ViTTrainingOptions
    {
        /// <summary>Name of the key-typed label column. Default "Label".</summary>
        public string LabelColumnName { get; set; } = DefaultColumnNames.Label;

        /// <summary>Name of the image column: MLImage, or a known-size float vector of planar CHW pixels. Default "Image".</summary>
        public string ImageColumnName { get; set; } = "Image";

        /// <summary>
        /// Architecture preset (see <see cref="ViTArchitecture.PresetNames"/>) used when <see cref="Architecture"/>
        /// is null. Default "cifar-tiny" (32×32, patch 4, 192 wide, 6 blocks, 3 heads).
        /// </summary>
        public string ArchitecturePreset { get; set; } = "cifar-tiny";

        /// <summary>An explicit architecture (its class count is replaced by the label's key count). Overrides <see cref="ArchitecturePreset"/>.</summary>
        public ViTArchitecture? Architecture { get; set; }

        /// <summary>Image size fed to the model (images are resized to it); null keeps the architecture's. Must be divisible by the patch size.</summary>
        public int? ImageSize { get; set; }

        /// <summary>
        /// Optional teacher: a column of class probabilities per image, a known-size Single vector of the label's class count
        /// (e.g. the <c>Score</c> column of any ML.NET multiclass model applied upstream, trained on the same key-typed label).
        /// When set, the loss is α·T²·KL(teacher ‖ student, at temperature T) + (1 − α)·CE(label) with α =
        /// <see cref="ViTTrainingOptions.TeacherWeight"/> and T = <see cref="ViTTrainingOptions.TeacherTemperature"/>. The
        /// column is read once with the images before training (the teacher is not run again), so with random crop/flip the
        /// teacher's probabilities are those of the un-augmented image. Each row must be a probability vector (non-negative,
        /// finite, summing to 1 ± 1e-3); anything else is refused at <c>Fit</c>, naming the column. Not needed at prediction
        /// time. Null (default): no teacher.
        /// </summary>
        public string? TeacherScoreColumnName { get; set; }

        /// <summary>Optional validation data (same columns); its accuracy is logged after every epoch.</summary>
        public IDataView? ValidationSet { get; set; }

        /// <summary>Optional callback receiving progress after every step and epoch.</summary>
        public IProgress<ViTTrainingProgress>? Progress { get; set; }

        /// <summary>
        /// Optional pretrained checkpoint to start from (timm or Hugging Face ViT/DeiT naming; <c>.safetensors</c> recommended,
        /// or a PyTorch <c>.pth</c>/<c>.bin</c> state dict, loaded behind an allow-list — see docs/interop.md). Its architecture
        /// replaces <see cref="ArchitecturePreset"/>; the classifier head is replaced when the label has a different class
        /// count, and the position embedding is resampled when <see cref="ImageSize"/> differs from the checkpoint's. Set
        /// <see cref="ViTTrainingOptions.Mean"/>/<see cref="ViTTrainingOptions.Std"/> to the normalisation the checkpoint was
        /// trained with (<see cref="PretrainedViT.ImageNetMean"/> for DeiT, <see cref="PretrainedViT.InceptionMean"/> for the original ViT).
        /// </summary>
        public string? PretrainedWeightsPath { get; set; }

        /// <summary>
        /// Attention heads of the pretrained model (tensors cannot tell). Null: a Hugging Face <c>config.json</c> beside the
        /// checkpoint, else timm's convention by width (192→3, 384→6, 768→12). See <see cref="PretrainedImportOptions.Heads"/>.
        /// </summary>
        public int? PretrainedHeads { get; set; }

        /// <summary>
        /// A pretrained model on the Hugging Face hub to start from, by name: <c>[hf:]org/name[@revision]</c>, e.g.
        /// <c>timm/deit_small_patch16_224.fb_in1k</c> or <c>facebook/deit-small-patch16-224</c> (revision <c>main</c> by default).
        /// Its <c>model.safetensors</c> (else <c>pytorch_model.bin</c>) and config files are downloaded into the hub's cache
        /// when the trainer is created, or taken from the cache (see <see cref="Hub"/>); then it is used as
        /// <see cref="PretrainedWeightsPath"/> would be. Set one of the two.
        /// </summary>
        public string? PretrainedModel { get; set; }

        /// <summary>
        /// Where <see cref="PretrainedModel"/> is downloaded from and cached. Null: <see cref="HubOptions.FromEnvironment"/>
        /// (<c>HF_ENDPOINT</c>, <c>HF_HOME</c>/<c>HF_HUB_CACHE</c>, <c>HF_HUB_OFFLINE</c>, <c>HF_TOKEN</c>).
        /// </summary>
        public HubOptions? Hub { get; set; }

        private (string Key, ViTArchitecture Arch)? _pretrained;
        private (string Name, string Cache, string Path)? _downloaded;

        /// <summary>Receives the download's log lines (the trainer's channel); null: none.</summary>
        internal Action<string>? DownloadLog { get; set; }

        /// <summary>The checkpoint file: <see cref="PretrainedWeightsPath"/>, or <see cref="PretrainedModel"/> downloaded (once per name and cache).</summary>
        internal string? PretrainedCheckpoint()
        {
            if (PretrainedModel is null) return PretrainedWeightsPath;
            var hub = Hub ?? HubOptions.FromEnvironment();
            var name = HubModelName.Parse(PretrainedModel, nameof(PretrainedModel));
            if (_downloaded is { } d && d.Name == name.ToString() && d.Cache == hub.CacheDirectory && File.Exists(d.Path)) return d.Path;
            string path = HuggingFaceHub.DownloadModel(name, hub, DownloadLog);
            _downloaded = (name.ToString(), hub.CacheDirectory, path);
            return path;
        }

        /// <summary>The architecture stored in the pretrained checkpoint (read once per file version).</summary>
        private ViTArchitecture PretrainedArchitecture()
        {
            var path = PretrainedCheckpoint()!;
            var info = new FileInfo(path);
            if (!info.Exists) throw new FileNotFoundException($"PretrainedWeightsPath '{path}' was not found.", path);
            string key = $"{info.FullName}|{info.LastWriteTimeUtc.Ticks}|{info.Length}|{PretrainedHeads}";
            if (_pretrained is { } c && c.Key == key) return c.Arch;
            // NumClasses = 2 only so that a checkpoint without a head can be inspected; the class count comes from the label.
            var arch = PretrainedViT.ReadArchitecture(path, new PretrainedImportOptions { Heads = PretrainedHeads, NumClasses = 2 });
            _pretrained = (key, arch);
            return arch;
        }

        /// <summary>The architecture to train for <paramref name="numClasses"/> classes.</summary>
        public ViTArchitecture ResolveArchitecture(int numClasses)
        {
            var a = PretrainedWeightsPath is not null || PretrainedModel is not null ? PretrainedArchitecture()
                : Architecture ?? ViTArchitecture.FromPreset(ArchitecturePreset, Math.Max(numClasses, 2));
            a = a.WithNumClasses(Math.Max(numClasses, 2));
            if (ImageSize is int s && s != a.ImageSize)
            {
                if (s <= 0) throw new ArgumentOutOfRangeException(nameof(ImageSize), s, "ImageSize must be positive.");
                if (s % a.PatchSize != 0)
                    throw new ArgumentOutOfRangeException(nameof(ImageSize), s, $"ImageSize ({s}) must be divisible by the patch size ({a.PatchSize}).");
                a = a.WithImageSize(s);
            }
            return a;
        }

        /// <summary>Validates everything that can be checked without data.</summary>
        public void ValidateOptions()
        {
            if (string.IsNullOrWhiteSpace(LabelColumnName)) throw new ArgumentException("LabelColumnName must be set.", nameof(LabelColumnName));
            if (string.IsNullOrWhiteSpace(ImageColumnName)) throw new ArgumentException("ImageColumnName must be set.", nameof(ImageColumnName));
            if (PretrainedWeightsPath is not null && PretrainedModel is not null)
                throw new ArgumentException("Set either PretrainedWeightsPath (a file) or PretrainedModel (a Hugging Face hub name), not both.", nameof(PretrainedModel));
            if (PretrainedModel is not null)
            {
                if (Architecture is not null)
                    throw new ArgumentException("Set either Architecture or PretrainedModel: a pretrained model brings its own architecture.", nameof(Architecture));
                HubModelName.Parse(PretrainedModel, nameof(PretrainedModel));
            }
            if (PretrainedWeightsPath is not null || PretrainedModel is not null)
                if (PretrainedHeads is int h && h < 1) throw new ArgumentOutOfRangeException(nameof(PretrainedHeads), h, "PretrainedHeads must be positive.");
            if (TeacherScoreColumnName is { } teacher && (string.IsNullOrWhiteSpace(teacher) || teacher == ImageColumnName || teacher == LabelColumnName))
                throw new ArgumentException($"TeacherScoreColumnName '{teacher}' must name a column of class probabilities, other than the image and label columns; null for no teacher.",
                    nameof(TeacherScoreColumnName));
            if (PretrainedWeightsPath is not null)
            {
                if (Architecture is not null)
                    throw new ArgumentException("Set either Architecture or PretrainedWeightsPath: a pretrained checkpoint brings its own architecture.", nameof(Architecture));
                if (!File.Exists(PretrainedWeightsPath))
                    throw new FileNotFoundException($"PretrainedWeightsPath '{PretrainedWeightsPath}' was not found.", PretrainedWeightsPath);
            }
            var a = ResolveArchitecture(2);
            Validate(a.Channels);
        }
    }

    private static readonly TrainerInfo _info = new(normalization: false, caching: false);
    private readonly Options _options;

    /// <inheritdoc />
    public override PredictionKind PredictionKind => PredictionKind.MulticlassClassification;

    /// <inheritdoc />
    public override TrainerInfo Info => _info;

    internal ViTClassificationTrainer(IHostEnvironment env, Options options)
        : base(Contracts.CheckRef(env, nameof(env)).Register(LoadName),
            TrainerUtils.MakeR4VecFeature(options?.ImageColumnName ?? "Image"),
            TrainerUtils.MakeU4ScalarColumn(options?.LabelColumnName ?? DefaultColumnNames.Label))
    {
        Host.CheckValue(options, nameof(options));
        _options = options!;
        ValidateOptions();
    }

    /// <summary><see cref="Options.ValidateOptions"/>, with a download of <see cref="Options.PretrainedModel"/> logged to this trainer's channel.</summary>
    private void ValidateOptions()
    {
        using var ch = Host.Start("Options");
        _options.DownloadLog = line => ch.Info(line);
        try { _options.ValidateOptions(); }
        finally { _options.DownloadLog = null; }
    }

    /// <summary>The options this trainer was created with.</summary>
    public Options TrainerOptions => _options;

    /// <summary>
    /// Checks the input schema and returns the output schema (adds <c>Score</c> and <c>PredictedLabel</c>). Throws
    /// <see cref="ArgumentOutOfRangeException"/> naming the column when the image or label column is missing or of the wrong type.
    /// </summary>
    public new SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        Host.CheckValue(inputSchema, nameof(inputSchema));
        var arch = _options.ResolveArchitecture(2);
        ImageColumn.Check(inputSchema, _options.ImageColumnName, arch.Channels, nameof(Options.ImageColumnName));
        if (_options.TeacherScoreColumnName is { } teacher) TeacherColumn.Check(inputSchema, teacher, nameof(Options.TeacherScoreColumnName));
        if (!inputSchema.TryFindColumn(_options.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName), $"Label column '{_options.LabelColumnName}' was not found in the input schema.");
        if (!label.IsKey || label.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName),
                $"Label column '{_options.LabelColumnName}' has type {label.GetTypeString()}; expected a key type (use MapValueToKey).");
        var outColumns = inputSchema.ToDictionary(c => c.Name);
        foreach (var c in GetOutputColumnsCore(inputSchema)) outColumns[c.Name] = c;
        return new SchemaShape(outColumns.Values);
    }

    SchemaShape IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>.GetOutputSchema(SchemaShape inputSchema) => GetOutputSchema(inputSchema);

    /// <summary>Trains the model. Input problems (missing/mistyped columns, wrong sizes, no rows, NaN/∞ pixels) throw before any training.</summary>
    public new MulticlassPredictionTransformer<ViTModelParameters> Fit(IDataView input) => Fit(input, null);

    /// <summary>
    /// Continues training an existing model (ML.NET's warm-start convention, as in
    /// <c>LbfgsMaximumEntropyMulticlassTrainer.Fit(trainData, modelParameters)</c>): a copy of
    /// <paramref name="modelParameters"/>' weights is trained for <see cref="ViTTrainingOptions.Epochs"/> more epochs with this
    /// trainer's options (a fresh AdamW and learning-rate schedule); the given model is not modified. The model's own
    /// architecture — dense or pruned — is kept, so <see cref="Options.ArchitecturePreset"/>, <see cref="Options.Architecture"/>
    /// and <see cref="Options.ImageSize"/> are ignored; its pixel pre-processing must equal the options'
    /// (<see cref="ViTTrainingOptions.PixelScale"/>, <see cref="ViTTrainingOptions.Mean"/>, <see cref="ViTTrainingOptions.Std"/>).
    /// </summary>
    /// <param name="trainData">Training data with the same image and label columns as the model was trained on.</param>
    /// <param name="modelParameters">The model to start from (e.g. <c>transformer.Model</c> of a trained or loaded ViT); null trains from scratch.</param>
    public MulticlassPredictionTransformer<ViTModelParameters> Fit(IDataView trainData, ViTModelParameters? modelParameters)
    {
        Host.CheckValue(trainData, nameof(trainData));
        Host.CheckAlive();
        // The options object is mutable: check it again, and the device, before any data is read.
        ValidateOptions();
        TorchDevices.Resolve(_options.Device);
        var input = trainData;
        GetOutputSchema(SchemaShape.Create(input.Schema));
        var labelType = input.Schema[_options.LabelColumnName].Type as KeyDataViewType;
        var arch = modelParameters?.Architecture ?? _options.ResolveArchitecture(labelType!.GetCountAsInt32(Host));
        ImageColumn.Check(input.Schema, _options.ImageColumnName, arch.Channels, arch.ImageSize, nameof(Options.ImageColumnName));
        if (_options.TeacherScoreColumnName is { } teacher)
            TeacherColumn.Check(input.Schema, teacher, arch.NumClasses, _options.LabelColumnName, nameof(Options.TeacherScoreColumnName));
        if (_options.ValidationSet is not null)
            ImageColumn.Check(_options.ValidationSet.Schema, _options.ImageColumnName, arch.Channels, arch.ImageSize, nameof(Options.ValidationSet));
        if (modelParameters is not null)
        {
            if (_options.PretrainedWeightsPath is not null || _options.PretrainedModel is not null)
                throw new ArgumentException("Give either a model to continue training or PretrainedWeightsPath/PretrainedModel, not both.", nameof(Options.PretrainedWeightsPath));
            CheckWarmStart(modelParameters, input.Schema, labelType!);
        }
        // What TrainerEstimatorBase.TrainTransformer does, minus its float-vector-only feature check.
        var roles = new RoleMappedData(input, label: _options.LabelColumnName, feature: _options.ImageColumnName);
        var model = TrainModelCore(new TrainContext(roles, initialPredictor: modelParameters));
        return MakeTransformer(model, input.Schema);
    }

    private void CheckWarmStart(ViTModelParameters init, DataViewSchema schema, KeyDataViewType labelType)
    {
        int classes = labelType.GetCountAsInt32(Host);
        if (classes != init.Architecture.NumClasses)
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName),
                $"Label column '{_options.LabelColumnName}' has {classes} classes; the model to continue training has {init.Architecture.NumClasses}.");
        var type = schema[_options.ImageColumnName].Type;
        if (!type.Equals(init.InputType))
            throw new ArgumentOutOfRangeException(nameof(Options.ImageColumnName),
                $"Image column '{_options.ImageColumnName}' has type {type}; the model to continue training was trained on {init.InputType}.");
        var p = init.Preprocessing;
        if (p.PixelScale != _options.PixelScale || !p.Mean.SequenceEqual(_options.Mean) || !p.Std.SequenceEqual(_options.Std))
            throw new ArgumentException(
                $"The model to continue training normalises pixels with PixelScale {p.PixelScale}, Mean [{string.Join(", ", p.Mean)}], Std [{string.Join(", ", p.Std)}]; " +
                "set the trainer's PixelScale, Mean and Std to the same values.", nameof(Options.PixelScale));
    }

    MulticlassPredictionTransformer<ViTModelParameters> IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>.Fit(IDataView input) => Fit(input);

    /// <inheritdoc />
    public override SchemaShape.Column[] GetOutputColumnsCore(SchemaShape inputSchema) => OutputColumns(inputSchema, LabelColumn.Name);

    /// <summary>Score and PredictedLabel columns of a ViT multiclass predictor (shared with the pruning estimators).</summary>
    internal static SchemaShape.Column[] OutputColumns(SchemaShape inputSchema, string labelColumnName)
    {
        inputSchema.TryFindColumn(labelColumnName, out var labelCol);
        var predLabelMetadata = new SchemaShape(labelCol.Annotations.Where(x => x.Name == AnnotationUtils.Kinds.KeyValues)
            .Concat(AnnotationUtils.GetTrainerOutputAnnotation()));
        return
        [
            new SchemaShape.Column(DefaultColumnNames.Score, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, false,
                new SchemaShape(AnnotationUtils.AnnotationsForMulticlassScoreColumn(labelCol))),
            new SchemaShape.Column(DefaultColumnNames.PredictedLabel, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, true,
                predLabelMetadata),
        ];
    }

    /// <inheritdoc />
    public override MulticlassPredictionTransformer<ViTModelParameters> MakeTransformer(ViTModelParameters model, DataViewSchema trainSchema)
        => MLNetInternals.PredictionTransformer(Host, model, trainSchema, FeatureColumn.Name, LabelColumn.Name);

    /// <inheritdoc />
    public override ViTModelParameters TrainModelCore(TrainContext context)
    {
        Host.CheckValue(context, nameof(context));
        var data = context.TrainingSet.Data;
        var o = _options;
        var labelType = (KeyDataViewType)data.Schema[o.LabelColumnName].Type;
        int numClasses = labelType.GetCountAsInt32(Host);
        if (numClasses < 2)
            throw new ArgumentOutOfRangeException(nameof(Options.LabelColumnName), $"Label column '{o.LabelColumnName}' has {numClasses} key value(s); at least 2 classes are needed.");
        var init = context.InitialPredictor switch
        {
            null => null,
            ViTModelParameters v => v,
            var other => throw new ArgumentException($"A ViT can only continue training a ViTModelParameters, not a {other.GetType().Name}.", "modelParameters"),
        };
        var arch = init?.Architecture ?? o.ResolveArchitecture(numClasses);

        using var ch = Host.Start("Training");
        using var cancellation = new HostCancellation(Host, o.Progress);
        var train = ImageColumn.ReadAll(data, o.ImageColumnName, o.LabelColumnName, arch.Channels, arch.ImageSize, out int skipped,
            o.TeacherScoreColumnName, arch.NumClasses);
        if (skipped > 0) ch.Warning("{0} row(s) with a missing label were skipped.", skipped);
        if (train.Count == 0)
            throw new ArgumentException($"The training data has no rows with a label (column '{o.LabelColumnName}'); nothing to train on.", "input");
        int seen = train.Labels.Distinct().Count();
        if (seen < numClasses)
            ch.Warning("Label column '{0}' has {1} key values, but only {2} of them occur in the training data; the model scores all {1} " +
                "classes and learns to give the {3} unseen one(s) low probabilities.", o.LabelColumnName, numClasses, seen, numClasses - seen);
        cancellation.Check();

        ImageTensorData? valid = null;
        var validView = o.ValidationSet ?? context.ValidationSet?.Data;
        if (validView is not null)
        {
            valid = ImageColumn.ReadAll(validView, o.ImageColumnName, o.LabelColumnName, arch.Channels, arch.ImageSize, out _);
            if (valid.Count == 0) throw new ArgumentException("The validation set has no labelled rows.", nameof(Options.ValidationSet));
        }

        ch.Info("Training {0} ({1:N0} parameters, {2:N1} MFLOPs/image) on {3} images, {4} classes{5}{6}.",
            arch, arch.ParameterCount, arch.ForwardFlops / 1e6, train.Count, numClasses, init is null ? "" : ", continuing from the given model",
            o.TeacherScoreColumnName is null ? "" : $", distilling from teacher column '{o.TeacherScoreColumnName}' (α {o.TeacherWeight}, T {o.TeacherTemperature})");
        using var threads = TorchDevices.UseThreads(o.NumberOfThreads); // restored when Fit returns
        var model = init?.Model.Clone()
            ?? (o.PretrainedWeightsPath is null && o.PretrainedModel is null ? new VisionTransformerModel(arch, o.Seed) : ImportPretrained(o, arch, ch));
        // A continued run is another stage: its progress says so and its checkpoints never match a from-scratch run.
        var loop = new TrainingLoop(o, init is null ? "dense" : "dense-continued", line => ch.Info(line), cancellation);
        try
        {
            loop.Train(model, train, valid, cancellation.Token);
        }
        catch
        {
            model.Dispose(); // a clone, a fresh model or an import: owned here
            throw;
        }
        var inputType = data.Schema[o.ImageColumnName].Type;
        var kind = ImageColumn.CheckType(inputType, o.ImageColumnName, arch.Channels, arch.ImageSize, nameof(Options.ImageColumnName));
        return new ViTModelParameters(Host, model, kind, inputType, ViTPreprocessing.From(o), o.Device) { TrainingHistory = loop.History };
    }

    private static VisionTransformerModel ImportPretrained(Options o, ViTArchitecture arch, IChannel ch)
    {
        var import = PretrainedViT.Import(o.PretrainedCheckpoint()!, new PretrainedImportOptions
        {
            Heads = o.PretrainedHeads, NumClasses = arch.NumClasses, ImageSize = arch.ImageSize, Seed = o.Seed,
        }, line => ch.Info(line));
        if (!import.Model.Architecture.Equals(arch))
        {
            import.Model.Dispose();
            throw new InvalidOperationException($"The pretrained checkpoint changed while training started: expected {arch}, read {import.Model.Architecture}.");
        }
        if (import.Mean is { } mean && import.Std is { } std && (!mean.SequenceEqual(o.Mean) || !std.SequenceEqual(o.Std)))
            ch.Warning("The checkpoint's pre-processing files give mean [{0}] / std [{1}]; this trainer normalises with Mean [{2}] / Std [{3}].",
                string.Join(", ", mean), string.Join(", ", std), string.Join(", ", o.Mean), string.Join(", ", o.Std));
        return import.Model;
    }
}
