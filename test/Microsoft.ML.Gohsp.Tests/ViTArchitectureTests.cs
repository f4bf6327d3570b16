using FluentAssertions;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

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
    public void InferenceInSlicesGivesTheWholeBatchResult()
    {
        // The slice limit keeps the widest activation (tokens × widest of qkv/MLP/tokens, float32) within 8 MiB.
        using (var reference = new VisionTransformerModel(ViTArchitecture.CifarTiny(), seed: 0))
            reference.InferenceSliceSize.Should().Be((int)(8L * 1024 * 1024 / (65 * 768 * 4)));     // 42 → a batch of 64 runs as 2 × 32
        using (var deitSmall = new VisionTransformerModel(ViTArchitecture.DeiTSmall(), seed: 0))
            deitSmall.InferenceSliceSize.Should().Be((int)(8L * 1024 * 1024 / (197 * 1536 * 4)));  // 6

        VisionTransformerModel.SliceRanges(64, 42).Should().Equal((0L, 32L), (32L, 32L));
        VisionTransformerModel.SliceRanges(8, 3).Should().Equal((0L, 3L), (3L, 3L), (6L, 2L));
        VisionTransformerModel.SliceRanges(5, 5).Should().Equal((0L, 5L));

        using var model = new VisionTransformerModel(Heterogeneous(), seed: 5);
        model.eval();
        using var x = randn(8, 3, 32, 32);
        using var _ = no_grad();
        model.InferenceSliceSize = int.MaxValue;
        using var whole = model.forward(x);
        model.InferenceSliceSize = 3;                                   // 8 images → slices of 3, 3, 2
        using var sliced = model.forward(x);
        sliced.shape.Should().Equal(8, 7);
        TensorAssert.MaxAbsDiff(sliced, whole).Should().BeLessThan(1e-5);
        using var one = model.forward(x.narrow(0, 7, 1));             // the last image alone, as in the last slice
        TensorAssert.MaxAbsDiff(one, sliced.narrow(0, 7, 1)).Should().BeLessThan(1e-5);
        FluentActions.Invoking(() => model.InferenceSliceSize = 0).Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public void LastBlockComputesTheClassTokenAloneWithTheSameLogitsAndGradients()
    {
        using var model = new VisionTransformerModel(Heterogeneous(), seed: 9);
        model.SetHeadMasks(new[] { new[] { 0, 1, 2, 3 }, new[] { 0 }, new[] { 0, 2 } });   // the last block drops a head
        using var x = randn(5, 3, 32, 32);
        Tensor FullComputation()
        {
            using var tokens = model.ForwardTokens(x);                  // every token through every block
            using var cls = tokens.select(1, 0);
            return model.Head.forward(cls);
        }

        model.eval();
        using (no_grad())
        using (var full = FullComputation())
        using (var logits = model.forward(x))
            TensorAssert.MaxAbsDiff(logits, full).Should().BeLessThan(1e-5);

        model.train();
        var parameters = model.named_parameters().ToList();
        Dictionary<string, Tensor> Gradients(Func<Tensor> logits)
        {
            foreach (var (_, p) in parameters) p.grad?.zero_();
            using (var l = logits())
            using (var loss = l.square().sum()) loss.backward();
            return parameters.ToDictionary(np => np.name, np => np.parameter.grad!.clone());
        }
        var viaClassToken = Gradients(() => model.forward(x));
        var viaFull = Gradients(FullComputation);
        viaClassToken["blocks.2.mlp.fc1.weight"].abs().sum().item<float>().Should().BeGreaterThan(0, "the last block is trained");
        foreach (var (name, g) in viaFull)
        {
            double scale = Math.Max(1e-3, g.abs().max().item<float>());
            (TensorAssert.MaxAbsDiff(viaClassToken[name], g) / scale).Should().BeLessThan(1e-4, name);
        }
    }

    [Fact]
    public void BFloat16PrecisionTracksFloat32AndTrainsFloat32MasterWeights()
    {
        using var model = new VisionTransformerModel(Heterogeneous(), seed: 4);
        using var x = randn(4, 3, 32, 32);
        model.eval();
        double relative;
        using (no_grad())
        using (var fp32 = model.forward(x))
        {
            model.Precision = ComputePrecision.BFloat16;
            using var bf16 = model.forward(x);
            bf16.dtype.Should().Be(ScalarType.Float32, "logits come back in float32");
            relative = TensorAssert.MaxAbsDiff(bf16, fp32) / fp32.abs().max().item<float>();
        }
        relative.Should().BeGreaterThan(0, "the products really ran in bfloat16").And.BeLessThan(0.02, "bfloat16 tracks float32");

        model.train();
        using (var logits = model.forward(x))
        using (var loss = logits.square().sum())
            loss.backward();
        foreach (var (name, p) in model.named_parameters())
        {
            p.dtype.Should().Be(ScalarType.Float32, name);
            p.grad.Should().NotBeNull(name);
            p.grad!.dtype.Should().Be(ScalarType.Float32, name);
            p.grad.isfinite().all().item<bool>().Should().BeTrue(name);
        }
        model.Blocks[2].attn.qkv.weight.grad!.abs().sum().item<float>().Should().BeGreaterThan(0, "the last block's q/k/v rows get gradients");
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
    public void CreatingAModelTunesGlibcMallocOnLinux()
    {
        using var model = new VisionTransformerModel(Heterogeneous(), seed: 1);
        Platform.NativeAllocator.Status.Should().NotBe("not attempted yet");
        bool environmentOptsOut = Environment.GetEnvironmentVariable("GOHSP_TUNE_MALLOC") == "0"
            || new[] { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_" }.Any(v => Environment.GetEnvironmentVariable(v) is not null)
            || (Environment.GetEnvironmentVariable("LD_PRELOAD") ?? "").Contains("malloc", StringComparison.OrdinalIgnoreCase);
        bool glibc = OperatingSystem.IsLinux() && System.Runtime.InteropServices.NativeLibrary.TryLoad("libc.so.6", out _);
        Platform.NativeAllocator.IsTuned.Should().Be(glibc && !environmentOptsOut, Platform.NativeAllocator.Status);
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
    public void SaveLoadRoundTripsArchitectureAndWeightsExactly()
    {
        var arch = Heterogeneous();
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
        var arch = Heterogeneous();
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

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InferencePathEqualsAutogradPath(bool masked)
    {
        var arch = Heterogeneous();
        using var model = new VisionTransformerModel(arch, seed: 9);
        model.eval();
        if (masked) model.SetHeadMasks(arch.Blocks.Select(b => (IReadOnlyList<int>)Enumerable.Range(0, b.Heads).Where(h => h % 2 == 0).ToArray()).ToArray());
        using var x = randn(4, 3, 32, 32);
        using var withGrad = model.forward(x);
        using var noGrad = no_grad();
        using var inference = model.forward(x);
        withGrad.requires_grad.Should().BeTrue();
        TensorAssert.MaxAbsDiff(withGrad.detach(), inference).Should().BeLessThan(1e-5);
    }
}
