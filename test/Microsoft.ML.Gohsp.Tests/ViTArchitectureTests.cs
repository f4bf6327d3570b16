using FluentAssertions;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>The architecture record: preset sizes, heterogeneous blocks, FLOP counts, validation and seeded initialisation.</summary>
public class ViTArchitectureTests
{
    [Theory]
    [InlineData("deit-tiny", 5_717_416L)]
    [InlineData("deit-small", 22_050_664L)]
    [InlineData("deit-base", 86_567_656L)]
    [InlineData("vit-tiny", 5_717_416L)]
    [InlineData("vit-small", 22_050_664L)]
    [InlineData("vit-base", 86_567_656L)]
    public void PresetParameterCountsEqualTimm(string preset, long expected)
    {
        var arch = ViTArchitecture.FromPreset(preset, 1000);
        arch.ParameterCount.Should().Be(expected);
    }

    [Fact]
    public void ModuleHoldsExactlyTheCountedParameters()
    {
        var arch = ViTArchitecture.DeiTTiny();
        using var model = new VisionTransformerModel(arch, seed: 1);
        model.CountParameters().Should().Be(5_717_416L);
    }

    internal static ViTArchitecture Heterogeneous() => new(32, 8, 3, 48, 7, new[]
    {
        new ViTBlockSpec(4, 12, 12, 96),
        new ViTBlockSpec(1, 5, 9, 17),
        new ViTBlockSpec(3, 7, 2, 1),
    });

    [Fact]
    public void HeterogeneousArchitectureBuildsAndRunsForward()
    {
        var arch = Heterogeneous();
        arch.IsHomogeneous.Should().BeFalse();
        using var model = new VisionTransformerModel(arch, seed: 3);
        model.CountParameters().Should().Be(arch.ParameterCount);
        model.eval();
        using var x = randn(2, 3, 32, 32);
        using var y = model.forward(x);
        y.shape.Should().Equal(2, 7);
        y.isnan().any().item<bool>().Should().BeFalse();
        // block 1 really has one head with q/k dim 5 and v dim 9
        model.Blocks[1].attn.qkv.weight.shape.Should().Equal(1 * (2 * 5 + 9), 48);
        model.Blocks[1].attn.proj.weight.shape.Should().Equal(48, 9);
        model.Blocks[2].mlp.fc1.weight.shape.Should().Equal(1, 48);
    }

    [Fact]
    public void SixHeadCifarTinyHasCifarTinysShapeWithSixHeadsOf32Dims()
    {
        var six = ViTArchitecture.FromPreset("cifar-tiny-6h", 10);
        var three = ViTArchitecture.CifarTiny();
        six.Blocks.Should().HaveCount(6).And.OnlyContain(b => b.Heads == 6 && b.QkDim == 32 && b.VDim == 32 && b.MlpHidden == 768);
        six.ParameterCount.Should().Be(three.ParameterCount);
        six.ForwardFlops.Should().Be(three.ForwardFlops);
        using var model = new VisionTransformerModel(six, seed: 1);
        model.CountParameters().Should().Be(six.ParameterCount);
    }

    [Fact]
    public void ExecutedForwardFlopsCountTheLastBlocksClassTokenOnly()
    {
        var arch = ViTArchitecture.CifarTiny();
        long n = 65, d = 192;
        long lastBlockFull = 2 * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 768);
        long lastBlockClassToken = 2 * (n * d * 2 * d + d * d + 2 * n * d + d * d + 2 * d * 768);
        arch.ExecutedForwardFlops.Should().Be(arch.ForwardFlops - lastBlockFull + lastBlockClassToken);
        ((double)arch.ExecutedForwardFlops / arch.ForwardFlops).Should().BeApproximately(0.862, 0.002);
    }

    [Fact]
    public void ForwardFlopsOfReferenceConfigMatchHandCount()
    {
        var arch = ViTArchitecture.CifarTiny();
        long n = 65, d = 192;
        long perBlock = 2 * (n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * 768);
        long expected = 6 * perBlock + 2 * (64L * 48 * d + d * 10);
        arch.ForwardFlops.Should().Be(expected);
    }

    [Fact]
    public void InvalidArchitecturesAreRejectedNamingTheField()
    {
        var act = () => ViTArchitecture.Uniform(30, 4, 64, 2, 4, 128, 10);
        act.Should().Throw<ArgumentException>().WithMessage("*ImageSize (30)*divisible by PatchSize (4)*");
        var act2 = () => new ViTArchitecture(32, 4, 3, 64, 10, new[] { new ViTBlockSpec(0, 16, 16, 128) });
        act2.Should().Throw<ArgumentException>().WithMessage("*at least one head*");
        var act3 = () => ViTArchitecture.FromPreset("resnet50", 10);
        act3.Should().Throw<ArgumentException>().WithMessage("*resnet50*deit-small*");
    }

    [Fact]
    public void SameSeedGivesSameWeights()
    {
        using var a = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 11);
        using var b = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 11);
        using var c = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 12);
        var pa = a.parameters().ToArray(); var pb = b.parameters().ToArray(); var pc = c.parameters().ToArray();
        pa.Zip(pb).All(t => TensorAssert.Same(t.First, t.Second)).Should().BeTrue();
        pa.Zip(pc).All(t => TensorAssert.Same(t.First, t.Second)).Should().BeFalse();
    }
}
