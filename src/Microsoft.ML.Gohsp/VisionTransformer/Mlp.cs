using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>Two-layer MLP with exact GELU.</summary>
internal sealed class Mlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // names match timm/PyTorch state-dict keys
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
        using var a = Hidden(x);
        return fc2.forward(a);
    }

    /// <summary>GELU(fc1(x)): the hidden activation that fc2 reads.</summary>
    internal Tensor Hidden(Tensor x)
    {
        // Out of place also without autograd: libtorch 2.x's CPU gelu_ runs 4–5× slower than gelu on the same tensor and
        // touches a fresh page for every 4 KB of it (scratch measurement, docs/benchmarks.md "Where inference time goes").
        using var h = fc1.forward(x);
        return nn.functional.gelu(h);
    }
}
