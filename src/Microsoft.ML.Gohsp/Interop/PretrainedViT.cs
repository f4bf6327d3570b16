using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>Options of <see cref="PretrainedViT.Import"/>.</summary>
public class PretrainedImportOptions
{
    /// <summary>
    /// Attention heads per block (the one thing the tensors cannot tell). Null: <c>num_attention_heads</c> of a Hugging Face
    /// <c>config.json</c> beside the file, else timm's convention for the embedding width (192→3, 384→6, 768→12, 1024→16,
    /// 1280→16, logged); any other width needs this option.
    /// </summary>
    public int? Heads { get; set; }

    /// <summary>Number of classes. Null keeps the checkpoint's; a different count gets a new, seeded classifier head.</summary>
    public int? NumClasses { get; set; }

    /// <summary>Input image size. Null keeps the checkpoint's; a different size resamples the position embedding (bicubic, as timm).</summary>
    public int? ImageSize { get; set; }

    /// <summary>
    /// LayerNorm epsilon. Null: 1e-6 for timm naming (timm's value); for Hugging Face naming <c>layer_norm_eps</c> of
    /// <c>config.json</c>, else 1e-12 (the Hugging Face ViT default).
    /// </summary>
    public double? LayerNormEps { get; set; }

    /// <summary>Seed of a new classifier head (truncated normal σ = 0.02, zero bias). Default 1.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option.</summary>
    public virtual void Validate()
    {
        if (Heads is int h && h < 1) throw new ArgumentOutOfRangeException(nameof(Heads), h, "Heads must be positive.");
        if (NumClasses is int c && c < 2) throw new ArgumentOutOfRangeException(nameof(NumClasses), c, "NumClasses must be at least 2.");
        if (ImageSize is int s && s < 1) throw new ArgumentOutOfRangeException(nameof(ImageSize), s, "ImageSize must be positive.");
        if (LayerNormEps is double e && !(e > 0)) throw new ArgumentOutOfRangeException(nameof(LayerNormEps), e, "LayerNormEps must be positive.");
    }
}

/// <summary>The result of <see cref="PretrainedViT.Import"/>.</summary>
/// <param name="Model">The imported model (CPU, float32, evaluation mode). The caller owns it.</param>
/// <param name="Naming">The naming the checkpoint used.</param>
/// <param name="Format">The file format.</param>
/// <param name="CheckpointArchitecture">The architecture stored in the checkpoint (before a new head / image size).</param>
/// <param name="NewHead">True when the classifier head was replaced (class count changed or the checkpoint had none).</param>
/// <param name="PositionEmbeddingResampled">True when the position embedding was resampled to a new image size.</param>
/// <param name="ClassNames">Class names from <c>config.json</c> (<c>id2label</c> / <c>label_names</c>) when present and the head was kept.</param>
/// <param name="Mean">Normalisation mean from <c>preprocessor_config.json</c> / timm's <c>pretrained_cfg</c> when present.</param>
/// <param name="Std">Normalisation std from the same files when present.</param>
public sealed record PretrainedImport(VisionTransformerModel Model, CheckpointNaming Naming, CheckpointFormat Format,
    ViTArchitecture CheckpointArchitecture, bool NewHead, bool PositionEmbeddingResampled, IReadOnlyList<string>? ClassNames,
    IReadOnlyList<float>? Mean, IReadOnlyList<float>? Std);

/// <summary>
/// Imports pretrained ViT/DeiT weights — timm or Hugging Face naming (<c>ViTForImageClassification</c>, the DeiT classes, distilled DeiT included), from
/// <c>.safetensors</c> or PyTorch <c>.pth</c>/<c>.bin</c> state dicts — into a <see cref="VisionTransformerModel"/>. The
/// architecture (embedding width, depth, patch size, image size, per-block MLP width, class count) is read from the tensor
/// shapes; see docs/interop.md.
/// </summary>
public static partial class PretrainedViT
{
    /// <summary>ImageNet normalisation (DeiT and most timm/torchvision models): mean.</summary>
    public static IReadOnlyList<float> ImageNetMean { get; } = [0.485f, 0.456f, 0.406f];
    /// <summary>ImageNet normalisation: std.</summary>
    public static IReadOnlyList<float> ImageNetStd { get; } = [0.229f, 0.224f, 0.225f];
    /// <summary>"Inception" normalisation used by the original (Google/augreg) ViT weights in timm and Hugging Face: mean 0.5.</summary>
    public static IReadOnlyList<float> InceptionMean { get; } = [0.5f, 0.5f, 0.5f];
    /// <summary>"Inception" normalisation: std 0.5.</summary>
    public static IReadOnlyList<float> InceptionStd { get; } = [0.5f, 0.5f, 0.5f];

    private static readonly Dictionary<int, int> DefaultHeadsByWidth = new() { [192] = 3, [384] = 6, [768] = 12, [1024] = 16, [1280] = 16 };

    [GeneratedRegex(@"^blocks\.(\d+)\.")]
    private static partial Regex BlockKey();

    /// <summary>Imports <paramref name="path"/> and returns just the model (see <see cref="Import"/>).</summary>
    public static VisionTransformerModel Load(string path, PretrainedImportOptions? options = null, Action<string>? log = null) =>
        Import(path, options, log).Model;

    /// <summary>
    /// Imports a pretrained checkpoint. Throws <see cref="FileNotFoundException"/>, <see cref="UnsafePickleException"/> (a
    /// <c>.pth</c>/<c>.bin</c> whose pickle references anything but tensors and plain containers — nothing is loaded then),
    /// or <see cref="InvalidDataException"/> naming the offending key (missing, unexpected, wrong shape; not a ViT).
    /// </summary>
    /// <param name="path">A <c>.safetensors</c> file or a <c>torch.save</c> zip (<c>.pth</c>, <c>.pt</c>, <c>.bin</c>).</param>
    /// <param name="options">Heads, class count, image size, LayerNorm epsilon, head seed.</param>
    /// <param name="log">Receives one line per decision taken (naming, heads source, new head, resampling).</param>
    public static PretrainedImport Import(string path, PretrainedImportOptions? options = null, Action<string>? log = null)
    {
        options ??= new PretrainedImportOptions();
        using var c = Prepare(path, options, log);
        var (target, newHead, resample) = Target(c, options);
        var model = new VisionTransformerModel(target, options.Seed);
        try
        {
            Copy(model, c.StateDict, c.Naming, c.Source, newHead, resample, log);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        var stored = c.Stored;
        if (newHead && target.Distillation == ViTDistillation.TokenAndHead) log?.Invoke("The distillation head is new as well.");
        if (newHead) log?.Invoke($"New classifier head: {target.NumClasses} classes (checkpoint: {(c.StateDict.ContainsKey("head.weight") ? stored.NumClasses.ToString(CultureInfo.InvariantCulture) : "none")}), seed {options.Seed}.");
        if (resample) log?.Invoke($"Position embedding resampled (bicubic) from {stored.ImageSize}² to {target.ImageSize}² ({stored.NumPatches} → {target.NumPatches} patches).");
        model.eval();
        var config = c.Config;
        bool namesFit = !newHead && config.ClassNames is { } n && n.Count == target.NumClasses;
        bool normFits = config.Mean?.Length == target.Channels && config.Std?.Length == target.Channels;
        return new PretrainedImport(model, c.Naming, c.Format, stored, newHead, resample, namesFit ? config.ClassNames : null,
            normFits ? config.Mean : null, normFits ? config.Std : null);
    }

    /// <summary>
    /// The architecture <see cref="Import"/> would build for these options, without building the model (the file is still
    /// read and checked in full, so this reports the same errors).
    /// </summary>
    public static ViTArchitecture ReadArchitecture(string path, PretrainedImportOptions? options = null)
    {
        options ??= new PretrainedImportOptions();
        using var c = Prepare(path, options, null);
        return Target(c, options).Target;
    }

    /// <summary>A read, name-mapped checkpoint with its inferred architecture; owns the tensors.</summary>
    private sealed class Checkpoint : IDisposable
    {
        public required string Source { get; init; }
        public required Dictionary<string, Tensor> StateDict { get; init; }
        public required CheckpointNaming Naming { get; init; }
        public required CheckpointFormat Format { get; init; }
        public required PretrainedConfig Config { get; init; }
        public required ViTArchitecture Stored { get; init; }
        public void Dispose() { foreach (var t in StateDict.Values) t.Dispose(); }
    }

    private static Checkpoint Prepare(string path, PretrainedImportOptions options, Action<string>? log)
    {
        options.Validate();
        string source = Path.GetFileName(path ?? throw new ArgumentNullException(nameof(path)));
        var raw = CheckpointReader.Read(path, out var format);
        Dictionary<string, Tensor>? sd = null;
        try
        {
            CheckpointNames.StripDataParallelPrefix(raw);
            CheckpointNames.AddHfBaseModelPrefix(raw);
            var naming = CheckpointNames.Detect(raw, source);
            var config = PretrainedConfig.ReadBeside(path);
            if (config.HiddenAct is string act && act != "gelu")
                throw new NotSupportedException($"'{config.ConfigFile}' sets hidden_act = '{act}'; only exact GELU ('gelu') is supported.");
            sd = CheckpointNames.ToTimm(raw, naming, log);
            if (raw.Count > 0)
            {
                var extra = raw.Keys.Order(StringComparer.Ordinal).ToList();
                throw new InvalidDataException(
                    $"'{source}' ({naming} naming) has {extra.Count} tensor(s) that are not part of a plain ViT/DeiT classifier, e.g. " +
                    $"{string.Join(", ", extra.Take(4).Select(k => $"'{k}'"))}. Variants with LayerScale, register tokens, global average " +
                    "pooling (fc_norm), q/k norms or a pre-norm are not supported.");
            }
            var (heads, headsFrom) = ResolveHeads(sd, naming, options, config, source);
            double eps = options.LayerNormEps ?? (naming != CheckpointNaming.Timm ? config.LayerNormEps ?? 1e-12 : 1e-6);
            var stored = InferArchitecture(sd, naming, heads, eps, options.NumClasses, source);
            log?.Invoke($"'{source}': {format} file, {naming} naming, {stored} ({heads} heads from {headsFrom}, LayerNorm eps {eps:G3}).");
            var result = new Checkpoint { Source = source, StateDict = sd, Naming = naming, Format = format, Config = config, Stored = stored };
            sd = null;
            return result;
        }
        finally
        {
            foreach (var t in raw.Values) t.Dispose();
            if (sd is not null) foreach (var t in sd.Values) t.Dispose();
        }
    }

    private static (ViTArchitecture Target, bool NewHead, bool Resample) Target(Checkpoint c, PretrainedImportOptions options)
    {
        var stored = c.Stored;
        var target = stored;
        bool newHead = !c.StateDict.ContainsKey("head.weight") || options.NumClasses is int k && k != stored.NumClasses;
        if (options.NumClasses is int classes) target = target.WithNumClasses(classes);
        bool resample = options.ImageSize is int size && size != stored.ImageSize;
        if (resample)
        {
            int s = options.ImageSize!.Value;
            if (s % stored.PatchSize != 0)
                throw new ArgumentOutOfRangeException(nameof(options.ImageSize), s, $"ImageSize ({s}) must be divisible by the checkpoint's patch size ({stored.PatchSize}).");
            target = target.WithImageSize(s);
        }
        return (target, newHead, resample);
    }

    private static (int Heads, string From) ResolveHeads(Dictionary<string, Tensor> sd, CheckpointNaming naming, PretrainedImportOptions o,
        PretrainedConfig config, string source)
    {
        if (o.Heads is int h) return (h, "the Heads option");
        if (config.Heads is int ch) return (ch, Path.GetFileName(config.ConfigFile)!);
        long width = Need(sd, "cls_token", naming, source).shape[^1];
        if (DefaultHeadsByWidth.TryGetValue((int)width, out int d)) return (d, $"timm's default for width {width}");
        throw new InvalidDataException(
            $"'{source}': the number of attention heads cannot be read from the tensors and there is no config.json with num_attention_heads " +
            $"beside it; embedding width {width} has no standard head count. Set the Heads option (PretrainedHeads on the trainer).");
    }

    private static Tensor Need(Dictionary<string, Tensor> sd, string key, CheckpointNaming naming, string source) =>
        sd.TryGetValue(key, out var t) ? t
            : throw new InvalidDataException($"'{source}' ({naming} naming) is missing {CheckpointNames.Describe(key, naming)}.");

    private static InvalidDataException BadShape(string key, Tensor t, string expected, CheckpointNaming naming, string source) =>
        new($"'{source}' ({naming} naming): {CheckpointNames.Describe(key, naming)} has shape {CheckpointNames.Shape(t)}; expected {expected}.");

    private static ViTArchitecture InferArchitecture(Dictionary<string, Tensor> sd, CheckpointNaming naming, int heads, double eps, int? numClasses, string source)
    {
        var pe = Need(sd, "patch_embed.proj.weight", naming, source);
        if (pe.dim() != 4 || pe.shape[2] != pe.shape[3]) throw BadShape("patch_embed.proj.weight", pe, "[embed, channels, patch, patch]", naming, source);
        int d = (int)pe.shape[0], channels = (int)pe.shape[1], patch = (int)pe.shape[2];
        var distillation = Distillation(sd, naming, d, source);
        int prefix = distillation == ViTDistillation.None ? 1 : 2;
        string tokens = prefix == 1 ? "1" : "2 (class and distillation tokens)";
        var pos = Need(sd, "pos_embed", naming, source);
        if (pos.dim() != 3 || pos.shape[0] != 1 || pos.shape[2] != d) throw BadShape("pos_embed", pos, $"[1, {prefix} + patches, {d}]", naming, source);
        long len = pos.shape[1];
        int grid = (int)Math.Round(Math.Sqrt(Math.Max(0, len - prefix)));
        if (len <= prefix || (long)grid * grid != len - prefix)
        {
            int g0 = (int)Math.Round(Math.Sqrt(len));
            throw new InvalidDataException((long)g0 * g0 == len
                ? $"'{source}': {CheckpointNames.Describe("pos_embed", naming)} has {len} positions = {g0}² patches and none for the class token (timm no_embed_class); such models are not supported."
                : $"'{source}': {CheckpointNames.Describe("pos_embed", naming)} has {len} positions; expected {tokens} + a square number of patches.");
        }
        var indices = sd.Keys.Select(k => BlockKey().Match(k)).Where(m => m.Success).Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        if (indices.Count == 0) throw new InvalidDataException($"'{source}' ({naming} naming) has no transformer blocks ({CheckpointNames.Describe("blocks.0.attn.qkv.weight", naming)} is missing).");
        int depth = indices.Max() + 1;
        var blocks = new ViTBlockSpec[depth];
        for (int i = 0; i < depth; i++)
        {
            string qkvKey = $"blocks.{i}.attn.qkv.weight", fc1Key = $"blocks.{i}.mlp.fc1.weight";
            var qkv = Need(sd, qkvKey, naming, source);
            if (qkv.dim() != 2 || qkv.shape[1] != d || qkv.shape[0] % 3 != 0) throw BadShape(qkvKey, qkv, $"[3 × width, {d}]", naming, source);
            int width = (int)(qkv.shape[0] / 3);
            if (width % heads != 0)
                throw new InvalidDataException($"'{source}': block {i}'s attention width {width} is not divisible by {heads} heads; set the Heads option to the model's head count.");
            var fc1 = Need(sd, fc1Key, naming, source);
            if (fc1.dim() != 2 || fc1.shape[1] != d) throw BadShape(fc1Key, fc1, $"[mlp, {d}]", naming, source);
            blocks[i] = new ViTBlockSpec(heads, width / heads, width / heads, (int)fc1.shape[0]);
        }
        int classes;
        if (sd.TryGetValue("head.weight", out var head))
        {
            if (head.dim() != 2 || head.shape[1] != d) throw BadShape("head.weight", head, $"[classes, {d}]", naming, source);
            classes = (int)head.shape[0];
        }
        else
            classes = numClasses ?? throw new InvalidDataException(
                $"'{source}' has no classifier head ({CheckpointNames.Describe("head.weight", naming)}); set NumClasses to add a new one.");
        if (sd.TryGetValue("head_dist.weight", out var headDist) && (headDist.dim() != 2 || headDist.shape[0] != classes || headDist.shape[1] != d))
            throw BadShape("head_dist.weight", headDist, $"[{classes}, {d}] (the shape of the class head)", naming, source);
        try
        {
            return new ViTArchitecture(grid * patch, patch, channels, d, classes, blocks, eps).WithDistillation(distillation);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"'{source}': the tensors describe an invalid ViT: {e.Message}", e);
        }
    }

    /// <summary>
    /// The distillation token and head: none, the token alone (Hugging Face <c>DeiTForImageClassification</c>/<c>DeiTModel</c>),
    /// or both (distilled DeiT). A distillation head without the token is refused.
    /// </summary>
    private static ViTDistillation Distillation(Dictionary<string, Tensor> sd, CheckpointNaming naming, int d, string source)
    {
        bool headDist = sd.ContainsKey("head_dist.weight") || sd.ContainsKey("head_dist.bias");
        if (!sd.TryGetValue("dist_token", out var token))
        {
            if (headDist)
                throw new InvalidDataException($"'{source}' ({naming} naming) has a distillation head ({CheckpointNames.Describe("head_dist.weight", naming)}) but no distillation token ({CheckpointNames.Describe("dist_token", naming)}).");
            return ViTDistillation.None;
        }
        if (token.dim() != 3 || token.shape[0] != 1 || token.shape[1] != 1 || token.shape[2] != d)
            throw BadShape("dist_token", token, $"[1, 1, {d}]", naming, source);
        return headDist ? ViTDistillation.TokenAndHead : ViTDistillation.Token;
    }

    /// <summary>Copies the checkpoint into <paramref name="model"/>: every parameter of the model must be in the checkpoint with its shape.</summary>
    private static void Copy(VisionTransformerModel model, Dictionary<string, Tensor> sd, CheckpointNaming naming, string source,
        bool newHead, bool resample, Action<string>? log)
    {
        using var _ = no_grad();
        bool zeroBiasLogged = false;
        foreach (var (key, dst) in model.state_dict())
        {
            if (newHead && (key.StartsWith("head.", StringComparison.Ordinal) || key.StartsWith("head_dist.", StringComparison.Ordinal))) continue;
            if (!sd.TryGetValue(key, out var src))
            {
                if (key.EndsWith(".attn.qkv.bias", StringComparison.Ordinal))
                {
                    // qkv_bias=False models: a zero bias is the same function
                    if (!zeroBiasLogged) log?.Invoke($"'{source}' has no qkv bias (qkv_bias=False): using zeros.");
                    zeroBiasLogged = true;
                    dst.zero_();
                    continue;
                }
                throw new InvalidDataException($"'{source}' ({naming} naming) is missing {CheckpointNames.Describe(key, naming)}.");
            }
            if (key == "pos_embed" && resample)
            {
                using var resampled = ResamplePositionEmbedding(src, model.Architecture.ImageSize / model.Architecture.PatchSize, model.Architecture.PrefixTokens);
                dst.copy_(resampled);
                continue;
            }
            if (!src.shape.SequenceEqual(dst.shape))
                throw BadShape(key, src, CheckpointNames.Shape(dst), naming, source);
            dst.copy_(src);
        }
    }

    /// <summary>
    /// timm's <c>resample_abs_pos_embed</c>: the class-token position (and the distillation token's) is kept; the patch grid
    /// is resized with bicubic interpolation (align_corners = false, antialias = true). Input [1, prefix + g², D], output
    /// [1, prefix + newGrid², D].
    /// </summary>
    internal static Tensor ResamplePositionEmbedding(Tensor pos, int newGrid, int prefixTokens = 1)
    {
        using var scope = NewDisposeScope();
        long len = pos.shape[1], d = pos.shape[2];
        int g = (int)Math.Round(Math.Sqrt(len - prefixTokens));
        var prefix = pos.narrow(1, 0, prefixTokens);
        var grid = pos.narrow(1, prefixTokens, len - prefixTokens).reshape(1, g, g, d).permute(0, 3, 1, 2);
        var resized = nn.functional.interpolate(grid.to(ScalarType.Float32), [newGrid, newGrid], mode: InterpolationMode.Bicubic,
            align_corners: false, antialias: true);
        var back = resized.permute(0, 2, 3, 1).reshape(1, (long)newGrid * newGrid, d);
        return cat([prefix, back], 1).MoveToOuterDisposeScope();
    }
}
