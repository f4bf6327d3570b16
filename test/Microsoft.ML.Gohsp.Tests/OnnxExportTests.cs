using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.OnnxRuntime;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>A cifar-micro ViT trained briefly through ML.NET on real CIFAR-10 images, and a heterogeneous pruned copy.</summary>
public sealed class OnnxFixture : IDisposable
{
    public MLContext Ml { get; } = new(seed: 1);
    public Cifar10Dataset TestSet { get; } = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 200);
    public IDataView Test { get; }
    public TransformerChain<MulticlassPredictionTransformer<ViTModelParameters>> Dense { get; }
    public VisionTransformerModel Pruned { get; }
    public TransformerChain<ITransformer> GohspPruned { get; }
    public string Dir { get; } = Directory.CreateTempSubdirectory("gohsp-onnx-").FullName;

    public OnnxFixture()
    {
        var train = Cifar10.ToDataView(Ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 1024));
        Test = Cifar10.ToDataView(Ml, TestSet);
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 2;
        o.ImageColumnName = "Pixels";
        Dense = Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(Ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(Ml.MulticlassClassification.Trainers.ViTClassification(o))
            .Fit(train);
        var model = Dense.LastTransformer.Model.Model;
        var plan = StructuredProjection.Allocate(model.Architecture, StructuredProjection.Magnitude(model), 0.5);
        Pruned = HardPruning.Prune(model, plan);
        // a GOHSP-pruned ML.NET model (tiny schedule: the test is about export, not accuracy)
        var small = Cifar10.ToDataView(Ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 256));
        var pruned = Ml.Transforms.GohspPrune(InteropTestFiles.TinyGohsp(0.5), Dense).Fit(Dense.Transform(small));
        GohspPruned = new TransformerChain<ITransformer>(Dense.Take(2).Append<ITransformer>(pruned).ToArray());
    }

    public void Dispose()
    {
        Pruned.Dispose();
        try { Directory.Delete(Dir, true); } catch (IOException) { }
    }
}

public partial class OnnxExportTests(OnnxFixture f, ITestOutputHelper output) : IClassFixture<OnnxFixture>
{
    private static (float[] Logits, float[] Probabilities) RunOrt(byte[] onnx, float[] input, long[] shape)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 2, InterOpNumThreads = 1 };
        using var session = new InferenceSession(onnx, options);
        using var x = OrtValue.CreateTensorValueFromMemory(input, shape);
        using var run = new RunOptions();
        using var results = session.Run(run, ["input"], [x], ["logits", "probabilities"]);
        return (results[0].GetTensorDataAsSpan<float>().ToArray(), results[1].GetTensorDataAsSpan<float>().ToArray());
    }

    private float[] RawPixels(int n) => f.TestSet.Pixels.Take(n * 3072).Select(b => (float)b).ToArray();

    [Fact]
    public void DenseAndHeterogeneousPrunedModelsMatchTorchSharpInOnnxRuntime()
    {
        var dense = f.Dense.LastTransformer.Model;
        f.Pruned.Architecture.IsHomogeneous.Should().BeFalse();
        f.Pruned.Architecture.Blocks.Should().Contain(b => b.QkDim != b.VDim, "the plan prunes q/k and v dims separately");
        f.Pruned.Architecture.Blocks.Select(b => b.Heads).Distinct().Count().Should().BeGreaterThan(1);
        output.WriteLine(f.Pruned.Architecture.ToString());

        const int n = 32;
        var raw = RawPixels(n);
        using var x = InteropTestFiles.CifarBatch(n); // the trainer's normalisation (CIFAR mean/std), in TorchSharp
        var pre = dense.Preprocessing;
        var normalization = new OnnxInputNormalization(pre.PixelScale, pre.Mean, pre.Std);
        using var headMasked = dense.Model.Clone();   // GOHSP stage 1 output: dense shape, masked heads (folded into the export)
        headMasked.SetHeadMasks(headMasked.Architecture.Blocks.Select((b, i) => (IReadOnlyList<int>)new[] { i % b.Heads }).ToArray());
        headMasked.eval();
        foreach (var (name, model) in new[] { ("dense", dense.Model), ("pruned", f.Pruned), ("head-masked", headMasked) })
        {
            float[] expectedLogits, expectedProbs;
            using (no_grad())
            using (var logits = model.forward(x))
            using (var probs = logits.softmax(1))
            {
                expectedLogits = logits.data<float>().ToArray();
                expectedProbs = probs.data<float>().ToArray();
            }
            // graph with the normalisation inside (raw 0..255 input) and without (normalised input)
            var withNorm = RunOrt(OnnxExport.ToBytes(model, new OnnxExportOptions { Normalization = normalization }), raw, [n, 3, 32, 32]);
            using var xc = x.contiguous();
            var noNorm = RunOrt(OnnxExport.ToBytes(model), xc.data<float>().ToArray(), [n, 3, 32, 32]);
            foreach (var (variant, (l, p)) in new[] { ("raw input", withNorm), ("normalised input", noNorm) })
            {
                double dl = l.Zip(expectedLogits, (a, b) => Math.Abs(a - b)).Max();
                double dp = p.Zip(expectedProbs, (a, b) => Math.Abs(a - b)).Max();
                output.WriteLine($"{name}, {variant}: max |Δlogit| = {dl:E2}, max |Δprob| = {dp:E2}");
                dl.Should().BeLessThan(1e-4, $"{name} {variant} logits");
                dp.Should().BeLessThan(1e-4, $"{name} {variant} probabilities");
            }
            // batch size is symbolic: one image works too
            var one = RunOrt(OnnxExport.ToBytes(model, new OnnxExportOptions { Normalization = normalization }), raw[..3072], [1, 3, 32, 32]);
            one.Logits.Zip(expectedLogits.Take(10), (a, b) => Math.Abs(a - b)).Max().Should().BeLessThan(1e-4f);
        }
    }

    [Fact]
    public void ApplyOnnxModelInAnMLNetPipelinePredictsTheSameLabelsAsTheNativeTransformer()
    {
        var ml = f.Ml;
        var dense = f.Dense;
        foreach (var (name, model) in new[] { ("dense", (ITransformer)dense), ("gohsp-pruned", f.GohspPruned) })
        {
            string path = Path.Combine(f.Dir, name + ".onnx");
            ml.Model.ExportViTToOnnx(model, path);
            var onnx = ml.Transforms.ExtractPixels("input", "Image", interleavePixelColors: false)
                .Append(ml.Transforms.ApplyOnnxModel(["probabilities"], ["input"], path))
                .Fit(f.Test);
            var native = model.Transform(f.Test);
            var nativeLabels = native.GetColumn<uint>("PredictedLabel").ToArray();
            var nativeScores = native.GetColumn<float[]>("Score").ToArray();
            var onnxProbs = onnx.Transform(f.Test).GetColumn<float[]>("probabilities").ToArray();
            onnxProbs.Should().HaveCount(nativeLabels.Length);
            if (name != "dense") ((IEnumerable<ITransformer>)model).OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single()
                .Model.Architecture.IsHomogeneous.Should().BeFalse("GOHSP gives a heterogeneous model");
            var onnxLabels = onnxProbs.Select(p => (uint)(Array.IndexOf(p, p.Max()) + 1)).ToArray(); // key values are 1-based
            onnxLabels.Should().Equal(nativeLabels, $"{name}: ONNX and native predictions agree");
            double maxDiff = onnxProbs.Zip(nativeScores, (a, b) => a.Zip(b, (u, v) => Math.Abs(u - v)).Max()).Max();
            output.WriteLine($"{name}: {nativeLabels.Length} images, {nativeLabels.Distinct().Count()} distinct predicted labels, max |Δprob| = {maxDiff:E2}");
            maxDiff.Should().BeLessThan(1e-4);
            nativeLabels.Distinct().Count().Should().BeGreaterThan(2, "a trained model does not predict one class for everything");
        }
    }

    [Fact]
    public void TheExportDocumentsItsContractValidatesOptionsAndWritesAtomically()
    {
        var model = f.Dense.LastTransformer.Model.Model;
        var proto = OnnxExport.ToModelProto(model, new OnnxExportOptions { Normalization = new(1f / 255, [0.5f, 0.5f, 0.5f], [0.5f, 0.5f, 0.5f]) });
        proto.OpsetImport.Single().Version.Should().Be(17);
        var input = proto.Graph.Input.Single();
        input.Name.Should().Be("input");
        input.Type.TensorType.Shape.Dim.Select(d => d.DimParam.Length > 0 ? d.DimParam : d.DimValue.ToString()).Should().Equal("batch", "3", "32", "32");
        proto.Graph.Output.Select(o => o.Name).Should().Equal("logits", "probabilities");
        proto.DocString.Should().Contain("raw pixels").And.Contain("mean = [0.5, 0.5, 0.5]");
        proto.MetadataProps.Should().Contain(p => p.Key == "gohsp.architecture" && p.Value == model.Architecture.ToString());
        proto.Graph.Node.Select(nd => nd.OpType).Should().Contain(["Conv", "LayerNormalization", "Erf", "Softmax"]);

        var bad = () => OnnxExport.ToBytes(model, new OnnxExportOptions { Opset = 16 });
        bad.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Opset*");
        bad = () => OnnxExport.ToBytes(model, new OnnxExportOptions { Normalization = new(1f, [0.5f], [0.5f, 0.5f, 0.5f]) });
        bad.Should().Throw<ArgumentException>().WithMessage("*Mean*one value per channel (3)*");

        string path = Path.Combine(f.Dir, "atomic.onnx");
        File.WriteAllText(path, "previous");
        var fail = () => f.Ml.Model.ExportViTToOnnx(f.Dense, path, options: new OnnxExportOptions { LogitsName = "input" });
        fail.Should().Throw<ArgumentException>();
        File.ReadAllText(path).Should().Be("previous", "a failed export leaves the previous file untouched");
        f.Ml.Model.ExportViTToOnnx(f.Dense, path);
        Directory.GetFiles(f.Dir, "*.tmp").Should().BeEmpty();
        Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)).Graph.Initializer.Should().NotBeEmpty();
        var notVit = () => f.Ml.Model.ExportViTToOnnx(f.Ml.Transforms.CopyColumns("X", "Label").Fit(f.Test), path);
        notVit.Should().Throw<ArgumentException>().WithMessage("*without a ViT*");
    }
}

public class OnnxExportSizeTests
{
    [Fact]
    public void AnExportOverTwoGigabytesIsRefusedBeforeAnyWeightIsRead()
    {
        // ViT-Huge/14 (632 M parameters, 2.5 GB of float32): checked on the architecture alone, no model is built
        var huge = ViTArchitecture.Uniform(224, 14, 1280, 32, 16, 5120, 1000);
        huge.ParameterCount.Should().BeGreaterThan(500_000_000);
        ((Action)(() => OnnxExport.CheckSize(huge))).Should().Throw<NotSupportedException>().WithMessage("*ONNX files without external data are limited to 2 GB*");
        ((Action)(() => OnnxExport.CheckSize(ViTArchitecture.ViTBase()))).Should().NotThrow("ViT-Base's 86 M parameters fit");
    }
}
