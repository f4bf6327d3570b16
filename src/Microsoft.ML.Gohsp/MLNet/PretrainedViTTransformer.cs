using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// Options of <c>mlContext.Model.LoadPretrainedViT(path, options)</c>: how to import the checkpoint (heads, class count,
/// image size — see <see cref="PretrainedImportOptions"/>) and how the resulting ML.NET model reads its input.
/// </summary>
public sealed class PretrainedViTOptions : PretrainedImportOptions
{
    /// <summary>The planar float vector column (<c>ExtractPixels(interleavePixelColors: false)</c>, raw 0…255) the model scores. Default "Pixels".</summary>
    public string ImageColumnName { get; set; } = "Pixels";

    /// <summary>The key-typed label column name recorded in the model (what GOHSP and Evaluate use). Default "Label".</summary>
    public string LabelColumnName { get; set; } = DefaultColumnNames.Label;

    /// <summary>Class names (the label's key values). Null: <c>id2label</c>/<c>label_names</c> of a <c>config.json</c> beside the file, else "0", "1", ….</summary>
    public IReadOnlyList<string>? ClassNames { get; set; }

    /// <summary>Multiplier applied to the raw pixels before normalisation. Default 1/255.</summary>
    public float PixelScale { get; set; } = 1f / 255f;

    /// <summary>
    /// Normalisation mean the checkpoint was trained with. Null: <c>image_mean</c> of a Hugging Face
    /// <c>preprocessor_config.json</c> (or timm's <c>pretrained_cfg.mean</c> in <c>config.json</c>) beside the file, else
    /// ImageNet's (<see cref="PretrainedViT.ImageNetMean"/>, right for DeiT). The original Google ViT weights need
    /// <see cref="PretrainedViT.InceptionMean"/> (0.5).
    /// </summary>
    public IReadOnlyList<float>? Mean { get; set; }

    /// <summary>Normalisation std; resolved like <see cref="Mean"/> (default <see cref="PretrainedViT.ImageNetStd"/>).</summary>
    public IReadOnlyList<float>? Std { get; set; }

    /// <summary>Device for inference and later pruning. Default <see cref="ViTDevice.Auto"/>.</summary>
    public ViTDevice Device { get; set; } = ViTDevice.Auto;

    /// <summary>
    /// Where a model given by name (<c>hf:org/name[@revision]</c>) is downloaded from and cached. Null:
    /// <see cref="HubOptions.FromEnvironment"/> (<c>HF_ENDPOINT</c>, <c>HF_HOME</c>/<c>HF_HUB_CACHE</c>, <c>HF_HUB_OFFLINE</c>, <c>HF_TOKEN</c>).
    /// </summary>
    public HubOptions? Hub { get; set; }

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (string.IsNullOrWhiteSpace(ImageColumnName)) throw new ArgumentException("ImageColumnName must be set.", nameof(ImageColumnName));
        if (string.IsNullOrWhiteSpace(LabelColumnName)) throw new ArgumentException("LabelColumnName must be set.", nameof(LabelColumnName));
        if (!(PixelScale > 0) || float.IsInfinity(PixelScale)) throw new ArgumentOutOfRangeException(nameof(PixelScale), PixelScale, "PixelScale must be a positive finite number.");
        if (Std is not null && Std.Any(s => !(s > 0))) throw new ArgumentOutOfRangeException(nameof(Std), "Std values must be positive.");
    }
}

/// <summary>Wraps an imported checkpoint as the same ML.NET transformer <see cref="ViTClassificationTrainer"/> produces.</summary>
internal static class PretrainedViTTransformer
{
    public static MulticlassPredictionTransformer<ViTModelParameters> Create(IHostEnvironment env, string path, PretrainedViTOptions options)
    {
        var host = env.Register("PretrainedViT");
        options.Validate();
        PretrainedImport import;
        using (var ch = host.Start("Import"))
        {
            if (HubModelName.IsHubName(path))
                path = HuggingFaceHub.DownloadModel(HubModelName.Parse(path, nameof(path)), options.Hub ?? HubOptions.FromEnvironment(), line => ch.Info(line));
            import = PretrainedViT.Import(path, options, line => ch.Info(line));
        }
        var model = import.Model;
        try
        {
            var a = model.Architecture;
            var mean = (options.Mean ?? import.Mean ?? PretrainedViT.ImageNetMean).ToArray();
            var std = (options.Std ?? import.Std ?? PretrainedViT.ImageNetStd).ToArray();
            if (mean.Length != a.Channels) throw new ArgumentException($"Mean must have one value per channel ({a.Channels}).", nameof(options.Mean));
            if (std.Length != a.Channels) throw new ArgumentException($"Std must have one value per channel ({a.Channels}).", nameof(options.Std));
            var names = (options.ClassNames ?? import.ClassNames ?? Enumerable.Range(0, a.NumClasses).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray()).ToArray();
            if (names.Length != a.NumClasses)
                throw new ArgumentException($"ClassNames has {names.Length} names; the model has {a.NumClasses} classes.", nameof(options.ClassNames));

            var imageType = new VectorDataViewType(NumberDataViewType.Single, a.Channels, a.ImageSize, a.ImageSize);
            var keyValues = new DataViewSchema.Annotations.Builder();
            ValueGetter<VBuffer<ReadOnlyMemory<char>>> getter = (ref VBuffer<ReadOnlyMemory<char>> dst) =>
                dst = new VBuffer<ReadOnlyMemory<char>>(names.Length, names.Select(n => n.AsMemory()).ToArray());
            keyValues.AddKeyValues(names.Length, TextDataViewType.Instance, getter);
            var schema = new DataViewSchema.Builder();
            schema.AddColumn(options.ImageColumnName, imageType);
            schema.AddColumn(options.LabelColumnName, new KeyDataViewType(typeof(uint), names.Length), keyValues.ToAnnotations());

            var parameters = new ViTModelParameters(env, model, ImageInputKind.PlanarVector, imageType,
                new ViTPreprocessing(options.PixelScale, mean, std), options.Device);
            return MLNetInternals.PredictionTransformer(env, parameters, schema.ToSchema(), options.ImageColumnName, options.LabelColumnName);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
