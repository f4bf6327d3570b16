using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// The computation a transformer block runs. The four give the same outputs within float rounding (tested:
/// <c>InferencePathEqualsAutogradPath</c>, <c>LastBlockComputesTheClassTokenAloneWithTheSameLogitsAndGradients</c>); they
/// differ in what they keep for the backward pass and in how many passes over memory they make, and each exists because
/// it was measured faster where it runs (docs/benchmarks.md). <see cref="AttentionPaths.For"/> is the one place that
/// chooses; <see cref="Block.Forward"/> and <see cref="Attention.Forward"/> run the chosen one.
/// </summary>
internal enum AttentionPath
{
    /// <summary>
    /// With autograd, every token: q, kᵀ and v are strided views of one <c>split</c> of the fused qkv output (its backward
    /// is a single cat instead of three zero-filled full-width buffers), 4-D <c>matmul</c> → softmax → <c>matmul</c>, the
    /// head mask as a multiplier, out-of-place residual adds (the backward needs their inputs). Explicit attention
    /// rather than <c>scaled_dot_product_attention</c>, whose CPU backward in bfloat16 measured several times slower than
    /// the explicit form (docs/benchmarks.md).
    /// </summary>
    Autograd,

    /// <summary>
    /// Without autograd, when the products are not all float32 (bfloat16): one 3-D <c>bmm</c> per head on strided views
    /// of the fused qkv output (the 4-D <c>matmul</c> of <see cref="Autograd"/> first copies q, kᵀ and v into contiguous
    /// [B·heads] batches), a head with mask 0 not computed, residual adds in place (one temporary fewer).
    /// </summary>
    Inference,

    /// <summary>
    /// Without autograd in float32: the attention of <see cref="Inference"/>, and the output projection and fc2
    /// accumulate into the residual stream (x + b, then <c>addmm_</c> of the product) instead of writing a fresh output
    /// and adding it: one pass over the [B, N, D] stream and one activation fewer per residual, which matters most for
    /// heavily pruned models, whose products are narrow.
    /// </summary>
    InferenceAccumulate,

    /// <summary>
    /// The model's last block, with or without autograd: only the class token reaches the head, so the class token's
    /// query alone attends to every token's key and value, and only its row goes through the output projection,
    /// residual, norm and MLP (out-of-place adds). About 1/depth fewer forward FLOPs (13.8% on cifar-tiny), with the
    /// logits and gradients of the full computation.
    /// </summary>
    ClassToken,
}

/// <summary>Chooses the <see cref="AttentionPath"/> a block runs, and whether the model runs a batch in slices.</summary>
internal static class AttentionPaths
{
    /// <summary>The path a block runs: <see cref="AttentionPath.ClassToken"/> when only the class token's output is needed,
    /// else <see cref="AttentionPath.Autograd"/> while autograd records, else an inference path by precision.</summary>
    /// <param name="gradEnabled">Whether autograd records (<c>torch.is_grad_enabled()</c>).</param>
    /// <param name="classTokenOnly">Whether only the class token's output is needed (the model's last block).</param>
    /// <param name="float32">Whether the residual stream and the block's products are float32 (not bfloat16 casts).</param>
    public static AttentionPath For(bool gradEnabled, bool classTokenOnly, bool float32) =>
        classTokenOnly ? AttentionPath.ClassToken
        : gradEnabled ? AttentionPath.Autograd
        : float32 ? AttentionPath.InferenceAccumulate
        : AttentionPath.Inference;

    /// <summary>
    /// Whether <see cref="VisionTransformerModel.forward"/> runs a batch of <paramref name="batch"/> images in slices of at
    /// most <paramref name="sliceSize"/>: on the CPU without autograd only. There glibc hands larger freed activations back
    /// to the kernel and every forward faults in fresh pages (10,000+ per batch-64 forward on cifar-tiny). With autograd every
    /// slice's activations would stay alive for the backward, and CUDA's caching allocator keeps its memory.
    /// </summary>
    public static bool SlicesBatch(bool gradEnabled, DeviceType device, long batch, int sliceSize) =>
        batch > sliceSize && !gradEnabled && device == DeviceType.CPU;
}
