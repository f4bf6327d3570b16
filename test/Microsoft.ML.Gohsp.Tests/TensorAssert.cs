using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

internal static class TensorAssert
{
    /// <summary>Same shape and bit-identical values.</summary>
    public static bool Same(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape)) return false;
        using var eq = a.eq(b);
        using var all = eq.all();
        return all.item<bool>();
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a - b).abs().max();
        return d.ToDouble();
    }

    /// <summary>Every weight of <paramref name="actual"/> is within <paramref name="tolerance"/> of <paramref name="expected"/>'s (same keys).</summary>
    public static void CloseWeights(TorchSharp.torch.nn.Module actual, TorchSharp.torch.nn.Module expected, double tolerance = 1e-4)
    {
        var e = expected.state_dict();
        var a = actual.state_dict();
        FluentAssertions.AssertionExtensions.Should(a.Keys).BeEquivalentTo(e.Keys);
        foreach (var (k, v) in a) FluentAssertions.AssertionExtensions.Should(MaxAbsDiff(v, e[k])).BeLessThan(tolerance, k);
    }
}
