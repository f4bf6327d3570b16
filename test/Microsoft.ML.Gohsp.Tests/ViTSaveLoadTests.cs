using FluentAssertions;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>VisionTransformerModel.Save / Load / Clone: weights, architecture and head masks round-trip; truncated data is refused.</summary>
public class ViTSaveLoadTests
{
    [Fact]
    public void SaveLoadRoundTripsArchitectureAndWeightsExactly()
    {
        var arch = ViTArchitectureTests.Heterogeneous();
        using var model = new VisionTransformerModel(arch, seed: 5);
        model.eval();
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, true)) model.Save(w);
        ms.Position = 0;
        using var loaded = VisionTransformerModel.Load(new BinaryReader(ms));
        loaded.eval();
        loaded.Architecture.Should().Be(arch);
        using var x = randn(3, 3, 32, 32);
        // weights round-trip bit for bit
        var wa = model.state_dict(); var wb = loaded.state_dict();
        wb.Keys.Should().BeEquivalentTo(wa.Keys);
        foreach (var k in wa.Keys) TensorAssert.Same(wa[k], wb[k]).Should().BeTrue(k);
        // outputs agree (CPU kernels may take alignment-dependent paths, so not necessarily bit for bit)
        using var a = model.forward(x);
        using var b = loaded.forward(x);
        TensorAssert.MaxAbsDiff(a, b).Should().BeLessThan(1e-5);
    }

    [Fact]
    public void HeadMasksChangeTheOutputAndSurviveSaveLoadAndClone()
    {
        var arch = ViTArchitectureTests.Heterogeneous();
        using var model = new VisionTransformerModel(arch, seed: 6);
        model.eval();
        using var x = randn(2, 3, 32, 32);
        using var unmasked = model.forward(x);
        model.KeptHeads.Should().BeNull();
        var kept = arch.Blocks.Select(b => (IReadOnlyList<int>)new[] { b.Heads - 1 }).ToArray();
        model.SetHeadMasks(kept);
        model.KeptHeads.Should().BeEquivalentTo(kept, o => o.WithStrictOrdering());
        using var masked = model.forward(x);
        TensorAssert.MaxAbsDiff(masked, unmasked).Should().BeGreaterThan(1e-4, "masking heads changes the logits");

        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, true)) model.Save(w);
        ms.Position = 0;
        using var loaded = VisionTransformerModel.Load(new BinaryReader(ms));
        loaded.eval();
        loaded.KeptHeads.Should().BeEquivalentTo(kept, o => o.WithStrictOrdering());
        using (var y = loaded.forward(x)) TensorAssert.MaxAbsDiff(y, masked).Should().BeLessThan(1e-5);
        using var clone = model.Clone();
        clone.eval();
        using (var y = clone.forward(x)) TensorAssert.MaxAbsDiff(y, masked).Should().BeLessThan(1e-5);

        model.ClearHeadMasks();
        model.KeptHeads.Should().BeNull();
        using (var y = model.forward(x)) TensorAssert.MaxAbsDiff(y, unmasked).Should().BeLessThan(1e-6);
        var empty = arch.Blocks.Select(_ => (IReadOnlyList<int>)Array.Empty<int>()).ToArray();
        model.Invoking(m => m.SetHeadMasks(empty)).Should().Throw<ArgumentException>().WithMessage("*Block 0 would keep no head*");
        var outOfRange = arch.Blocks.Select(b => (IReadOnlyList<int>)new[] { b.Heads }).ToArray();
        model.Invoking(m => m.SetHeadMasks(outOfRange)).Should().Throw<ArgumentException>().WithMessage("*has no head*");
    }

    [Fact]
    public void TruncatedModelDataGivesInvalidDataException()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, true)) model.Save(w);
        var bytes = ms.ToArray()[..(int)(ms.Length / 2)];
        var act = () => VisionTransformerModel.Load(new BinaryReader(new MemoryStream(bytes)));
        act.Should().Throw<InvalidDataException>();
    }
}
