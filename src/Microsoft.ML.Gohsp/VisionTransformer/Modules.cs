using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>A linear layer (weight [out, in], bias [out]) that honours the model's <see cref="ComputePrecision"/>.</summary>
internal sealed class ViTLinear : nn.Module<Tensor, Tensor>
{
    private readonly ComputeSettings _settings;
#pragma warning disable IDE1006 // names match timm/PyTorch state-dict keys
    public Parameter weight;
    public Parameter bias;
#pragma warning restore IDE1006

    public ViTLinear(int inFeatures, int outFeatures, ComputeSettings settings) : base("Linear")
    {
        _settings = settings;
        weight = nn.Parameter(empty(outFeatures, inFeatures));
        bias = nn.Parameter(zeros(outFeatures));
        RegisterComponents();
    }

    /// <summary>Whether the layer computes in float32 (not on bfloat16 casts).</summary>
    public bool Float32 => _settings.Precision != ComputePrecision.BFloat16;
    public int InFeatures => (int)weight.shape[1];
    public int OutFeatures => (int)weight.shape[0];

    public override Tensor forward(Tensor x) => Linear(x, weight, bias);

    /// <summary>Output features [<paramref name="start"/>, <paramref name="start"/> + <paramref name="length"/>) only (a contiguous slice of the weight rows).</summary>
    public Tensor ForwardRows(Tensor x, long start, long length)
    {
        using var w = weight.narrow(0, start, length);
        using var b = bias.narrow(0, start, length);
        return Linear(x, w, b);
    }

    /// <summary>x·wᵀ + b, on bfloat16 casts when the model computes in <see cref="ComputePrecision.BFloat16"/>.</summary>
    private Tensor Linear(Tensor x, Tensor w, Tensor b)
    {
        if (_settings.Precision != ComputePrecision.BFloat16) return nn.functional.linear(x, w, b);
        using var xb = x.to(ScalarType.BFloat16);
        using var wb = w.to(ScalarType.BFloat16);
        using var bb = b.to(ScalarType.BFloat16);
        return nn.functional.linear(xb, wb, bb);
    }
}

/// <summary>Patch embedding: a Conv2d with kernel = stride = patch size, flattened to [B, patches, dim].</summary>
internal sealed class PatchEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public Conv2d proj;
#pragma warning restore IDE1006

    public PatchEmbedding(int channels, int embedDim, int patchSize) : base("PatchEmbed")
    {
        proj = nn.Conv2d(channels, embedDim, patchSize, stride: patchSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (!is_grad_enabled())
        {
            // Without autograd: the patches gathered into rows [B, N, C·p·p] (one copy of the image) and one matrix
            // product with the kernel as a [D, C·p·p] matrix. The same sums as the convolution, which libtorch's CPU
            // kernel runs slower for these few input channels, and the result is contiguous [B, N, D] at once.
            using var scope = NewDisposeScope();
            long b = x.shape[0], c = x.shape[1], hh = x.shape[2], ww = x.shape[3], p = proj.weight!.shape[2];
            var patches = x.reshape(b, c, hh / p, p, ww / p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, hh / p * (ww / p), c * p * p);
            var w = proj.weight.view(proj.weight.shape[0], -1);
            return nn.functional.linear(patches, w, proj.bias).MoveToOuterDisposeScope();
        }
        using var y = proj.forward(x);            // [B, D, H/p, W/p]
        return y.flatten(2).transpose(1, 2);      // [B, N, D]
    }
}

/// <summary>
/// Multi-head self-attention whose heads share a q/k dim and a v dim (which may differ from each other and
/// from embedDim/heads after pruning). The fused qkv output is laid out [q heads | k heads | v heads], as timm's.
/// </summary>
internal sealed class Attention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
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

    /// <summary>Splits the fused qkv projection of <paramref name="x"/> into q [B, h, N, dq], kᵀ [B, h, dq, N] and v [B, h, N, dv] (strided views).</summary>
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

    /// <summary>Pre-softmax attention scores q·kᵀ/√dq: [B, heads, N, N], in the compute dtype.</summary>
    private Tensor Scores(Tensor q, Tensor kT)
    {
        var s = matmul(q, kT);
        // an explicit Scalar held across the call: an implicit one is unreachable once its handle is passed to native code,
        // and a finalizer running mid-call frees it ("Unknown scalar type")
        using var scale = (1.0 / Math.Sqrt(Spec.QkDim)).ToScalar();
        return s.mul_(scale);
    }

    /// <summary>Per-head attention outputs before the output projection: [B, heads, N, vDim].</summary>
    /// <remarks>
    /// Explicit matmul → softmax → matmul. On the CPU this is several times faster to train than
    /// <c>scaled_dot_product_attention</c> (whose backward is slow, especially in bfloat16) for ViT sequence
    /// lengths, and no slower at inference. Softmax statistics are accumulated in float32 by the kernel
    /// whatever the input dtype.
    /// </remarks>
    public Tensor HeadOutputs(Tensor x)
    {
        var (q, kT, v) = Project(x);
        using (q)
        using (kT)
        using (v)
            return Attend(q, kT, v);
    }

    /// <summary>softmax(q·kᵀ/√dq)·v per head: [B, heads, T, vDim] for queries q [B, heads, T, dq].</summary>
    private Tensor Attend(Tensor q, Tensor kT, Tensor v)
    {
        using var s = Scores(q, kT);
        using var p = s.softmax(-1);
        return matmul(p, v);
    }

    /// <summary>Per-head outputs [B, heads, T, vDim], times the head mask, side by side through the output projection: [B, T, D].</summary>
    private Tensor ProjectHeads(Tensor o)
    {
        using var scope = NewDisposeScope();
        if (HeadMask is not null) o = o.mul(HeadMask.to(o.dtype, o.device).view(1, Spec.Heads, 1, 1));
        var merged = o.transpose(1, 2).reshape(o.shape[0], o.shape[2], Spec.AttentionOutWidth);
        return proj.forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>Attention probabilities per head: [B, heads, N, N] (used by attention-map head similarities).</summary>
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

    public override Tensor forward(Tensor x)
    {
        if (!is_grad_enabled()) return ForwardInference(x);
        using var o = HeadOutputs(x);                                 // [B, h, N, dv]
        return ProjectHeads(o);
    }

    /// <summary>
    /// The attention output of the class token alone, [B, 1, D]: its query attends to every token's key and value, and
    /// only its row goes through the output projection. Used for the last block, whose other tokens never reach the
    /// head; the same maths as <see cref="forward"/>'s first row, with or without autograd.
    /// </summary>
    public Tensor ForwardClassToken(Tensor x)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], n = x.shape[1];
        int h = Spec.Heads, dq = Spec.QkDim, dv = Spec.VDim;
        var layout = Spec.Qkv;
        var cls = x.narrow(1, 0, 1);
        var q = qkv.ForwardRows(cls, 0, layout.QRows).view(b, 1, h, dq).transpose(1, 2);   // [B, h, 1, dq]
        var kv = qkv.ForwardRows(x, layout.KStart, layout.KRows + layout.VRows);            // [B, N, h·dq | h·dv]
        var parts = kv.split(new long[] { layout.KRows, layout.VRows }, -1);
        var kT = parts[0].view(b, n, h, dq).permute(0, 2, 3, 1);                            // [B, h, dq, N]
        var v = parts[1].view(b, n, h, dv).transpose(1, 2);                                 // [B, h, N, dv]
        return ProjectHeads(Attend(q, kT, v)).MoveToOuterDisposeScope();                    // Attend: [B, h, 1, dv]
    }

    /// <summary>
    /// Inference without autograd: one batched matrix product per head on strided views of the fused qkv output
    /// (3-D <c>bmm</c> takes them as they are, whereas the 4-D <c>matmul</c> of <see cref="HeadOutputs"/> first copies
    /// q, kᵀ and v into contiguous [B·heads] batches), heads written side by side, then the output projection.
    /// A head with mask 0 contributes zeros and is not computed.
    /// </summary>
    private Tensor ForwardInference(Tensor x)
    {
        using var scope = NewDisposeScope();
        return proj.forward(MergedHeadsInference(x)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Without autograd: every head's output (times its mask) side by side, [B, N, heads·vDim], before the output
    /// projection. <see cref="Block"/> runs the projection itself, accumulating into the residual stream.
    /// </summary>
    internal Tensor MergedHeadsInference(Tensor x)
    {
        using var scope = NewDisposeScope();
        int h = Spec.Heads, dq = Spec.QkDim, dv = Spec.VDim;
        var layout = Spec.Qkv;
        var t = qkv.forward(x);                                        // [B, N, h·dq | h·dq | h·dv]
        float[]? mask = null;
        if (HeadMask is not null) { using var m = HeadMask.cpu(); mask = m.data<float>().ToArray(); }
        var outputs = new Tensor[h];
        for (int i = 0; i < h; i++)
        {
            var v = t.narrow(2, layout.VRow(i, 0), dv);                  // [B, N, dv]
            if (mask is not null && mask[i] == 0) { outputs[i] = zeros_like(v); continue; }
            var q = t.narrow(2, layout.QRow(i, 0), dq);                  // [B, N, dq]
            var k = t.narrow(2, layout.KRow(i, 0), dq);                  // [B, N, dq]
            using var scale = (1.0 / Math.Sqrt(dq)).ToScalar();   // held across the call (see Scores)
            var s = bmm(q, k.transpose(1, 2)).mul_(scale);
            var p = s.softmax(-1);
            outputs[i] = bmm(p, v);
            if (mask is not null && mask[i] != 1)
            {
                using var m = ((double)mask[i]).ToScalar();
                outputs[i].mul_(m);
            }
        }
        var merged = h == 1 ? outputs[0] : cat(outputs, 2);              // [B, N, h·dv]
        return merged.MoveToOuterDisposeScope();
    }
}

/// <summary>Two-layer MLP with exact GELU.</summary>
internal sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public ViTLinear fc1;
    public ViTLinear fc2;
#pragma warning restore IDE1006

    public Mlp(int embedDim, int hidden, ComputeSettings settings) : base("Mlp")
    {
        fc1 = new ViTLinear(embedDim, hidden, settings);
        fc2 = new ViTLinear(hidden, embedDim, settings);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        // Out of place also without autograd: libtorch 2.x's CPU gelu_ runs 4–5× slower than gelu on the same tensor and
        // touches a fresh page for every 4 KB of it (scratch measurement, docs/benchmarks.md "Where inference time goes").
        using var h = fc1.forward(x);
        using var a = nn.functional.gelu(h);
        return fc2.forward(a);
    }
}

/// <summary>Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)).</summary>
internal sealed class Block : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    public LayerNorm norm1;
    public Attention attn;
    public LayerNorm norm2;
    public Mlp mlp;
#pragma warning restore IDE1006

    public Block(int embedDim, ViTBlockSpec spec, double eps, ComputeSettings settings) : base("Block")
    {
        norm1 = nn.LayerNorm(embedDim, eps);
        attn = new Attention(embedDim, spec, settings);
        norm2 = nn.LayerNorm(embedDim, eps);
        mlp = new Mlp(embedDim, spec.MlpHidden, settings);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (!is_grad_enabled()) return ForwardInference(x);
        Tensor x1;
        using (var n1 = norm1.forward(x))
        using (var a = attn.forward(n1))
            x1 = x.add(a, Scalars.One);                   // float32 residual stream (bf16 promotes)
        using (x1)
        using (var n2 = norm2.forward(x1))
        using (var m = mlp.forward(n2))
            return x1.add(m, Scalars.One);
    }

    /// <summary>
    /// The block's output for the class token alone, [B, 1, D] (<see cref="Attention.ForwardClassToken"/>, then the
    /// class token's residual, norm and MLP): what the last block must compute for the head. Works with autograd.
    /// </summary>
    public Tensor ForwardClassToken(Tensor x)
    {
        Tensor x1;
        using (var n1 = norm1.forward(x))
        using (var a = attn.ForwardClassToken(n1))
        using (var cls = x.narrow(1, 0, 1))
            x1 = cls.add(a, Scalars.One);                                 // float32 residual stream (bf16 promotes)
        using (x1)
        using (var n2 = norm2.forward(x1))
        using (var m = mlp.forward(n2))
            return x1.add(m, Scalars.One);
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

    /// <summary>
    /// Same maths as <see cref="forward"/> without autograd: in float32 the output projection and fc2 accumulate into the
    /// residual stream; otherwise residual adds in place. Fewer temporaries either way.
    /// </summary>
    private Tensor ForwardInference(Tensor x)
    {
        // float32: the output projection and fc2 accumulate into the residual stream (x + b, then += input·Wᵀ in the matrix
        // product, addmm_), instead of writing a fresh output and adding it: one pass over the [B, N, D] stream fewer per
        // residual, which matters when pruning has made the products narrow (docs/benchmarks.md)
        if (x.dtype == ScalarType.Float32 && attn.proj.Float32 && mlp.fc1.Float32 && mlp.fc2.Float32)
        {
            Tensor y;
            using (var n1 = norm1.forward(x))
            using (var merged = attn.MergedHeadsInference(n1))
                y = Accumulate(x.add(attn.proj.bias, Scalars.One), merged, attn.proj.weight);
            using (var n2 = norm2.forward(y))
            using (var hdn = mlp.fc1.forward(n2))
            using (var g = nn.functional.gelu(hdn))
                return Accumulate(y.add_(mlp.fc2.bias, Scalars.One), g, mlp.fc2.weight);
        }
        Tensor x1;
        using (var n1 = norm1.forward(x))
        {
            var a = attn.forward(n1);
            if (a.dtype == x.dtype) x1 = a.add_(x, Scalars.One);
            else { using (a) x1 = x.add(a, Scalars.One); }
        }
        using (x1)
        using (var n2 = norm2.forward(x1))
        {
            var m = mlp.forward(n2);
            if (m.dtype == x1.dtype) return m.add_(x1, Scalars.One);
            using (m) return x1.add(m, Scalars.One);
        }
    }
}
