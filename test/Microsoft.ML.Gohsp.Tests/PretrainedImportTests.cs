using System.Diagnostics;
using System.Text.Json;
using FluentAssertions;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

public class PretrainedImportTests(ITestOutputHelper output)
{
    private static readonly string Fixtures = InteropTestFiles.FixtureDir;

    private static (Tensor Input, float[] Logits, float[] Pos6) Expected()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures, "expected.json")));
        var r = doc.RootElement;
        float[] F(string n) => r.GetProperty(n).EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();
        var shape = r.GetProperty("input_shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        return (tensor(F("input"), shape), F("logits"), F("pos_embed_6x6"));
    }

    private static float[] Logits(VisionTransformerModel m, Tensor x)
    {
        using var _ = no_grad();
        using var y = m.forward(x);
        return y.data<float>().ToArray();
    }

    [Theory]
    [InlineData("timm/tiny_vit.pth", CheckpointNaming.Timm, CheckpointFormat.PyTorch)]
    [InlineData("timm/tiny_vit_protocol4.pth", CheckpointNaming.Timm, CheckpointFormat.PyTorch)]
    [InlineData("hf/pytorch_model.bin", CheckpointNaming.HuggingFace, CheckpointFormat.PyTorch)]
    [InlineData("hf/model.safetensors", CheckpointNaming.HuggingFace, CheckpointFormat.Safetensors)]
    public void CheckpointsWrittenByPyTorchGiveTheLogitsPyTorchComputed(string file, CheckpointNaming naming, CheckpointFormat format)
    {
        var (x, expected, _) = Expected();
        var log = new List<string>();
        // timm files carry no config: the head count comes from the option; the HF folder's config.json gives heads, eps, labels
        var options = naming == CheckpointNaming.Timm ? new PretrainedImportOptions { Heads = 3 } : null;
        var import = PretrainedViT.Import(Path.Combine(Fixtures, file), options, log.Add);
        using var model = import.Model;
        output.WriteLine(string.Join("\n", log));
        import.Naming.Should().Be(naming);
        import.Format.Should().Be(format);
        model.Architecture.Should().Be(new ViTArchitecture(16, 4, 3, 48, 5, Enumerable.Repeat(new ViTBlockSpec(3, 16, 16, 96), 2), 1e-6));
        import.NewHead.Should().BeFalse();
        var logits = Logits(model, x);
        for (int i = 0; i < expected.Length; i++) logits[i].Should().BeApproximately(expected[i], 2e-5f, $"logit {i}");
        if (naming == CheckpointNaming.HuggingFace)
        {
            log.Should().Contain(l => l.Contains("3 heads from config.json"));
            import.ClassNames.Should().Equal("class_0", "class_1", "class_2", "class_3", "class_4");
            import.Mean.Should().Equal(0.5f, 0.5f, 0.5f);
        }
    }

    [Fact]
    public void PositionEmbeddingResamplingMatchesTimmsBicubicAndTheModelRunsAtTheNewSize()
    {
        var (_, _, pos6) = Expected();
        var import = PretrainedViT.Import(Path.Combine(Fixtures, "timm/tiny_vit.pth"), new PretrainedImportOptions { Heads = 3, ImageSize = 24 });
        using var model = import.Model;
        import.PositionEmbeddingResampled.Should().BeTrue();
        model.Architecture.ImageSize.Should().Be(24);
        var ours = model.PositionEmbedding.detach().data<float>().ToArray();
        ours.Length.Should().Be(pos6.Length);
        double maxDiff = ours.Zip(pos6, (a, b) => Math.Abs(a - b)).Max();
        output.WriteLine($"max |ours - torch.nn.functional.interpolate(bicubic, antialias)| = {maxDiff:E2}");
        maxDiff.Should().BeLessThan(1e-5);

        using var x = randn(2, 3, 24, 24);
        using var y = model.forward(x);
        y.shape.Should().Equal(2, 5);
        // downsampling (antialiased) also works: cifar-micro 32² → 16²
        using var micro = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        var dir = Directory.CreateTempSubdirectory("gohsp-interp-").FullName;
        var path = Path.Combine(dir, "micro.safetensors");
        InteropTestFiles.Write(InteropTestFiles.Timm(micro), path, CheckpointFormat.Safetensors);
        using var small = PretrainedViT.Load(path, new PretrainedImportOptions { Heads = 4, ImageSize = 16 });
        small.PositionEmbedding.shape.Should().Equal(1, 17, 96);
        TensorAssert.Same(small.PositionEmbedding.narrow(1, 0, 1), micro.PositionEmbedding.narrow(1, 0, 1)).Should().BeTrue("the class-token position is kept");
        using var y2 = small.forward(randn(1, 3, 16, 16));
        y2.shape.Should().Equal(1, 10);
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData(CheckpointNaming.Timm, CheckpointFormat.Safetensors)]
    [InlineData(CheckpointNaming.Timm, CheckpointFormat.PyTorch)]
    [InlineData(CheckpointNaming.HuggingFace, CheckpointFormat.Safetensors)]
    [InlineData(CheckpointNaming.HuggingFace, CheckpointFormat.PyTorch)]
    public void RoundTripOfACifarMicroModelGivesIdenticalLogits(CheckpointNaming naming, CheckpointFormat format)
    {
        using var source = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 11);
        source.eval();
        var dir = Directory.CreateTempSubdirectory("gohsp-roundtrip-").FullName;
        string path = Path.Combine(dir, format == CheckpointFormat.Safetensors ? "model.safetensors" : "model.pth");
        var sd = naming == CheckpointNaming.Timm ? InteropTestFiles.Timm(source) : InteropTestFiles.HuggingFace(source);
        InteropTestFiles.Write(sd, path, format);
        PretrainedImportOptions? options = null;
        if (naming == CheckpointNaming.HuggingFace) InteropTestFiles.WriteHfConfig(dir, heads: 4, eps: 1e-6, classes: 10);
        else options = new PretrainedImportOptions { Heads = 4 };

        var import = PretrainedViT.Import(path, options);
        using var imported = import.Model;
        import.Naming.Should().Be(naming);
        import.Format.Should().Be(format);
        imported.Architecture.Should().Be(source.Architecture);
        foreach (var (k, v) in source.state_dict()) TensorAssert.Same(imported.state_dict()[k], v).Should().BeTrue(k);
        using var x = InteropTestFiles.CifarBatch(8);
        using (no_grad())
        {
            using var a = source.forward(x);
            using var b = imported.forward(x);
            TensorAssert.Same(a, b).Should().BeTrue("the same weights give bit-identical logits");
        }
        Directory.Delete(dir, true);
    }

    [Fact]
    public void ADifferentClassCountGetsANewSeededHeadAndKeepsEverythingElse()
    {
        using var source = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var dir = Directory.CreateTempSubdirectory("gohsp-head-").FullName;
        var path = Path.Combine(dir, "m.safetensors");
        InteropTestFiles.Write(InteropTestFiles.Timm(source), path, CheckpointFormat.Safetensors);
        var log = new List<string>();
        var import = PretrainedViT.Import(path, new PretrainedImportOptions { Heads = 4, NumClasses = 3, Seed = 9 }, log.Add);
        using var m = import.Model;
        import.NewHead.Should().BeTrue();
        import.CheckpointArchitecture.NumClasses.Should().Be(10);
        m.Architecture.NumClasses.Should().Be(3);
        m.Head.weight.shape.Should().Equal(3, 96);
        log.Should().Contain(l => l.Contains("New classifier head: 3 classes (checkpoint: 10)"));
        foreach (var (k, v) in source.state_dict().Where(kv => !kv.Key.StartsWith("head.")))
            TensorAssert.Same(m.state_dict()[k], v).Should().BeTrue(k);
        using var again = PretrainedViT.Load(path, new PretrainedImportOptions { Heads = 4, NumClasses = 3, Seed = 9 });
        using var other = PretrainedViT.Load(path, new PretrainedImportOptions { Heads = 4, NumClasses = 3, Seed = 10 });
        TensorAssert.Same(again.Head.weight, m.Head.weight).Should().BeTrue("the new head is seeded");
        TensorAssert.Same(other.Head.weight, m.Head.weight).Should().BeFalse();
        m.Head.weight.std().ToDouble().Should().BeInRange(0.01, 0.03, "truncated normal σ = 0.02");
        Directory.Delete(dir, true);
    }

    [Fact]
    public void ADataParallelPrefixIsStrippedAndAMissingQkvBiasBecomesZeros()
    {
        using var source = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 6);
        var dir = Directory.CreateTempSubdirectory("gohsp-prefix-").FullName;
        var sd = InteropTestFiles.Timm(source).Where(kv => !kv.Key.EndsWith("attn.qkv.bias")).ToDictionary(kv => "module." + kv.Key, kv => kv.Value);
        var path = Path.Combine(dir, "ddp.pth");
        InteropTestFiles.Write(sd, path, CheckpointFormat.PyTorch);
        var log = new List<string>();
        using var m = PretrainedViT.Load(path, new PretrainedImportOptions { Heads = 4 }, log.Add);
        log.Should().Contain(l => l.Contains("no qkv bias"));
        foreach (var (k, v) in m.state_dict())
        {
            if (k.EndsWith("attn.qkv.bias")) v.abs().sum().ToDouble().Should().Be(0);
            else TensorAssert.Same(v, source.state_dict()[k]).Should().BeTrue(k);
        }
        Directory.Delete(dir, true);
    }

    [Fact]
    public void BadCheckpointsAreRejectedNamingTheKey()
    {
        using var source = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 2);
        var dir = Directory.CreateTempSubdirectory("gohsp-bad-").FullName;
        var opts = new PretrainedImportOptions { Heads = 4 };
        string Write(string name, Dictionary<string, Tensor> sd)
        {
            var p = Path.Combine(dir, name);
            InteropTestFiles.Write(sd, p, name.EndsWith(".pth") ? CheckpointFormat.PyTorch : CheckpointFormat.Safetensors);
            return p;
        }

        var missing = InteropTestFiles.Timm(source); missing.Remove("blocks.1.mlp.fc1.weight");
        var act = () => PretrainedViT.Import(Write("missing.safetensors", missing), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*missing 'blocks.1.mlp.fc1.weight'*");

        var hfMissing = InteropTestFiles.HuggingFace(source); hfMissing.Remove("vit.encoder.layer.2.attention.attention.key.weight");
        act = () => PretrainedViT.Import(Write("hf-missing.pth", hfMissing), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*missing 'vit.encoder.layer.2.attention.attention.key.weight'*");

        var hfMissing2 = InteropTestFiles.HuggingFace(source); hfMissing2.Remove("vit.encoder.layer.3.output.dense.bias");
        act = () => PretrainedViT.Import(Write("hf-missing2.safetensors", hfMissing2), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*missing 'vit.encoder.layer.3.output.dense.bias'*");

        var shape = InteropTestFiles.Timm(source); shape["blocks.0.mlp.fc2.weight"] = zeros(96, 100);
        act = () => PretrainedViT.Import(Write("shape.safetensors", shape), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*'blocks.0.mlp.fc2.weight' has shape [96, 100]; expected [96, 192]*");

        var extra = InteropTestFiles.Timm(source); extra["blocks.0.ls1.gamma"] = ones(96);
        act = () => PretrainedViT.Import(Write("extra.safetensors", extra), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*not part of a plain ViT*'blocks.0.ls1.gamma'*");

        var resnet = new Dictionary<string, Tensor> { ["conv1.weight"] = zeros(64, 3, 7, 7), ["bn1.weight"] = ones(64), ["fc.weight"] = zeros(1000, 2048) };
        act = () => PretrainedViT.Import(Write("resnet.pth", resnet), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*not a ViT/DeiT checkpoint*'bn1.weight'*");

        // a distillation token needs its own position: 64 patches + 1 position does not fit
        var distilled = InteropTestFiles.Timm(source); distilled["dist_token"] = zeros(1, 1, 96);
        act = () => PretrainedViT.Import(Write("distilled.safetensors", distilled), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*65 positions; expected 2 (class and distillation tokens) + a square number of patches*");

        act = () => PretrainedViT.Import(Path.Combine(dir, "missing.safetensors")); // width 96: no standard head count
        act.Should().Throw<InvalidDataException>().WithMessage("*number of attention heads*Set the Heads option*");

        act = () => PretrainedViT.Import(Path.Combine(dir, "nope.safetensors"), opts);
        act.Should().Throw<FileNotFoundException>().WithMessage("*nope.safetensors*");

        act = () => PretrainedViT.Import(Path.Combine(Fixtures, "shared_storage.pth"), opts); // written by PyTorch
        act.Should().Throw<InvalidDataException>().WithMessage("*views into a shared storage*clone()*");

        File.WriteAllText(Path.Combine(dir, "text.pth"), "hello");
        act = () => PretrainedViT.Import(Path.Combine(dir, "text.pth"), opts);
        act.Should().Throw<InvalidDataException>().WithMessage("*neither a .safetensors file nor a PyTorch*");
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("posix", "system", 2, false)]
    [InlineData("os", "system", 4, false)]
    [InlineData("builtins", "eval", 4, false)]
    [InlineData("posix", "system", 2, true)]
    public void AMaliciousPickleIsRefusedNamingTheGlobalAndNothingRuns(string module, string name, int protocol, bool rawPickle)
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-pickle-").FullName;
        string marker = Path.Combine(dir, "PWNED");
        string arg = name == "eval" ? $"open('{marker}', 'w').close()" : $"touch {marker}";
        var pickle = InteropTestFiles.ReducePickle(module, name, arg, protocol);
        string path = Path.Combine(dir, "evil.pth");
        if (rawPickle) File.WriteAllBytes(path, pickle);
        else InteropTestFiles.WriteTorchZip(path, pickle);

        var act = () => PretrainedViT.Import(path, new PretrainedImportOptions { Heads = 4 });
        var e = act.Should().Throw<UnsafePickleException>().Which;
        output.WriteLine(e.Message);
        e.Global.Should().Be($"{module}.{name}");
        e.Message.Should().Contain($"'{module}.{name}'").And.Contain("Nothing from the file was loaded");
        File.Exists(marker).Should().BeFalse("nothing from the pickle may run");
        Directory.Delete(dir, true);
    }

    [Fact]
    public void TheScannerAcceptsRealTorchSavePicklesAndRejectsDynamicOrIndirectGlobals()
    {
        foreach (var file in new[] { "timm/tiny_vit.pth", "timm/tiny_vit_protocol4.pth", "hf/pytorch_model.bin" })
        {
            using var zip = System.IO.Compression.ZipFile.OpenRead(Path.Combine(Fixtures, file));
            using var s = zip.Entries.Single(e => e.Name == "data.pkl").Open();
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            var globals = PickleScanner.Scan(ms.ToArray(), file).Globals;
            globals.Distinct().Should().BeEquivalentTo("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage");
        }
        // STACK_GLOBAL whose name is not a constant (here: the result of a call) cannot be checked: refused
        byte[] dynamicName = [0x80, 4, 0x8c, 5, .. "torch"u8, (byte)'c', .. "collections\nOrderedDict\n"u8, (byte)')', (byte)'R', 0x93, (byte)'.'];
        var act = () => PickleScanner.Scan(dynamicName, "dyn.pkl");
        act.Should().Throw<UnsafePickleException>().WithMessage("*computed at load time*");
        byte[] ext = [0x80, 2, 0x82, 1, (byte)'.'];
        act = () => PickleScanner.Scan(ext, "ext.pkl");
        act.Should().Throw<UnsafePickleException>().WithMessage("*extension registry*");
        byte[] truncated = [0x80, 2, (byte)'X', 10, 0, 0, 0, (byte)'a'];
        act = () => PickleScanner.Scan(truncated, "t.pkl");
        act.Should().Throw<InvalidDataException>().WithMessage("*truncated*");
    }
}
