using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).</summary>
internal sealed class Block : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // names match timm/PyTorch state-dict keys
    public LayerNorm norm1;
    public Attention attn;
    public LayerNorm norm2;
    public Mlp mlp;
#pragma warning restore IDE1006

    /// <summary>Tokens the class-token path computes: 1, or 2 for the class and distillation tokens of a distilled DeiT.</summary>
    public int OutputTokens { get; }

    public Block(int embedDim, ViTBlockSpec spec, double eps, ComputeSettings settings, int outputTokens = 1) : base("Block")
    {
        OutputTokens = outputTokens;
        norm1 = nn.LayerNorm(embedDim, eps);
        attn = new Attention(embedDim, spec, settings);
        norm2 = nn.LayerNorm(embedDim, eps);
        mlp = new Mlp(embedDim, spec.MlpHidden, settings);
        RegisterComponents();
    }

    /// <summary>Every token's output [B, N, D], on the path <see cref="PathFor"/> selects.</summary>
    public override Tensor forward(Tensor x) => Forward(x, PathFor(x, classTokenOnly: false));

    /// <summary>
    /// The block's output for the class token alone, [B, 1, D] (<see cref="AttentionPath.ClassToken"/>; [B, 2, D] with the
    /// distillation token, see <see cref="OutputTokens"/>): what the last block must compute for the head. Works with autograd.
    /// </summary>
    public Tensor ForwardClassToken(Tensor x) => Forward(x, AttentionPath.ClassToken);

    /// <summary>
    /// The path this block runs on <paramref name="x"/> (<see cref="AttentionPaths.For"/>): the autograd mode, and whether
    /// the residual stream and the products are float32.
    /// </summary>
    internal AttentionPath PathFor(Tensor x, bool classTokenOnly) => AttentionPaths.For(
        is_grad_enabled(), classTokenOnly, x.dtype == ScalarType.Float32 && attn.proj.Float32 && mlp.fc1.Float32 && mlp.fc2.Float32);

    /// <summary>The block's output on <paramref name="path"/>: [B, N, D], or [B, 1, D] on <see cref="AttentionPath.ClassToken"/>.</summary>
    internal Tensor Forward(Tensor x, AttentionPath path)
    {
        var x1 = AttentionResidual(x, path);
        if (path == AttentionPath.InferenceAccumulate) return MlpAccumulate(x1);   // into x1's memory
        using (x1)
        using (var n2 = norm2.forward(x1))
            return AddResidual(x1, mlp.forward(n2), inPlace: path == AttentionPath.Inference);
    }

    /// <summary>
    /// The stream after the attention residual: x + attn(norm1(x)); the class token's row alone on
    /// <see cref="AttentionPath.ClassToken"/>.
    /// </summary>
    private Tensor AttentionResidual(Tensor x, AttentionPath path)
    {
        using var n1 = norm1.forward(x);
        switch (path)
        {
            case AttentionPath.InferenceAccumulate:
                using (var merged = attn.MergedHeadsInference(n1))
                    return Accumulate(x.add(attn.proj.bias, Scalars.One), merged, attn.proj.weight);
            case AttentionPath.ClassToken:
                using (var cls = x.narrow(1, 0, OutputTokens))
                    return AddResidual(cls, attn.ForwardClassToken(n1, OutputTokens), inPlace: false);
            default:
                return AddResidual(x, attn.Forward(n1, path), inPlace: path == AttentionPath.Inference);
        }
    }

    /// <summary>
    /// <see cref="AttentionPath.InferenceAccumulate"/>'s MLP residual, in place: <paramref name="x1"/> + fc2.b, then
    /// += GELU(fc1(norm2(x1)))·fc2ᵀ.
    /// </summary>
    private Tensor MlpAccumulate(Tensor x1)
    {
        using var n2 = norm2.forward(x1);
        using var g = mlp.Hidden(n2);
        return Accumulate(x1.add_(mlp.fc2.bias, Scalars.One), g, mlp.fc2.weight);
    }

    /// <summary>
    /// <paramref name="stream"/> + <paramref name="branch"/>, consuming <paramref name="branch"/>: out of place (float32
    /// residual stream; a bfloat16 branch promotes), or into the branch's memory when <paramref name="inPlace"/> and the
    /// dtypes agree (without autograd: one temporary fewer).
    /// </summary>
    private static Tensor AddResidual(Tensor stream, Tensor branch, bool inPlace)
    {
        if (inPlace && branch.dtype == stream.dtype) return branch.add_(stream, Scalars.One);
        using (branch) return stream.add(branch, Scalars.One);
    }

    /// <summary>
    /// <paramref name="into"/> += <paramref name="input"/>·<paramref name="weight"/>ᵀ in place, one matrix product that
    /// accumulates into the residual stream (<paramref name="into"/> [..., out], <paramref name="input"/> [..., in],
    /// <paramref name="weight"/> [out, in]); returns <paramref name="into"/>.
    /// </summary>
    internal static Tensor Accumulate(Tensor into, Tensor input, Tensor weight)
    {
        using var y = into.view(-1, into.shape[^1]);
        using var i = input.reshape(-1, input.shape[^1]);
        using var wt = weight.t();
        y.addmm_(i, wt);
        return into;
    }
}
