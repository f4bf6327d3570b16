using System.Text.Json;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.OnnxRuntime;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// DeiT checkpoints with a distillation token, written by PyTorch (Fixtures/deit/make_deit_fixtures.py): timm's distilled
/// DeiT, Hugging Face's DeiTForImageClassificationWithTeacher and DeiTForImageClassification.
/// </summary>
public class DistilledDeiTTests(ITestOutputHelper output)
{
    internal static string Fixtures { get; } = Path.Combine(AppContext.BaseDirectory, "Fixtures", "deit");

    internal static (Tensor Input, float[] Logits, float[] ClsOnly) Expected()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures, "expected.json")));
        var r = doc.RootElement;
        float[] F(string n) => r.GetProperty(n).EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();
        var shape = r.GetProperty("input_shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        return (tensor(F("input"), shape), F("logits"), F("logits_cls_only"));
    }

    internal static float MaxDiff(IEnumerable<float> a, IEnumerable<float> b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    [Theory]
    [InlineData("timm/model.safetensors", CheckpointNaming.Timm, ViTDistillation.TokenAndHead)]
    [InlineData("hf/model.safetensors", CheckpointNaming.HuggingFaceDeiT, ViTDistillation.TokenAndHead)]
    [InlineData("hf-cls/pytorch_model.bin", CheckpointNaming.HuggingFaceDeiT, ViTDistillation.Token)]
    public void DeiTCheckpointsImportWithPyTorchsLogits(string file, CheckpointNaming naming, ViTDistillation distillation)
    {
        var (x, expected, clsOnly) = Expected();
        using var _ = x;
        var log = new List<string>();
        // timm files carry no head count (width 32 has no timm default); Hugging Face's config.json has num_attention_heads
        var options = naming == CheckpointNaming.Timm ? new PretrainedImportOptions { Heads = 2 } : null;
        var import = PretrainedViT.Import(Path.Combine(Fixtures, file), options, log.Add);
        using var model = import.Model;
        output.WriteLine(string.Join("\n", log));
        import.Naming.Should().Be(naming);
        var a = model.Architecture;
        a.Distillation.Should().Be(distillation);
        a.PrefixTokens.Should().Be(2);
        a.SequenceLength.Should().Be(18, "16 patches + class token + distillation token");
        a.ParameterCount.Should().Be(model.CountParameters(), "the architecture counts the distillation token and head");
        import.ClassNames.Should().Equal(Enumerable.Range(0, 5).Select(i => $"class_{i}"));
        using (no_grad())
        {
            using var logits = model.forward(x);
            var ours = logits.data<float>().ToArray();
            var reference = distillation == ViTDistillation.TokenAndHead ? expected : clsOnly;
            output.WriteLine($"max |Δlogit| = {MaxDiff(ours, reference):E2}");
            MaxDiff(ours, reference).Should().BeLessThan(1e-4f);
            // the logits really depend on the distillation head: the class head alone is further off
            if (distillation == ViTDistillation.TokenAndHead) MaxDiff(clsOnly, expected).Should().BeGreaterThan(1e-2f);
        }
    }

    [Fact]
    public void TheDistillationTokenIsPartOfTheSavedArchitectureAndOlderFilesStillRead()
    {
        using var model = PretrainedViT.Load(Path.Combine(Fixtures, "hf/model.safetensors"));
        using var copy = model.Clone();
        copy.Architecture.Should().Be(model.Architecture);
        copy.DistillationToken.Should().NotBeNull();
        copy.DistillationHead.Should().NotBeNull();
        var (x, _, _) = Expected();
        using (x)
        using (no_grad())
        using (var a = model.forward(x))
        using (var b = copy.forward(x))
            a.data<float>().ToArray().Should().Equal(b.data<float>().ToArray());

        // a model without the token writes architecture format 1, byte for byte what readers before the token read
        var plain = ViTArchitecture.CifarMicro();
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) plain.Write(w);
        BitConverter.ToInt32(ms.ToArray(), 0).Should().Be(1);
        using var ms2 = new MemoryStream();
        using (var w = new BinaryWriter(ms2, System.Text.Encoding.UTF8, leaveOpen: true)) model.Architecture.Write(w);
        BitConverter.ToInt32(ms2.ToArray(), 0).Should().Be(2);
        ms2.Length.Should().Be(ms.Length - 4 * 4 * (plain.Depth - model.Architecture.Depth) + 4, "format 2 appends one int");
        ms2.Position = 0;
        ViTArchitecture.Read(new BinaryReader(ms2)).Should().Be(model.Architecture);
    }

    [Fact]
    public void ResamplingKeepsBothTokenPositions()
    {
        var import = PretrainedViT.Import(Path.Combine(Fixtures, "timm/model.safetensors"), new PretrainedImportOptions { Heads = 2, ImageSize = 24 });
        using var model = import.Model;
        using var original = PretrainedViT.Load(Path.Combine(Fixtures, "timm/model.safetensors"), new PretrainedImportOptions { Heads = 2 });
        import.PositionEmbeddingResampled.Should().BeTrue();
        model.Architecture.SequenceLength.Should().Be(36 + 2);
        using var a = model.PositionEmbedding.detach().narrow(1, 0, 2);
        using var b = original.PositionEmbedding.detach().narrow(1, 0, 2);
        a.data<float>().ToArray().Should().Equal(b.data<float>().ToArray());
    }

    [Fact]
    public void ADistillationHeadWithoutItsTokenIsRefusedByName()
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-deit-bad-").FullName;
        try
        {
            var sd = InteropTestFiles.Timm(PretrainedViT.Load(Path.Combine(Fixtures, "timm/model.safetensors"), new PretrainedImportOptions { Heads = 2 }));
            sd.Remove("dist_token");
            string path = Path.Combine(dir, "model.safetensors");
            InteropTestFiles.Write(sd, path, CheckpointFormat.Safetensors);
            var act = () => PretrainedViT.Import(path, new PretrainedImportOptions { Heads = 2 });
            act.Should().Throw<InvalidDataException>().WithMessage("*distillation head ('head_dist.weight') but no distillation token ('dist_token')*");
        }
        finally { Directory.Delete(dir, true); }
    }

    private sealed class Row
    {
        [VectorType(3, 16, 16)] public float[] Pixels { get; set; } = [];
        public string Label { get; set; } = "";
    }

    private sealed class NameRow { public string Label { get; set; } = ""; }

    /// <summary>Random 16×16 images (raw 0…255) with labels class_0…class_4 in turn.</summary>
    internal static IDataView Images(MLContext ml, int n, int seed)
    {
        var rng = new Random(seed);
        var rows = Enumerable.Range(0, n).Select(i => new Row
        {
            Pixels = Enumerable.Range(0, 768).Select(_ => (float)rng.Next(256)).ToArray(),
            Label = $"class_{i % 5}",
        }).ToList();
        var names = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 5).Select(i => new NameRow { Label = $"class_{i}" }));
        var data = ml.Data.LoadFromEnumerable(rows);
        return ml.Transforms.Conversion.MapValueToKey("Label", keyData: names).Fit(data).Transform(data);
    }

    [Fact]
    public void ADistilledDeiTPrunesWithGohspSavesReloadsAndExportsToOnnx()
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-deit-prune-").FullName;
        var ml = new MLContext(1);
        var dense = ml.Model.LoadPretrainedViT(Path.Combine(Fixtures, "hf/model.safetensors"));
        dense.Model.Architecture.Distillation.Should().Be(ViTDistillation.TokenAndHead);
        var train = Images(ml, 64, 1);
        var test = Images(ml, 16, 2);

        var options = InteropTestFiles.TinyGohsp(0.4);
        options.HeadPruningFraction = 0.25;
        var pruned = ml.Transforms.GohspPrune(options, dense).Fit(train);
        var arch = pruned.Model.Architecture;
        output.WriteLine(arch.ToString());
        arch.Distillation.Should().Be(ViTDistillation.TokenAndHead, "pruning keeps the distillation token and head");
        pruned.Model.PruningReport!.AchievedSparsity.Should().BeApproximately(0.4, 0.02);
        arch.ParameterCount.Should().BeLessThan(dense.Model.Architecture.ParameterCount);

        string zip = Path.Combine(dir, "pruned.zip");
        ml.Model.SaveAtomically(pruned, train.Schema, zip);
        var reloaded = ((MulticlassPredictionTransformer<ViTModelParameters>)new MLContext().Model.Load(zip, out _)).UseBatchScoring();
        reloaded.Model.Architecture.Should().Be(arch);
        var scores = pruned.UseBatchScoring().Transform(test).GetColumn<float[]>("Score").ToArray();
        reloaded.Transform(test).GetColumn<float[]>("Score").ToArray().SelectMany(s => s).Should().Equal(scores.SelectMany(s => s));

        // ONNX Runtime on the exported graph (normalisation inside: raw pixels in) gives the same probabilities
        string onnx = Path.Combine(dir, "pruned.onnx");
        ml.Model.ExportViTToOnnx(pruned, onnx);
        var pixels = test.GetColumn<float[]>("Pixels").SelectMany(p => p).ToArray();
        using var session = new InferenceSession(onnx);
        using var input = OrtValue.CreateTensorValueFromMemory(pixels, [16, 3, 16, 16]);
        using var run = new RunOptions();
        using var results = session.Run(run, ["input"], [input], ["probabilities"]);
        var ort = results[0].GetTensorDataAsSpan<float>().ToArray();
        output.WriteLine($"ONNX Runtime vs TorchSharp: max |Δp| = {MaxDiff(ort, scores.SelectMany(s => s)):E2}");
        MaxDiff(ort, scores.SelectMany(s => s)).Should().BeLessThan(1e-4f);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void TheDenseDistilledDeiTExportsToOnnxWithPyTorchsLogits()
    {
        var (x, expected, _) = Expected();
        using var _x = x;
        using var model = PretrainedViT.Load(Path.Combine(Fixtures, "timm/model.safetensors"), new PretrainedImportOptions { Heads = 2 });
        var bytes = OnnxExport.ToBytes(model);
        using var session = new InferenceSession(bytes);
        using var input = OrtValue.CreateTensorValueFromMemory(x.data<float>().ToArray(), [2, 3, 16, 16]);
        using var run = new RunOptions();
        using var results = session.Run(run, ["input"], [input], ["logits"]);
        MaxDiff(results[0].GetTensorDataAsSpan<float>().ToArray(), expected).Should().BeLessThan(1e-4f);
    }
}
