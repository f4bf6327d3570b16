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
