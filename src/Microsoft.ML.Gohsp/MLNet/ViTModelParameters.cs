using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Platform;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.Model;
using Microsoft.ML.Runtime;
using Microsoft.ML.Trainers;
using Microsoft.ML.Transforms.Image;
using TorchSharp;
using static TorchSharp.torch;

// Registered like first-party ML.NET models: Model.Load finds the loader in a fresh process with no registration call.
[assembly: LoadableClass(typeof(ViTModelParameters), null, typeof(SignatureLoadModel),
    "Vision Transformer multiclass predictor", ViTModelParameters.LoaderSignature)]

namespace Microsoft.ML.Gohsp;

/// <summary>
/// A trained (dense or pruned) vision transformer as ML.NET model parameters: maps an image column to class
/// probabilities. Produced by <see cref="ViTClassificationTrainer"/> and by the pruning estimators, wrapped in a
/// <see cref="MulticlassPredictionTransformer{TModel}"/>. Architecture and weights are stored inside the model zip.
/// </summary>
public sealed partial class ViTModelParameters : ModelParametersBase<VBuffer<float>>, IValueMapper, ISchemaBindableMapper
{
    internal const string LoaderSignature = "GohspViTPredictor";
    internal const string WeightsStream = "TSModel";

    /// <summary>
    /// The model-zip format this version writes. Format 1: input kind (planar vector or MLImage), pre-processing, architecture,
    /// precision field (whose bit 0x100 announces a head-mask section) and TorchSharp weights. Format 2: input kind 2 (encoded
    /// image bytes) and the head-mask section are part of the format, so that older readers refuse such a zip instead of
    /// misreading it. Format 3: the name of the MLImage column a model of input kind 1 reads (empty for the other kinds),
    /// after the pre-processing. Bump it whenever the format changes.
    /// </summary>
    internal const int FormatVersion = 3;

    /// <summary>The oldest format this version reads.</summary>
    internal const int OldestReadableFormat = 1;

    private const uint VersionBase = 0x00010000;

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "GOHSPVIT",
        verWrittenCur: VersionBase | FormatVersion,
        verReadableCur: VersionBase | FormatVersion,
        verWeCanReadBack: VersionBase | OldestReadableFormat,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(ViTModelParameters).Assembly.FullName);

    private readonly DataViewType _inputType;
    private readonly VectorDataViewType _outputType;
    private readonly Device _device;

    /// <inheritdoc />
    public override PredictionKind PredictionKind => PredictionKind.MulticlassClassification;

    DataViewType IValueMapper.InputType => _inputType;
    DataViewType IValueMapper.OutputType => _outputType;

    /// <summary>The TorchSharp model (in evaluation mode). Shared, not copied: do not dispose it.</summary>
    public VisionTransformerModel Model { get; }

    /// <summary>The model's architecture (per-block heads and widths).</summary>
    public ViTArchitecture Architecture => Model.Architecture;

    /// <summary>Number of parameters of the model.</summary>
    public long ParameterCount => Architecture.ParameterCount;

    /// <summary>Forward FLOPs per image (2 × multiply-adds of the matrix products).</summary>
    public long ForwardFlops => Architecture.ForwardFlops;

    /// <summary>Pre-processing that turns raw pixel values (0…255) into model input.</summary>
    public ViTPreprocessing Preprocessing { get; }

    internal ImageInputKind InputKind { get; }

    /// <summary>
    /// The MLImage column a model of input kind <see cref="ImageInputKind.Image"/> reads (its prediction transformer has no
    /// feature column of its own: <see cref="MLNetInternals.BindViT"/>); null for the other kinds.
    /// </summary>
    internal string? ImageColumnName { get; set; }

    /// <summary>Per-epoch history of the training that produced this model (empty after loading from a file).</summary>
    public IReadOnlyList<EpochRecord> TrainingHistory { get; internal init; } = Array.Empty<EpochRecord>();

    internal ViTModelParameters(IHostEnvironment env, VisionTransformerModel model, ImageInputKind inputKind, DataViewType inputType,
        ViTPreprocessing preprocessing, ViTDevice device = ViTDevice.Auto)
        : base(env, LoaderSignature)
    {
        Host.CheckValue(model, nameof(model));
        Model = model;
        InputKind = inputKind;
        _inputType = inputType;
        Preprocessing = preprocessing;
        _outputType = new VectorDataViewType(NumberDataViewType.Single, model.Architecture.NumClasses);
        _device = TorchDevices.Resolve(device);
        Model.to(_device);
        Model.eval();
    }

    private ViTModelParameters(IHostEnvironment env, ModelLoadContext ctx)
        : base(env, LoaderSignature, ctx)
    {
        // *** Binary format ***
        // int: input kind (0 = planar vector, 1 = MLImage, 2 = encoded image bytes)
        // int, int: declared image height, width of the MLImage column type (input kind 1); byte vector size, 0 (kind 2; 0 = variable)
        // preprocessing (see ViTPreprocessing.Write)
        // stream "TSModel": ViTArchitecture + TorchSharp Module.save weights
        int kind = ctx.Reader.ReadInt32();
        if (kind is not (0 or 1 or 2)) throw new InvalidDataException($"The ViT model stored in this ML.NET zip is corrupted: unknown input kind {kind}.");
        InputKind = (ImageInputKind)kind;
        int declaredH = ctx.Reader.ReadInt32(), declaredW = ctx.Reader.ReadInt32();
        Preprocessing = ViTPreprocessing.Read(ctx.Reader);
        // format 3: string, the MLImage column of input kind 1 ("" for the other kinds)
        if (ctx.Header.ModelVerWritten >= (VersionBase | 3) && ctx.Reader.ReadString() is { Length: > 0 } column) ImageColumnName = column;
        if (InputKind == ImageInputKind.Image && ImageColumnName is null)
            throw new InvalidDataException("The ViT model stored in this ML.NET zip reads an MLImage column but does not name it; the file is corrupted.");
        VisionTransformerModel? model = null;
        bool found;
        try
        {
            found = ctx.TryLoadBinaryStream(WeightsStream, r => model = VisionTransformerModel.Load(r));
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"The ViT model stored in this ML.NET zip is corrupted: {e.Message}", e);
        }
        if (!found || model is null)
            throw new InvalidDataException($"The ML.NET zip has no '{WeightsStream}' entry with the ViT weights; the file is incomplete or corrupted.");
        Model = model;
        string? report = null;
        ctx.TryLoadBinaryStream(ReportStream, r => report = r.ReadString());
        PruningReportJson = report;
        PruningReport = report is null ? null : Pruning.PruningReport.FromJson(report);
        var a = model.Architecture;
        _inputType = InputKind switch
        {
            ImageInputKind.Image => new ImageDataViewType(declaredH, declaredW),
            ImageInputKind.EncodedBytes => declaredH > 0 ? new VectorDataViewType(NumberDataViewType.Byte, declaredH) : new VectorDataViewType(NumberDataViewType.Byte),
            _ => new VectorDataViewType(NumberDataViewType.Single, a.Channels, a.ImageSize, a.ImageSize),
        };
        _outputType = new VectorDataViewType(NumberDataViewType.Single, a.NumClasses);
        _device = TorchDevices.Resolve(ViTDevice.Auto);
        Model.to(_device);
        Model.eval();
    }

    internal static ViTModelParameters Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        Contracts.CheckValue(env, nameof(env));
        env.CheckValue(ctx, nameof(ctx));
        // A newer format is named as such (ML.NET's own check would only report a version mismatch).
        uint readable = ctx.Header.ModelVerReadable, written = ctx.Header.ModelVerWritten;
        if (readable > (VersionBase | FormatVersion))
            throw new InvalidDataException(
                $"This ViT model was written by a newer Microsoft.ML.Gohsp (format {written - VersionBase}); this is format {FormatVersion}. " +
                "Update the Microsoft.ML.Gohsp package to load it.");
        if (written < (VersionBase | OldestReadableFormat))
            throw new InvalidDataException(
                $"This ViT model has format {(int)(written - VersionBase)}, older than the oldest format this Microsoft.ML.Gohsp reads ({OldestReadableFormat}).");
        ctx.CheckAtModel(GetVersionInfo());
        return new ViTModelParameters(env, ctx);
    }

    /// <inheritdoc />
    public override void SaveCore(ModelSaveContext ctx)
    {
        if (InputKind == ImageInputKind.Image && ImageColumnName is null)
            throw new InvalidOperationException("This ViT model reads an MLImage column but was not given its name; save the prediction transformer that scores it.");
        base.SaveCore(ctx);
        ctx.SetVersionInfo(GetVersionInfo());
        ctx.Writer.Write((int)InputKind);
        var img = _inputType as ImageDataViewType;
        ctx.Writer.Write(img?.Height ?? (InputKind == ImageInputKind.EncodedBytes ? ((VectorDataViewType)_inputType).Size : 0));
        ctx.Writer.Write(img?.Width ?? 0);
        Preprocessing.Write(ctx.Writer);
        ctx.Writer.Write(ImageColumnName ?? "");
        ctx.SaveBinaryStream(WeightsStream, w => Model.Save(w));
        if (PruningReportJson is not null) ctx.SaveBinaryStream(ReportStream, w => w.Write(PruningReportJson));
    }

    internal const string ReportStream = "PruningReport";

    /// <summary>A new model-parameters object over another TorchSharp model with the same input and pre-processing (used by pruning).</summary>
    internal ViTModelParameters WithModel(VisionTransformerModel model, Pruning.PruningReport? report = null) =>
        new(Host, model, InputKind, _inputType, Preprocessing) { PruningReport = report, PruningReportJson = report?.ToJson(), ImageColumnName = ImageColumnName };

    ISchemaBoundMapper ISchemaBindableMapper.Bind(IHostEnvironment env, RoleMappedSchema schema) => MLNetInternals.BindViT(this, env, schema);

    /// <summary>
    /// The pruning report of a model produced by a pruning estimator or a GOHSP stage estimator (null for a model straight
    /// from the trainer). Stored in the model zip as <see cref="PruningReportJson"/>, so it survives <c>Model.Load</c>.
    /// </summary>
    public Pruning.PruningReport? PruningReport { get; internal init; }

    /// <summary>The pruning report as JSON; stored inside the model zip, so it is also available after <c>Model.Load</c>.</summary>
    public string? PruningReportJson { get; private init; }

    internal DataViewType InputType => _inputType;

    ValueMapper<TIn, TOut> IValueMapper.GetMapper<TIn, TOut>()
    {
        Host.Check(typeof(TOut) == typeof(VBuffer<float>), "ViT models output a float vector of class probabilities.");
        if (typeof(TIn) == typeof(VBuffer<float>))
        {
            ValueMapper<VBuffer<float>, VBuffer<float>> del = MapVector;
            return (ValueMapper<TIn, TOut>)(Delegate)del;
        }
        if (typeof(TIn) == typeof(VBuffer<byte>))
        {
            ValueMapper<VBuffer<byte>, VBuffer<float>> del = MapEncoded;
            return (ValueMapper<TIn, TOut>)(Delegate)del;
        }
        if (typeof(TIn) == typeof(MLImage))
        {
            ValueMapper<MLImage, VBuffer<float>> del = MapImage;
            return (ValueMapper<TIn, TOut>)(Delegate)del;
        }
        throw Host.Except($"A ViT model cannot score input of type {typeof(TIn).Name}; expected MLImage, VBuffer<Byte> (encoded image) or VBuffer<Single>.");
    }

    private void MapVector(in VBuffer<float> src, ref VBuffer<float> dst)
    {
        var a = Architecture;
        var x = new float[a.Channels * a.ImageSize * a.ImageSize];
        ImageColumn.CopyVector(src, x, "Features");
        Score(x, ref dst);
    }

    private void MapImage(in MLImage src, ref VBuffer<float> dst)
    {
        var a = Architecture;
        var x = new float[a.Channels * a.ImageSize * a.ImageSize];
        ImageColumn.CopyImage(src, x, a.ImageSize, "Image");
        Score(x, ref dst);
    }

    private void MapEncoded(in VBuffer<byte> src, ref VBuffer<float> dst)
    {
        var a = Architecture;
        var x = new float[a.Channels * a.ImageSize * a.ImageSize];
        ImageColumn.CopyEncoded(src, x, a.ImageSize, "Image");
        Score(x, ref dst);
    }

    private void Score(float[] raw, ref VBuffer<float> dst)
    {
        var a = Architecture;
        Preprocessing.NormalizeInPlace(raw, a.Channels);
        int k = a.NumClasses;
        var editor = VBufferEditor.Create(ref dst, k);
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var input = tensor(raw, new long[] { 1, a.Channels, a.ImageSize, a.ImageSize });
            if (_device.type != DeviceType.CPU) input = input.to(_device);
            var probs = Model.forward(input).softmax(1);
            if (_device.type != DeviceType.CPU) probs = probs.cpu();
            probs.data<float>().CopyTo(editor.Values);
        }
        dst = editor.Commit();
    }

    /// <summary>Class probabilities for raw (unnormalised) images in bulk: [Count × classes], row-major.</summary>
    public float[] PredictProbabilities(ImageTensorData data, int batchSize = 256)
    {
        var o = Preprocessing.ToTrainingOptions();
        o.EvaluationBatchSize = batchSize;
        return TrainingLoop.PredictProbabilities(Model, data, o, _device);
    }
}
