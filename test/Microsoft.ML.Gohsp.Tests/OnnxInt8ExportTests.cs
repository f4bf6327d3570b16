using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>python3-onnx's checker (<c>onnx.checker.check_model(model, full_check=True)</c>) run on a file.</summary>
internal static class OnnxChecker
{
    private const string Script =
        "import sys\n" +
        "try:\n    import onnx\nexcept ImportError:\n    print('python3-onnx is not installed (apt-get install python3-onnx)'); sys.exit(3)\n" +
        "onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)\n" +
        "print('checker passed, onnx ' + onnx.__version__)\n";

    /// <summary>
    /// Runs the full checker (structure, types and strict shape inference) on <paramref name="path"/> with the first Python that
    /// has the onnx module: <c>$GOHSP_PYTHON</c>, <c>python3</c> on the PATH, <c>/usr/bin/python3</c> (where Debian's
    /// python3-onnx installs it). Throws with the checker's message when it fails, and when no Python has the module (the test
    /// then fails, naming what to install).
    /// </summary>
    public static string Check(string path)
    {
        var tried = new List<string>();
        foreach (var python in new[] { Environment.GetEnvironmentVariable("GOHSP_PYTHON"), "python3", "/usr/bin/python3" }.OfType<string>().Where(p => p.Length > 0).Distinct())
        {
            var psi = new System.Diagnostics.ProcessStartInfo(python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add("-c");
            psi.ArgumentList.Add(Script);
            psi.ArgumentList.Add(path);
            System.Diagnostics.Process p;
            try { p = System.Diagnostics.Process.Start(psi)!; }
            catch (System.ComponentModel.Win32Exception) { tried.Add($"{python}: not found"); continue; }
            using (p)
            {
                var stderr = p.StandardError.ReadToEndAsync();
                string stdout = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                if (p.ExitCode == 3) { tried.Add($"{python}: no onnx module"); continue; }
                if (p.ExitCode != 0) throw new InvalidOperationException($"onnx.checker.check_model(full_check=True) failed on {path} (exit {p.ExitCode}): {stdout}{stderr.Result}");
                return $"{stdout.Trim()} ({python})";
            }
        }
        throw new InvalidOperationException($"python3 with the onnx module is required to check the ONNX export (Debian/Ubuntu: apt-get install python3-onnx; or set GOHSP_PYTHON). Tried {string.Join("; ", tried)}.");
    }
}

/// <summary>The int8 export, on the models of <see cref="OnnxFixture"/> (shared with the float32 tests of this class).</summary>
public partial class OnnxExportTests
{
    private static readonly OnnxExportOptions Int8 = new() { Quantization = OnnxQuantization.Int8Dynamic };

    private static float[] Probabilities(string path, float[] input, int n)
    {
        using var options = new SessionOptions { IntraOpNumThreads = 2, InterOpNumThreads = 1 };
        using var session = new InferenceSession(path, options);
        using var x = OrtValue.CreateTensorValueFromMemory(input, [n, 3, 32, 32]);
        using var run = new RunOptions();
        using var results = session.Run(run, ["input"], [x], ["probabilities"]);
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static int[] ArgMax(float[] probs, int classes) =>
        Enumerable.Range(0, probs.Length / classes).Select(i => { var r = probs.AsSpan(i * classes, classes); int b = 0; for (int j = 1; j < classes; j++) if (r[j] > r[b]) b = j; return b; }).ToArray();

    [Fact]
    public void Int8ExportsOfDenseAndHeterogeneousPrunedModelsPassTheFullCheckerAndStayCloseToFloat32()
    {
        var dense = f.Dense.LastTransformer.Model;
        var pre = dense.Preprocessing;
        var normalization = new OnnxInputNormalization(pre.PixelScale, pre.Mean, pre.Std);
        int n = f.TestSet.Count;
        var raw = f.TestSet.Pixels.Select(b => (float)b).ToArray();
        f.Pruned.Architecture.IsHomogeneous.Should().BeFalse();
        foreach (var (name, model) in new[] { ("dense", dense.Model), ("pruned", f.Pruned) })
        {
            string f32Path = Path.Combine(f.Dir, $"{name}-f32.onnx"), int8Path = Path.Combine(f.Dir, $"{name}-int8.onnx");
            OnnxExport.Save(model, f32Path, new OnnxExportOptions { Normalization = normalization });
            OnnxExport.Save(model, int8Path, new OnnxExportOptions { Normalization = normalization, Quantization = OnnxQuantization.Int8Dynamic });
            output.WriteLine($"{name} float32: {OnnxChecker.Check(f32Path)}");
            output.WriteLine($"{name} int8: {OnnxChecker.Check(int8Path)}");

            // what is quantized: the 4 linear layers of each block (the last block's qkv is split into q and kv: 5 there)
            var proto = Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(int8Path));
            int depth = model.Architecture.Depth;
            var ops = proto.Graph.Node.GroupBy(nd => nd.OpType).ToDictionary(g => g.Key, g => g.Count());
            ops["MatMulInteger"].Should().Be(4 * depth + 1);
            ops["DynamicQuantizeLinear"].Should().Be(4 * depth + 1);
            ops["MatMul"].Should().Be(2 * depth + 1, "the attention products and the head stay float32");
            ops["Conv"].Should().Be(1, "the patch embedding stays float32");
            var int8 = proto.Graph.Initializer.Where(t => t.DataType == (int)Onnx.TensorProto.Types.DataType.Int8).Select(t => t.Name).ToArray();
            int8.Should().HaveCount(4 * depth + 1).And.OnlyContain(s => s.StartsWith("blocks.", StringComparison.Ordinal) && s.EndsWith(".weight_q", StringComparison.Ordinal));
            proto.Graph.Initializer.Single(t => t.Name == "patch_embed.proj.weight").DataType.Should().Be((int)Onnx.TensorProto.Types.DataType.Float);
            proto.MetadataProps.Should().Contain(p => p.Key == "gohsp.quantization");
            proto.OpsetImport.Select(o => o.Domain).Should().Equal([""], "standard ONNX operators only");
            long f32Bytes = new FileInfo(f32Path).Length, int8Bytes = new FileInfo(int8Path).Length;
            int8Bytes.Should().BeLessThan(f32Bytes * 45 / 100, "the blocks' weights, nearly all of the parameters, take one byte instead of four");

            var p32 = Probabilities(f32Path, raw, n);
            var p8 = Probabilities(int8Path, raw, n);
            double maxDiff = p8.Zip(p32, (a, b) => Math.Abs(a - b)).Max();
            var l32 = ArgMax(p32, 10);
            double agree = ArgMax(p8, 10).Zip(l32, (a, b) => a == b ? 1.0 : 0.0).Average();
            output.WriteLine($"{name}: {f32Bytes / 1024} KiB → {int8Bytes / 1024} KiB; int8 vs float32 on {n} test images: max |Δprob| = {maxDiff:F4}, argmax agreement {agree:P1}");
            maxDiff.Should().BeLessThan(0.05);
            agree.Should().BeGreaterThanOrEqualTo(0.97);
            l32.Distinct().Count().Should().BeGreaterThan(2, "a trained model does not predict one class for everything");

            // one image (the batch dimension stays symbolic)
            Probabilities(int8Path, raw[..3072], 1).Zip(p8.Take(10), (a, b) => Math.Abs(a - b)).Max().Should().BeLessThan(0.05f);
        }
    }

    [Fact]
    public void ApplyOnnxModelScoresTheInt8ExportWithTheFloat32ModelsLabels()
    {
        var ml = f.Ml;
        foreach (var (name, model) in new[] { ("dense", (ITransformer)f.Dense), ("gohsp-pruned", f.GohspPruned) })
        {
            string f32Path = Path.Combine(f.Dir, name + "-mlnet-f32.onnx"), int8Path = Path.Combine(f.Dir, name + "-mlnet-int8.onnx");
            ml.Model.ExportViTToOnnx(model, f32Path);
            ml.Model.ExportViTToOnnx(model, int8Path, Int8);
            uint[] Labels(string path) => ml.Transforms.ExtractPixels("input", "Image", interleavePixelColors: false)
                .Append(ml.Transforms.ApplyOnnxModel(["probabilities"], ["input"], path)).Fit(f.Test).Transform(f.Test)
                .GetColumn<float[]>("probabilities").Select(p => (uint)(Array.IndexOf(p, p.Max()) + 1)).ToArray();
            var f32 = Labels(f32Path);
            var int8 = Labels(int8Path);
            var native = model.Transform(f.Test).GetColumn<uint>("PredictedLabel").ToArray();
            f32.Should().Equal(native, "the float32 export predicts what the native transformer does");
            double agree = int8.Zip(f32, (a, b) => a == b ? 1.0 : 0.0).Average();
            output.WriteLine($"{name}: ApplyOnnxModel on the int8 export agrees with float32 on {agree:P1} of {f32.Length} test images");
            agree.Should().BeGreaterThanOrEqualTo(0.97, "docs/interop.md states ≥ 97% agreement on these models");
            Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(int8Path)).MetadataProps.Single(p => p.Key == "gohsp.input").Value.Should().Contain("raw pixels");
        }
    }

    [Fact]
    public void BadQuantizationOptionsAreRefusedNamingTheOptionAndLeaveTheFileUntouched()
    {
        var model = f.Dense.LastTransformer.Model.Model;
        var bad = () => OnnxExport.ToBytes(model, new OnnxExportOptions { Quantization = (OnnxQuantization)7 });
        bad.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Quantization must be one of None, Int8Dynamic*").Which.ParamName.Should().Be("Quantization");

        string path = Path.Combine(f.Dir, "bad-int8.onnx");
        File.WriteAllText(path, "previous");
        var viaMLNet = () => f.Ml.Model.ExportViTToOnnx(f.Dense, path, new OnnxExportOptions { Quantization = (OnnxQuantization)(-1) });
        viaMLNet.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Quantization*");
        var nullOptions = () => f.Ml.Model.ExportViTToOnnx(f.Dense, path, (OnnxExportOptions)null!);
        nullOptions.Should().Throw<ArgumentNullException>().Which.ParamName.Should().Be("options");
        File.ReadAllText(path).Should().Be("previous");
    }
}

public class OnnxInt8QuantizationTests
{
    [Fact]
    public void WeightsAreQuantizedSymmetricallyPerOutputChannelAndLaidOutTransposed()
    {
        // rows are output channels: scale = max |w| / 127 per row; an all-zero row (a head folded away) gets scale 1
        using var w = tensor(new float[] { 0.3f, -1.0f, 0.25f, 0f, 0f, 0f, 2f, 0.9f, -0.5f }, [3, 3]);
        var (q, scale) = OnnxExport.QuantizePerOutputChannel(w);
        scale.Should().Equal(1f / 127, 1f, 2f / 127);
        // [in, out]: column o holds row o of w, rounded to the nearest step: 0.3·127 = 38.1 → 38, 0.9·63.5 = 57.15 → 57, −0.5·63.5 → −32
        q.Should().Equal(new sbyte[] { 38, 0, 127, -127, 0, 57, 32, 0, -32 });
    }
}
