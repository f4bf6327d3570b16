using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// A vision transformer (ViT/DeiT family) in pure TorchSharp: patch embedding, class token, learned position
/// embedding, pre-norm blocks, final LayerNorm and a linear head on the class token. Its shape is given by a
/// <see cref="ViTArchitecture"/>, which may differ per block. State-dict keys follow timm
/// (<c>patch_embed.proj.weight</c>, <c>cls_token</c>, <c>pos_embed</c>, <c>blocks.N.attn.qkv.weight</c>, …).
/// </summary>
/// <remarks>Input: normalised images [B, C, H, W] float32. Output: logits [B, classes] float32.</remarks>
public sealed partial class VisionTransformerModel : nn.Module<Tensor, Tensor>
{
    private readonly ComputeSettings _settings = new();

#pragma warning disable IDE1006 // names match timm/PyTorch state-dict keys
    private readonly PatchEmbedding patch_embed;
    private readonly Parameter cls_token;
    private readonly Parameter pos_embed;
    private readonly ModuleList<Block> blocks;
    private readonly LayerNorm norm;
    private readonly ViTLinear head;
    private readonly Parameter? dist_token;   // DeiT distillation token (ViTDistillation.Token / TokenAndHead)
    private readonly ViTLinear? head_dist;    // its head (ViTDistillation.TokenAndHead)
#pragma warning restore IDE1006

    /// <summary>Builds a model with freshly initialised weights (truncated normal σ=0.02 as in timm/DeiT).</summary>
    /// <param name="architecture">The architecture.</param>
    /// <param name="seed">Seed for the weight initialisation; null uses the global torch generator.</param>
    public VisionTransformerModel(ViTArchitecture architecture, long? seed = null) : base("VisionTransformer")
    {
        ArgumentNullException.ThrowIfNull(architecture);
        architecture.Validate();
        Platform.NativeAllocator.EnsureTuned();
        Architecture = architecture;
        _inferenceSliceSize = DefaultInferenceSliceSize(architecture);
        int d = architecture.EmbedDim;
        patch_embed = new PatchEmbedding(architecture.Channels, d, architecture.PatchSize);
        cls_token = nn.Parameter(zeros(1, 1, d));
        if (architecture.Distillation != ViTDistillation.None) dist_token = nn.Parameter(zeros(1, 1, d));
        pos_embed = nn.Parameter(zeros(1, architecture.SequenceLength, d));
        blocks = new ModuleList<Block>(architecture.Blocks.Select(b => new Block(d, b, architecture.LayerNormEps, _settings, architecture.OutputTokens)).ToArray());
        norm = nn.LayerNorm(d, architecture.LayerNormEps);
        head = new ViTLinear(d, architecture.NumClasses, _settings);
        if (architecture.Distillation == ViTDistillation.TokenAndHead) head_dist = new ViTLinear(d, architecture.NumClasses, _settings);
        RegisterComponents();
        Initialize(seed);
    }

    /// <summary>The architecture this model was built from.</summary>
    public ViTArchitecture Architecture { get; }

    /// <summary>Precision of the matrix products (float32 by default; see <see cref="ComputePrecision"/>).</summary>
    public ComputePrecision Precision
    {
        get => _settings.Precision;
        set => _settings.Precision = value;
    }

    internal IList<Block> Blocks => blocks;
    internal LayerNorm FinalNorm => norm;
    internal ViTLinear Head => head;
    internal ViTLinear? DistillationHead => head_dist;
    internal Parameter ClassToken => cls_token;
    internal Parameter? DistillationToken => dist_token;
    internal Parameter PositionEmbedding => pos_embed;
    internal Conv2d PatchProjection => patch_embed.proj;

    private void Initialize(long? seed)
    {
        // Values are drawn in C# from a seeded System.Random, not from torch's global generator, so that the same
        // seed gives the same weights even while other threads use TorchSharp's RNG.
        using var _ = no_grad();
        var rng = seed is long s ? new Random(unchecked((int)(s ^ (s >> 32)))) : new Random();
        Fill(pos_embed, rng, () => TruncNormal(rng, 0.02));
        Fill(cls_token, rng, () => TruncNormal(rng, 0.02));
        if (dist_token is not null) Fill(dist_token, rng, () => TruncNormal(rng, 0.02));
        foreach (var m in modules())
        {
            if (m is ViTLinear l)
            {
                Fill(l.weight, rng, () => TruncNormal(rng, 0.02));
                l.bias.zero_();
            }
        }
        // Patch embedding: PyTorch's default Conv2d init (kaiming-uniform with a = sqrt(5) => U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
        var w = patch_embed.proj.weight!;
        double bound = 1.0 / Math.Sqrt(w.shape[1] * w.shape[2] * w.shape[3]);
        Fill(w, rng, () => (rng.NextDouble() * 2 - 1) * bound);
        if (patch_embed.proj.bias is Tensor b) Fill(b, rng, () => (rng.NextDouble() * 2 - 1) * bound);
    }

    private static void Fill(Tensor t, Random rng, Func<double> next)
    {
        var values = new float[t.numel()];
        for (int i = 0; i < values.Length; i++) values[i] = (float)next();
        using var src = tensor(values, t.shape);
        t.copy_(src);
    }

    /// <summary>Normal(0, std) truncated to [-2, 2] (absolute, as timm's trunc_normal_ defaults).</summary>
    private static double TruncNormal(Random rng, double std)
    {
        while (true)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double z = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2) * std;
            if (z >= -2 && z <= 2) return z;
        }
    }

    /// <summary>Token features after the final norm: [B, prefix + N, D] (<see cref="ViTArchitecture.PrefixTokens"/> tokens first).</summary>
    public Tensor ForwardTokens(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = TokensBeforeBlocks(images);
        foreach (var b in blocks) x = b.forward(x);
        return norm.forward(x).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Patch embedding + class token (+ distillation token) + position embedding: the input of block 0,
    /// [B, prefix + N, D].
    /// </summary>
    internal Tensor TokensBeforeBlocks(Tensor images)
    {
        CheckInput(images);
        long b = images.shape[0];
        using var p = patch_embed.forward(images);
        using var cls = cls_token.expand(b, -1, -1);
        if (dist_token is null)
        {
            using var t = cat([cls, p], 1);
            return t.add(pos_embed, Scalars.One);
        }
        using var dist = dist_token.expand(b, -1, -1);
        using var td = cat([cls, dist, p], 1);
        return td.add(pos_embed, Scalars.One);
    }

    /// <summary>Logits [B, classes] for normalised images [B, C, H, W].</summary>
    /// <remarks>
    /// On the CPU without autograd (inference, evaluation) a large batch is run in consecutive slices of
    /// <see cref="InferenceSliceSize"/> images and the logits are concatenated: the result is the same, but the
    /// activations of one slice stay small enough to be reused from the allocator's free lists and the cache instead
    /// of being fresh pages every time (docs/benchmarks.md, "Where inference time goes"). The slices are as even as
    /// possible (64 images with a limit of 42 run as 2 × 32).
    /// <para>
    /// The last block computes the class token's output only (the other tokens' outputs never reach the head; with a
    /// distillation head, the class and distillation tokens' outputs), with and
    /// without autograd: the logits and gradients are those of the full computation, for
    /// <see cref="ViTArchitecture.ExecutedForwardFlops"/> instead of <see cref="ViTArchitecture.ForwardFlops"/>.
    /// <see cref="ForwardTokens"/> still returns every token.
    /// </para>
    /// </remarks>
    public override Tensor forward(Tensor images)
    {
        long batch = images.dim() == 4 ? images.shape[0] : 0;
        if (AttentionPaths.SlicesBatch(is_grad_enabled(), images.device_type, batch, InferenceSliceSize))
        {
            using var scope = NewDisposeScope();
            var parts = new List<Tensor>();
            foreach (var (start, length) in SliceRanges(batch, InferenceSliceSize))
            {
                using var part = images.narrow(0, start, length);
                parts.Add(ForwardBatch(part));
            }
            return cat(parts, 0).MoveToOuterDisposeScope();
        }
        return ForwardBatch(images);
    }

    /// <summary>Splits <paramref name="batch"/> images into as few slices of at most <paramref name="maxSlice"/> as possible, as even as possible.</summary>
    internal static IEnumerable<(long Start, long Length)> SliceRanges(long batch, int maxSlice)
    {
        long slices = (batch + maxSlice - 1) / maxSlice, slice = (batch + slices - 1) / slices;
        for (long start = 0; start < batch; start += slice)
            yield return (start, Math.Min(slice, batch - start));
    }

    /// <summary>
    /// The largest number of images <see cref="forward"/> runs at once without autograd: as many as keep the largest
    /// intermediate activation (a block's qkv or MLP hidden output, or one head's attention scores, in float32)
    /// within <see cref="InferenceSliceBytes"/>, and at least one. Settable for tests and measurements
    /// (<see cref="int.MaxValue"/> turns slicing off).
    /// </summary>
    internal int InferenceSliceSize
    {
        get => _inferenceSliceSize;
        set => _inferenceSliceSize = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "At least one image per slice.");
    }

    private int _inferenceSliceSize;

    private static int DefaultInferenceSliceSize(ViTArchitecture architecture)
    {
        long tokens = architecture.SequenceLength;
        long widest = architecture.Blocks.Max(b => Math.Max(Math.Max(b.QkvWidth, b.MlpHidden), tokens));
        return (int)Math.Clamp(InferenceSliceBytes / (tokens * widest * sizeof(float)), 1, int.MaxValue);
    }

    /// <summary>
    /// Activation budget of one inference slice (8 MiB): slices small enough that glibc reuses freed activations instead
    /// of handing them back to the kernel, and large enough to keep the matrix products efficient (the measurements:
    /// docs/benchmarks.md, "Where inference time goes").
    /// </summary>
    internal const long InferenceSliceBytes = 8L << 20;

    private Tensor ForwardBatch(Tensor images)
    {
        using var scope = NewDisposeScope();
        var x = TokensBeforeBlocks(images);
        // Only the class token of the last block reaches the head: that block computes its row alone
        // (AttentionPath.ClassToken; the same logits and gradients, about 1/depth fewer FLOPs).
        for (int i = 0; i < blocks.Count; i++)
            x = blocks[i].Forward(x, blocks[i].PathFor(x, classTokenOnly: i == blocks.Count - 1));
        var logits = Logits(x);
        if (logits.dtype != ScalarType.Float32) logits = logits.to(ScalarType.Float32);
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The logits from the last block's output [B, T, D] (T ≥ <see cref="ViTArchitecture.OutputTokens"/>): the head on the
    /// normed class token; with a distillation head, the mean of that and the distillation head on the normed
    /// distillation token (DeiT's prediction). Call inside a dispose scope.
    /// </summary>
    internal Tensor Logits(Tensor x)
    {
        var logits = head.forward(norm.forward(x.select(1, 0)));
        if (head_dist is null) return logits;
        var dist = head_dist.forward(norm.forward(x.select(1, 1)));
        using var half = 0.5.ToScalar();
        return logits.add_(dist).mul_(half);
    }

    private void CheckInput(Tensor images)
    {
        var a = Architecture;
        if (images.dim() != 4 || images.shape[1] != a.Channels || images.shape[2] != a.ImageSize || images.shape[3] != a.ImageSize)
            throw new ArgumentException(
                $"Expected images of shape [B, {a.Channels}, {a.ImageSize}, {a.ImageSize}], got [{string.Join(", ", images.shape)}].", nameof(images));
    }

    /// <summary>Number of trainable parameter elements actually held by the module.</summary>
    public long CountParameters() => parameters().Sum(p => p.numel());
}
