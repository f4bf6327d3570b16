using System.Collections.Immutable;
using System.Globalization;
using System.Text;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// The shape of one transformer block. Every block of a <see cref="ViTArchitecture"/> may differ: structured
/// pruning removes heads, query/key dimensions, value dimensions and MLP neurons block by block, which yields
/// a heterogeneous model.
/// </summary>
/// <param name="Heads">Number of attention heads (at least 1).</param>
/// <param name="QkDim">Query/key dimension per head (shared by all heads of the block, at least 1).</param>
/// <param name="VDim">Value dimension per head (shared by all heads of the block, at least 1).</param>
/// <param name="MlpHidden">Hidden width of the block's MLP (at least 1).</param>
public sealed record ViTBlockSpec(int Heads, int QkDim, int VDim, int MlpHidden)
{
    /// <summary>Width of the fused query/key/value projection: <c>Heads·(2·QkDim + VDim)</c>.</summary>
    public int QkvWidth => Qkv.Rows;

    /// <summary>Input width of the attention output projection: <c>Heads·VDim</c>.</summary>
    public int AttentionOutWidth => Qkv.VRows;

    /// <summary>Which rows of the fused qkv projection belong to which head.</summary>
    internal QkvLayout Qkv => new(this);

    /// <inheritdoc />
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"heads={Heads} qk={QkDim} v={VDim} mlp={MlpHidden}");
}

/// <summary>
/// The distillation token of DeiT (Touvron et al., "Training data-efficient image transformers &amp; distillation through
/// attention", 2021): a second learned token after the class token, with its own position.
/// </summary>
public enum ViTDistillation
{
    /// <summary>Class token only (ViT, non-distilled DeiT).</summary>
    None = 0,
    /// <summary>
    /// The sequence carries the distillation token, and the model classifies from the class token alone (Hugging Face
    /// <c>DeiTForImageClassification</c>, whose embeddings always hold a distillation token).
    /// </summary>
    Token = 1,
    /// <summary>
    /// Distilled DeiT (timm <c>deit_*_distilled_*</c>, Hugging Face <c>DeiTForImageClassificationWithTeacher</c>): a second
    /// head (<c>head_dist</c>) on the distillation token; the logits are the mean of both heads' logits, as DeiT predicts.
    /// </summary>
    TokenAndHead = 2,
}

/// <summary>
/// The one immutable description of a vision transformer built by this library (ViT/DeiT family, pre-norm
/// blocks, class token (and DeiT's distillation token and head, see Distillation), learned position embedding, linear head). It fully determines the module tree and
/// parameter shapes, is stored next to the weights inside a saved model, and is what pruning rewrites.
/// </summary>
public sealed record ViTArchitecture
{
    /// <summary>Creates an architecture and validates it.</summary>
    /// <param name="imageSize">Input height and width in pixels (square images).</param>
    /// <param name="patchSize">Patch size; must divide <paramref name="imageSize"/>.</param>
    /// <param name="channels">Input channels (3 for RGB).</param>
    /// <param name="embedDim">Width of the residual stream.</param>
    /// <param name="numClasses">Number of output classes.</param>
    /// <param name="blocks">One spec per transformer block.</param>
    /// <param name="layerNormEps">LayerNorm epsilon (timm uses 1e-6).</param>
    public ViTArchitecture(int imageSize, int patchSize, int channels, int embedDim, int numClasses,
        IEnumerable<ViTBlockSpec> blocks, double layerNormEps = 1e-6)
    {
        ImageSize = imageSize;
        PatchSize = patchSize;
        Channels = channels;
        EmbedDim = embedDim;
        NumClasses = numClasses;
        Blocks = blocks.ToImmutableArray();
        LayerNormEps = layerNormEps;
        Validate();
    }

    /// <summary>Input height and width in pixels.</summary>
    public int ImageSize { get; init; }
    /// <summary>Patch size in pixels.</summary>
    public int PatchSize { get; init; }
    /// <summary>Input channels.</summary>
    public int Channels { get; init; }
    /// <summary>Width of the residual stream (embedding dimension).</summary>
    public int EmbedDim { get; init; }
    /// <summary>Number of classes of the linear head.</summary>
    public int NumClasses { get; init; }
    /// <summary>Per-block shapes, in order.</summary>
    public ImmutableArray<ViTBlockSpec> Blocks { get; init; }
    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; }
    /// <summary>
    /// The DeiT distillation token and head (default <see cref="ViTDistillation.None"/>). Kept by
    /// <see cref="WithNumClasses"/> and <see cref="WithBlocks"/>, so pruning keeps it.
    /// </summary>
    public ViTDistillation Distillation { get; init; }

    /// <summary>Tokens before the patches: the class token, and the distillation token when there is one.</summary>
    public int PrefixTokens => Distillation == ViTDistillation.None ? 1 : 2;
    /// <summary>Tokens whose final features reach a head: the class token, and the distillation token with <see cref="ViTDistillation.TokenAndHead"/>.</summary>
    public int OutputTokens => Distillation == ViTDistillation.TokenAndHead ? 2 : 1;

    /// <summary>Number of transformer blocks.</summary>
    public int Depth => Blocks.Length;
    /// <summary>Number of patches per image.</summary>
    public int NumPatches => (ImageSize / PatchSize) * (ImageSize / PatchSize);
    /// <summary>Sequence length: patches plus the class token (and the distillation token, see <see cref="PrefixTokens"/>).</summary>
    public int SequenceLength => NumPatches + PrefixTokens;
    /// <summary>True when every block has the same shape.</summary>
    public bool IsHomogeneous => Blocks.All(b => b == Blocks[0]);

    /// <summary>A uniform architecture: every block has <paramref name="heads"/> heads of size embedDim/heads.</summary>
    public static ViTArchitecture Uniform(int imageSize, int patchSize, int embedDim, int depth, int heads,
        int mlpHidden, int numClasses, int channels = 3)
    {
        if (heads <= 0 || embedDim % heads != 0)
            throw new ArgumentException($"embedDim ({embedDim}) must be a positive multiple of heads ({heads}).", nameof(heads));
        int hd = embedDim / heads;
        return new ViTArchitecture(imageSize, patchSize, channels, embedDim, numClasses,
            Enumerable.Repeat(new ViTBlockSpec(heads, hd, hd, mlpHidden), depth));
    }

    /// <summary>ViT-Tiny/16 (timm <c>vit_tiny_patch16_224</c>): 192 wide, 12 blocks, 3 heads, MLP 768.</summary>
    public static ViTArchitecture ViTTiny(int numClasses = 1000, int imageSize = 224, int patchSize = 16) => Uniform(imageSize, patchSize, 192, 12, 3, 768, numClasses);
    /// <summary>ViT-Small/16 (timm <c>vit_small_patch16_224</c>): 384 wide, 12 blocks, 6 heads, MLP 1536.</summary>
    public static ViTArchitecture ViTSmall(int numClasses = 1000, int imageSize = 224, int patchSize = 16) => Uniform(imageSize, patchSize, 384, 12, 6, 1536, numClasses);
    /// <summary>ViT-Base/16 (timm <c>vit_base_patch16_224</c>): 768 wide, 12 blocks, 12 heads, MLP 3072.</summary>
    public static ViTArchitecture ViTBase(int numClasses = 1000, int imageSize = 224, int patchSize = 16) => Uniform(imageSize, patchSize, 768, 12, 12, 3072, numClasses);
    /// <summary>DeiT-Tiny (timm <c>deit_tiny_patch16_224</c>, 5,717,416 parameters at 224²/1000 classes).</summary>
    public static ViTArchitecture DeiTTiny(int numClasses = 1000, int imageSize = 224, int patchSize = 16) => ViTTiny(numClasses, imageSize, patchSize);
    /// <summary>DeiT-Small (timm <c>deit_small_patch16_224</c>, 22,050,664 parameters at 224²/1000 classes).</summary>
    public static ViTArchitecture DeiTSmall(int numClasses = 1000, int imageSize = 224, int patchSize = 16) => ViTSmall(numClasses, imageSize, patchSize);
    /// <summary>DeiT-Base (timm <c>deit_base_patch16_224</c>, 86,567,656 parameters at 224²/1000 classes).</summary>
    public static ViTArchitecture DeiTBase(int numClasses = 1000, int imageSize = 224, int patchSize = 16) => ViTBase(numClasses, imageSize, patchSize);

    /// <summary>
    /// The reference 32×32 configuration (CIFAR-sized ViT-Tiny): patch 4, 192 wide, 6 blocks, 3 heads, MLP 768.
    /// It is the benchmark model.
    /// </summary>
    public static ViTArchitecture CifarTiny(int numClasses = 10) => Uniform(32, 4, 192, 6, 3, 768, numClasses);
    /// <summary>
    /// <see cref="CifarTiny"/> with 6 heads of 32 dimensions per block instead of 3 of 64 (the same width, depth, MLP and
    /// parameter count): a model with more heads per block for the head ranking to order.
    /// </summary>
    public static ViTArchitecture CifarTiny6Heads(int numClasses = 10) => Uniform(32, 4, 192, 6, 6, 768, numClasses);
    /// <summary>A CIFAR-sized ViT-Small: patch 4, 384 wide, 8 blocks, 6 heads, MLP 1536.</summary>
    public static ViTArchitecture CifarSmall(int numClasses = 10) => Uniform(32, 4, 384, 8, 6, 1536, numClasses);
    /// <summary>A very small 32×32 model for quick experiments and tests: patch 4, 96 wide, 4 blocks, 4 heads, MLP 192.</summary>
    public static ViTArchitecture CifarMicro(int numClasses = 10) => Uniform(32, 4, 96, 4, 4, 192, numClasses);

    /// <summary>Names accepted by <see cref="FromPreset"/>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } =
        ["vit-tiny", "vit-small", "vit-base", "deit-tiny", "deit-small", "deit-base", "cifar-micro", "cifar-tiny", "cifar-tiny-6h", "cifar-small"];

    /// <summary>Looks a preset up by name (case-insensitive, see <see cref="PresetNames"/>).</summary>
    /// <param name="name">Preset name.</param>
    /// <param name="numClasses">Number of classes.</param>
    /// <param name="imageSize">Image size for the 224² presets (ignored by the cifar-* presets, which are 32²); null keeps the preset's own.</param>
    public static ViTArchitecture FromPreset(string name, int numClasses, int? imageSize = null)
    {
        ArgumentNullException.ThrowIfNull(name);
        var a = name.Trim().ToLowerInvariant() switch
        {
            "vit-tiny" => ViTTiny(numClasses, imageSize ?? 224),
            "vit-small" => ViTSmall(numClasses, imageSize ?? 224),
            "vit-base" => ViTBase(numClasses, imageSize ?? 224),
            "deit-tiny" => DeiTTiny(numClasses, imageSize ?? 224),
            "deit-small" => DeiTSmall(numClasses, imageSize ?? 224),
            "deit-base" => DeiTBase(numClasses, imageSize ?? 224),
            "cifar-micro" => CifarMicro(numClasses),
            "cifar-tiny" => CifarTiny(numClasses),
            "cifar-tiny-6h" => CifarTiny6Heads(numClasses),
            "cifar-small" => CifarSmall(numClasses),
            _ => throw new ArgumentException($"Unknown architecture preset '{name}'. Expected one of: {string.Join(", ", PresetNames)}.", nameof(name)),
        };
        return a;
    }

    /// <summary>Returns a copy with a different number of classes.</summary>
    public ViTArchitecture WithNumClasses(int numClasses) => new(ImageSize, PatchSize, Channels, EmbedDim, numClasses, Blocks, LayerNormEps) { Distillation = Distillation };

    /// <summary>Returns a copy with different block shapes (what pruning produces).</summary>
    public ViTArchitecture WithBlocks(IEnumerable<ViTBlockSpec> blocks) => new(ImageSize, PatchSize, Channels, EmbedDim, NumClasses, blocks, LayerNormEps) { Distillation = Distillation };

    /// <summary>Returns a copy with a different input size (the position embedding then has a different length).</summary>
    public ViTArchitecture WithImageSize(int imageSize) => new(imageSize, PatchSize, Channels, EmbedDim, NumClasses, Blocks, LayerNormEps) { Distillation = Distillation };

    /// <summary>Returns a copy with a different distillation token/head setting.</summary>
    public ViTArchitecture WithDistillation(ViTDistillation distillation)
    {
        var a = new ViTArchitecture(ImageSize, PatchSize, Channels, EmbedDim, NumClasses, Blocks, LayerNormEps) { Distillation = distillation };
        a.Validate();
        return a;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the offending field when the architecture is invalid.</summary>
    public void Validate()
    {
        if (ImageSize <= 0) throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, "ImageSize must be positive.");
        if (PatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(PatchSize), PatchSize, "PatchSize must be positive.");
        if (ImageSize % PatchSize != 0)
            throw new ArgumentException($"ImageSize ({ImageSize}) must be divisible by PatchSize ({PatchSize}).", nameof(PatchSize));
        if (Channels <= 0) throw new ArgumentOutOfRangeException(nameof(Channels), Channels, "Channels must be positive.");
        if (EmbedDim <= 0) throw new ArgumentOutOfRangeException(nameof(EmbedDim), EmbedDim, "EmbedDim must be positive.");
        if (NumClasses < 2) throw new ArgumentOutOfRangeException(nameof(NumClasses), NumClasses, "NumClasses must be at least 2.");
        if (!Enum.IsDefined(Distillation)) throw new ArgumentOutOfRangeException(nameof(Distillation), Distillation, "Unknown distillation setting.");
        if (Blocks.IsDefault || Blocks.Length == 0) throw new ArgumentException("An architecture needs at least one block.", nameof(Blocks));
        for (int i = 0; i < Blocks.Length; i++)
        {
            var b = Blocks[i] ?? throw new ArgumentException($"Block {i} is null.", nameof(Blocks));
            if (b.Heads < 1 || b.QkDim < 1 || b.VDim < 1 || b.MlpHidden < 1)
                throw new ArgumentException($"Block {i} ({b}) must keep at least one head, one q/k dim, one v dim and one MLP neuron.", nameof(Blocks));
        }
    }

    // ---- counting -------------------------------------------------------------------------------------------

    /// <summary>Parameters of one block: two LayerNorms, fused qkv, output projection, two MLP layers (with biases).</summary>
    public long BlockParameterCount(int block) => BlockParameterCount(EmbedDim, Blocks[block]);

    /// <summary>Parameters of a block of shape <paramref name="b"/> in a model of width <paramref name="embedDim"/>.</summary>
    public static long BlockParameterCount(int embedDim, ViTBlockSpec b)
    {
        long d = embedDim;
        return 2 * 2 * d                                   // norm1, norm2
             + (d + 1) * b.QkvWidth                        // qkv
             + ((long)b.AttentionOutWidth + 1) * d         // proj
             + (d + 1) * b.MlpHidden                       // fc1
             + ((long)b.MlpHidden + 1) * d;                // fc2
    }

    /// <summary>
    /// Parameters outside the blocks: patch embedding, class token, position embedding, final norm, head (and the
    /// distillation token and head).
    /// </summary>
    public long NonBlockParameterCount
    {
        get
        {
            long d = EmbedDim;
            return (long)Channels * PatchSize * PatchSize * d + d  // patch embedding conv
                 + d * PrefixTokens                               // class (and distillation) token
                 + (long)SequenceLength * d                        // position embedding
                 + 2 * d                                           // final norm
                 + (d + 1) * NumClasses * OutputTokens;            // head (and distillation head)
        }
    }

    /// <summary>Total number of trainable parameters (equals timm's count for the presets).</summary>
    public long ParameterCount => NonBlockParameterCount + Enumerable.Range(0, Depth).Sum(BlockParameterCount);

    /// <summary>
    /// Forward FLOPs of one block for one image, counted as 2 × multiply-adds of the matrix products
    /// (qkv, q·kᵀ, attention·v, projection, MLP); element-wise work (norms, softmax, GELU) is not counted.
    /// </summary>
    public long BlockForwardFlops(int block)
    {
        var b = Blocks[block];
        long n = SequenceLength, d = EmbedDim;
        long macs = n * d * b.QkvWidth                 // qkv projection
                  + (long)b.Heads * n * n * b.QkDim    // q kᵀ
                  + (long)b.Heads * n * n * b.VDim     // attn v
                  + n * b.AttentionOutWidth * d        // output projection
                  + 2 * n * d * b.MlpHidden;           // fc1 + fc2
        return 2 * macs;
    }

    /// <summary>Forward FLOPs for one image (2 × multiply-adds: patch embedding, blocks, head). Training ≈ 3 × this.</summary>
    public long ForwardFlops
    {
        get
        {
            long d = EmbedDim;
            long macs = (long)NumPatches * Channels * PatchSize * PatchSize * d + d * NumClasses * OutputTokens;
            return 2 * macs + Enumerable.Range(0, Depth).Sum(BlockForwardFlops);
        }
    }

    /// <summary>
    /// Forward FLOPs of the last block for one image as <see cref="VisionTransformerModel.forward"/> runs it: only the class
    /// token's output reaches the head, so only its query, attention row, projection and MLP are computed, while keys and
    /// values are still projected for every token (2 × multiply-adds, as <see cref="BlockForwardFlops"/>).
    /// </summary>
    public long ClassTokenBlockForwardFlops(int block)
    {
        var b = Blocks[block];
        long n = SequenceLength, d = EmbedDim, t = OutputTokens;
        long macs = n * d * (long)b.Heads * (b.QkDim + b.VDim)       // k and v projections, every token
                  + t * (d * (long)b.Heads * b.QkDim                 // q projection, class (and distillation) token
                  + (long)b.Heads * n * b.QkDim                      // its q kᵀ row
                  + (long)b.Heads * n * b.VDim                       // its attention · v
                  + (long)b.AttentionOutWidth * d                    // output projection
                  + 2 * d * (long)b.MlpHidden);                      // fc1 + fc2
        return 2 * macs;
    }

    /// <summary>
    /// Forward FLOPs per image that <see cref="VisionTransformerModel.forward"/> actually executes to produce logits:
    /// <see cref="ForwardFlops"/> with the last block counted by <see cref="ClassTokenBlockForwardFlops"/>. Throughput
    /// benchmarks divide by this; compression ratios use <see cref="ForwardFlops"/>, the usual (timm/fvcore) count.
    /// </summary>
    public long ExecutedForwardFlops => ForwardFlops - BlockForwardFlops(Depth - 1) + ClassTokenBlockForwardFlops(Depth - 1);

    // ---- equality and serialisation -------------------------------------------------------------------------

    /// <inheritdoc />
    public bool Equals(ViTArchitecture? other) =>
        other is not null && ImageSize == other.ImageSize && PatchSize == other.PatchSize && Channels == other.Channels
        && EmbedDim == other.EmbedDim && NumClasses == other.NumClasses && LayerNormEps.Equals(other.LayerNormEps)
        && Distillation == other.Distillation && Blocks.SequenceEqual(other.Blocks);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(ImageSize); h.Add(PatchSize); h.Add(Channels); h.Add(EmbedDim); h.Add(NumClasses); h.Add(LayerNormEps); h.Add(Distillation);
        foreach (var b in Blocks) h.Add(b);
        return h.ToHashCode();
    }

    /// <inheritdoc />
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"ViT(img={ImageSize}, patch={PatchSize}, ch={Channels}, dim={EmbedDim}, depth={Depth}, classes={NumClasses}");
        if (Distillation != ViTDistillation.None) sb.Append(Distillation == ViTDistillation.TokenAndHead ? ", distilled" : ", distillation token");
        if (IsHomogeneous) sb.Append(CultureInfo.InvariantCulture, $", {Blocks[0]})");
        else sb.Append(", blocks=[").Append(string.Join("; ", Blocks)).Append("])");
        return sb.ToString();
    }

    // Version 1: no distillation token. Version 2 appends the distillation setting; it is written only when there is a
    // distillation token, so every other model is written exactly as before and older readers keep reading it.
    private const int FormatVersion = 1;
    private const int DistillationFormatVersion = 2;

    /// <summary>Writes the architecture in a compact binary form (used inside saved models).</summary>
    public void Write(BinaryWriter w)
    {
        w.Write(Distillation == ViTDistillation.None ? FormatVersion : DistillationFormatVersion);
        w.Write(ImageSize); w.Write(PatchSize); w.Write(Channels); w.Write(EmbedDim); w.Write(NumClasses); w.Write(LayerNormEps);
        w.Write(Blocks.Length);
        foreach (var b in Blocks) { w.Write(b.Heads); w.Write(b.QkDim); w.Write(b.VDim); w.Write(b.MlpHidden); }
        if (Distillation != ViTDistillation.None) w.Write((int)Distillation);
    }

    /// <summary>Reads an architecture written by <see cref="Write"/>; throws <see cref="InvalidDataException"/> on malformed input.</summary>
    public static ViTArchitecture Read(BinaryReader r)
    {
        int version = r.ReadInt32();
        if (version is not (FormatVersion or DistillationFormatVersion))
            throw new InvalidDataException($"Unsupported ViT architecture format version {version} (expected {FormatVersion} or {DistillationFormatVersion}).");
        int img = r.ReadInt32(), patch = r.ReadInt32(), ch = r.ReadInt32(), dim = r.ReadInt32(), classes = r.ReadInt32();
        double eps = r.ReadDouble();
        int depth = r.ReadInt32();
        if (depth <= 0 || depth > 10_000) throw new InvalidDataException($"Corrupted ViT architecture: depth {depth}.");
        var blocks = new ViTBlockSpec[depth];
        for (int i = 0; i < depth; i++) blocks[i] = new ViTBlockSpec(r.ReadInt32(), r.ReadInt32(), r.ReadInt32(), r.ReadInt32());
        var distillation = version == DistillationFormatVersion ? (ViTDistillation)r.ReadInt32() : ViTDistillation.None;
        if (version == DistillationFormatVersion && distillation is not (ViTDistillation.Token or ViTDistillation.TokenAndHead))
            throw new InvalidDataException($"Corrupted ViT architecture: distillation setting {(int)distillation}.");
        try { return new ViTArchitecture(img, patch, ch, dim, classes, blocks, eps).WithDistillation(distillation); }
        catch (ArgumentException e) { throw new InvalidDataException("Corrupted ViT architecture: " + e.Message, e); }
    }
}
