using FluentAssertions;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>The forward paths of the blocks (AttentionPath): what selects each, and that they compute the same outputs.</summary>
public class AttentionPathTests
{
    [Fact]
    public void SelectorPicksThePathByGradModeClassTokenPrecisionAndDevice()
    {
        AttentionPaths.For(gradEnabled: true, classTokenOnly: false, float32: true).Should().Be(AttentionPath.Autograd);
        AttentionPaths.For(gradEnabled: true, classTokenOnly: false, float32: false).Should().Be(AttentionPath.Autograd);
        AttentionPaths.For(gradEnabled: false, classTokenOnly: false, float32: true).Should().Be(AttentionPath.InferenceAccumulate);
        AttentionPaths.For(gradEnabled: false, classTokenOnly: false, float32: false).Should().Be(AttentionPath.Inference);
        foreach (bool grad in new[] { true, false })
            foreach (bool float32 in new[] { true, false })
                AttentionPaths.For(grad, classTokenOnly: true, float32).Should().Be(AttentionPath.ClassToken);

        // batches are sliced on the CPU without autograd only, and only when larger than a slice
        AttentionPaths.SlicesBatch(gradEnabled: false, DeviceType.CPU, batch: 64, sliceSize: 42).Should().BeTrue();
        AttentionPaths.SlicesBatch(gradEnabled: false, DeviceType.CPU, batch: 42, sliceSize: 42).Should().BeFalse();
        AttentionPaths.SlicesBatch(gradEnabled: true, DeviceType.CPU, batch: 64, sliceSize: 42).Should().BeFalse();
        AttentionPaths.SlicesBatch(gradEnabled: false, DeviceType.CUDA, batch: 64, sliceSize: 42).Should().BeFalse();

        // a block passes the autograd mode and its precision to the selector
        using var model = new VisionTransformerModel(ViTArchitectureTests.Heterogeneous(), seed: 2);
        var block = model.Blocks[0];
        using var x = zeros(1, 17, 48);
        block.PathFor(x, classTokenOnly: false).Should().Be(AttentionPath.Autograd);
        using (no_grad())
        {
            block.PathFor(x, classTokenOnly: false).Should().Be(AttentionPath.InferenceAccumulate);
            block.PathFor(x, classTokenOnly: true).Should().Be(AttentionPath.ClassToken);
            model.Precision = ComputePrecision.BFloat16;
            block.PathFor(x, classTokenOnly: false).Should().Be(AttentionPath.Inference);
        }
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

        using var model = new VisionTransformerModel(ViTArchitectureTests.Heterogeneous(), seed: 5);
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
        using var model = new VisionTransformerModel(ViTArchitectureTests.Heterogeneous(), seed: 9);
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
        using var model = new VisionTransformerModel(ViTArchitectureTests.Heterogeneous(), seed: 4);
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

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InferencePathEqualsAutogradPath(bool masked)
    {
        var arch = ViTArchitectureTests.Heterogeneous();
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
