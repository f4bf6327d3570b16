using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// Multi-head self-attention whose heads share a q/k dim and a v dim (which may differ from each other and
/// from embedDim/heads after pruning). The fused qkv output is laid out [q heads | k heads | v heads], as timm's.
/// </summary>
/// <remarks>
/// Explicit q·kᵀ → softmax → ·v (<see cref="Attend"/>, the one place of the scale and the softmax) on every
/// <see cref="AttentionPath"/>; the paths differ in how q, kᵀ and v are sliced out of the qkv output and in which rows
/// they compute. Softmax statistics are accumulated in float32 by the kernel whatever the input dtype.
/// </remarks>
internal sealed class Attention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // names match timm/PyTorch state-dict keys
    public ViTLinear qkv;
    public ViTLinear proj;
#pragma warning restore IDE1006

    public ViTBlockSpec Spec { get; }

    /// <summary>Optional per-head multiplier [heads] (the head mask Mᴴ of GOHSP); not a parameter, not saved.</summary>
    public Tensor? HeadMask { get; set; }

    public Attention(int embedDim, ViTBlockSpec spec, ComputeSettings settings) : base("Attention")
    {
        Spec = spec;
        qkv = new ViTLinear(embedDim, spec.QkvWidth, settings);
        proj = new ViTLinear(spec.AttentionOutWidth, embedDim, settings);
        RegisterComponents();
    }

    /// <summary>The attention output [B, N, D] on the path autograd mode selects (<see cref="AttentionPaths.For"/>).</summary>
    public override Tensor forward(Tensor x) => Forward(x, AttentionPaths.For(is_grad_enabled(), classTokenOnly: false, qkv.Float32));

    /// <summary>
    /// The attention output on <paramref name="path"/>: [B, N, D], or [B, 1, D] on <see cref="AttentionPath.ClassToken"/>.
    /// Both inference paths compute the same attention here; they differ in <see cref="Block"/>'s residual.
    /// </summary>
    internal Tensor Forward(Tensor x, AttentionPath path) => path switch
    {
        AttentionPath.Autograd => ForwardAllTokens(x),
        AttentionPath.ClassToken => ForwardClassToken(x, 1),
        _ => ForwardInference(x),
    };

    /// <summary><see cref="AttentionPath.Autograd"/>: every token's attention through 4-D products, then the projection.</summary>
    private Tensor ForwardAllTokens(Tensor x)
    {
        using var o = HeadOutputs(x);                                 // [B, h, N, dv]
        return ProjectHeads(o);
    }

    /// <summary>
    /// <see cref="AttentionPath.ClassToken"/>: the attention output of the class token alone, [B, 1, D]. Its query attends
    /// to every token's key and value, and only its row goes through the output projection: the same maths as the first
    /// row of <see cref="AttentionPath.Autograd"/>, with or without autograd. <paramref name="tokens"/> &gt; 1 computes the
    /// first rows (the class and distillation tokens of a distilled DeiT): [B, tokens, D].
    /// </summary>
    public Tensor ForwardClassToken(Tensor x, int tokens = 1)
    {
        using var scope = NewDisposeScope();
        var (q, kT, v) = ProjectClassToken(x, tokens);
        return ProjectHeads(Attend(q, kT, v)).MoveToOuterDisposeScope();   // Attend: [B, h, tokens, dv]
    }

    /// <summary>
    /// <see cref="AttentionPath.Inference"/>: <see cref="MergedHeadsInference"/>, then the output projection.
    /// </summary>
    private Tensor ForwardInference(Tensor x)
    {
        using var scope = NewDisposeScope();
        return proj.forward(MergedHeadsInference(x)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Without autograd: every head's output (times its mask) side by side, [B, N, heads·vDim], before the output
    /// projection. One batched matrix product per head on strided views of the fused qkv output (3-D <c>bmm</c> takes them
    /// as they are, whereas the 4-D <c>matmul</c> of <see cref="HeadOutputs"/> first copies q, kᵀ and v into contiguous
    /// [B·heads] batches). A head with mask 0 contributes zeros and is not computed. <see cref="Block"/> runs the
    /// projection itself on <see cref="AttentionPath.InferenceAccumulate"/>, accumulating into the residual stream.
    /// </summary>
    internal Tensor MergedHeadsInference(Tensor x)
    {
        using var scope = NewDisposeScope();
        int h = Spec.Heads;
        var t = qkv.forward(x);                                        // [B, N, h·dq | h·dq | h·dv]
        var mask = HeadMaskValues();
        var outputs = new Tensor[h];
        for (int i = 0; i < h; i++)
        {
            var (q, kT, v) = HeadViews(t, i);
            if (mask is not null && mask[i] == 0) { outputs[i] = zeros_like(v); continue; }
            outputs[i] = Attend(q, kT, v);                              // [B, N, dv]
            if (mask is not null && mask[i] != 1)
            {
                using var m = ((double)mask[i]).ToScalar();
                outputs[i].mul_(m);
            }
        }
        var merged = h == 1 ? outputs[0] : cat(outputs, 2);              // [B, N, h·dv]
        return merged.MoveToOuterDisposeScope();
    }

    /// <summary>Per-head attention outputs before the output projection: [B, heads, N, vDim] (autograd-friendly 4-D products).</summary>
    public Tensor HeadOutputs(Tensor x)
    {
        var (q, kT, v) = Project(x);
        using (q)
        using (kT)
        using (v)
            return Attend(q, kT, v);
    }

    /// <summary>Attention probabilities per head: [B, heads, N, N] in float32 (used by attention-map head similarities).</summary>
    public Tensor AttentionMaps(Tensor x)
    {
        var (q, kT, v) = Project(x);
        using (q)
        using (kT)
        using (v)
        using (var s = Scores(q, kT))
        using (var s32 = s.to(ScalarType.Float32))
            return s32.softmax(-1);
    }

    /// <summary>
    /// softmax(q·kᵀ/√dq)·v per head, [..., T, vDim], for q [..., T, dq], kᵀ [..., dq, N] and v [..., N, vDim]: one head's
    /// 3-D views (<see cref="AttentionPath.Inference"/>) or [B, heads, ...] batches.
    /// </summary>
    private Tensor Attend(Tensor q, Tensor kT, Tensor v)
    {
        using var s = Scores(q, kT);
        using var p = s.softmax(-1);
        return Product(p, v);
    }

    /// <summary>Pre-softmax attention scores q·kᵀ/√dq, [..., T, N], in the compute dtype.</summary>
    private Tensor Scores(Tensor q, Tensor kT)
    {
        var s = Product(q, kT);
        // an explicit Scalar held across the call: an implicit one is unreachable once its handle is passed to native code,
        // and a finalizer running mid-call frees it ("Unknown scalar type")
        using var scale = (1.0 / Math.Sqrt(Spec.QkDim)).ToScalar();
        return s.mul_(scale);
    }

    /// <summary>a·b: <c>bmm</c> for 3-D operands (strided views as they are), <c>matmul</c> for 4-D ones.</summary>
    private static Tensor Product(Tensor a, Tensor b) => a.dim() == 3 ? bmm(a, b) : matmul(a, b);

    /// <summary>
    /// Splits the fused qkv projection of <paramref name="x"/> into q [B, h, N, dq], kᵀ [B, h, dq, N] and v [B, h, N, dv]
    /// (strided views).
    /// </summary>
    private (Tensor Q, Tensor KT, Tensor V) Project(Tensor x)
    {
        long b = x.shape[0], n = x.shape[1];
        int h = Spec.Heads, dq = Spec.QkDim, dv = Spec.VDim;
        var layout = Spec.Qkv;
        using var t = qkv.forward(x);
        // split (not three narrows): its backward is a single cat instead of three zero-filled full-width buffers.
        var parts = t.split(new long[] { layout.QRows, layout.KRows, layout.VRows }, -1);
        try
        {
            return (parts[0].view(b, n, h, dq).transpose(1, 2),
                    parts[1].view(b, n, h, dq).permute(0, 2, 3, 1),
                    parts[2].view(b, n, h, dv).transpose(1, 2));
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>
    /// The first <paramref name="tokens"/> tokens' query q [B, h, tokens, dq] and every token's kᵀ [B, h, dq, N] and v
    /// [B, h, N, dv]: the qkv product of those tokens' q rows, and of the k and v rows for every token. Call inside a
    /// dispose scope.
    /// </summary>
    private (Tensor Q, Tensor KT, Tensor V) ProjectClassToken(Tensor x, int tokens)
    {
        long b = x.shape[0], n = x.shape[1];
        int h = Spec.Heads, dq = Spec.QkDim, dv = Spec.VDim;
        var layout = Spec.Qkv;
        var cls = x.narrow(1, 0, tokens);
        var q = qkv.ForwardRows(cls, 0, layout.QRows).view(b, tokens, h, dq).transpose(1, 2);   // [B, h, tokens, dq]
        var kv = qkv.ForwardRows(x, layout.KStart, layout.KRows + layout.VRows);            // [B, N, h·dq | h·dv]
        var parts = kv.split(new long[] { layout.KRows, layout.VRows }, -1);
        var kT = parts[0].view(b, n, h, dq).permute(0, 2, 3, 1);                            // [B, h, dq, N]
        var v = parts[1].view(b, n, h, dv).transpose(1, 2);                                 // [B, h, N, dv]
        return (q, kT, v);
    }

    /// <summary>
    /// Head <paramref name="head"/>'s q [B, N, dq], kᵀ [B, dq, N] and v [B, N, dv]: strided views of the qkv output
    /// <paramref name="t"/>.
    /// </summary>
    private (Tensor Q, Tensor KT, Tensor V) HeadViews(Tensor t, int head)
    {
        var layout = Spec.Qkv;
        var q = t.narrow(2, layout.QRow(head, 0), Spec.QkDim);
        var k = t.narrow(2, layout.KRow(head, 0), Spec.QkDim);
        var v = t.narrow(2, layout.VRow(head, 0), Spec.VDim);
        return (q, k.transpose(1, 2), v);
    }

    /// <summary>The head mask's values on the CPU, or null without a mask.</summary>
    private float[]? HeadMaskValues()
    {
        if (HeadMask is null) return null;
        using var m = HeadMask.cpu();
        return m.data<float>().ToArray();
    }

    /// <summary>Per-head outputs [B, heads, T, vDim], times the head mask, side by side through the output projection: [B, T, D].</summary>
    private Tensor ProjectHeads(Tensor o)
    {
        using var scope = NewDisposeScope();
        if (HeadMask is not null) o = o.mul(HeadMask.to(o.dtype, o.device).view(1, Spec.Heads, 1, 1));
        var merged = o.transpose(1, 2).reshape(o.shape[0], o.shape[2], Spec.AttentionOutWidth);
        return proj.forward(merged).MoveToOuterDisposeScope();
    }
}
