using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

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
