using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Transforms.Onnx;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Inference latency of cifar-tiny, dense and 50% structurally pruned (magnitude plan: StructuredProjection + HardPruning,
/// random weights — latency does not depend on the values), in TorchSharp and in ONNX Runtime on the CPU with the same
/// thread count, float32 and int8 (<see cref="OnnxQuantization.Int8Dynamic"/>, and the alternative int8 operator patterns
/// side by side). Every figure is the median of <c>reps</c> timed runs after warm-up; the ONNX Runtime sessions of one
/// model (float32 and every int8 pattern) run in turn within each round. All TorchSharp runs come before the first ONNX
/// Runtime session is created: an idle ORT intra-op pool keeps its threads spinning for a while (ORT's default
/// allow_spinning) and, on 2 cores, that slowed TorchSharp's OpenMP threads by up to 50× when both ran in turn in one process.
/// Then ML.NET's <c>ApplyOnnxModel</c> (one ONNX Runtime run per row) against raw ONNX Runtime on the same images.
/// </summary>
internal static class OnnxBenchmark
{
    private static readonly (string Tag, OnnxExportOptions Options)[] Variants =
    [
        ("f32", new OnnxExportOptions()),
        ("int8", new OnnxExportOptions { Quantization = OnnxQuantization.Int8Dynamic }),   // the export's pattern: MatMulInteger
        ("int8_matmulintegertofloat", new OnnxExportOptions { Quantization = OnnxQuantization.Int8Dynamic, Int8Pattern = OnnxInt8Pattern.MatMulIntegerToFloat }),
        ("int8_qdq", new OnnxExportOptions { Quantization = OnnxQuantization.Int8Dynamic, Int8Pattern = OnnxInt8Pattern.Qdq }),
    ];

    public static Dictionary<string, object> Run(int threads, int batch, int reps, int seed)
    {
        torch.set_num_threads(threads);
        manual_seed(seed);
        var arch = ViTArchitecture.CifarTiny();
        using var dense = new VisionTransformerModel(arch, seed: seed);
        dense.eval();
        var plan = StructuredProjection.Allocate(arch, StructuredProjection.Magnitude(dense), 0.5);
        using var pruned = HardPruning.Prune(dense, plan);
        var machine = MachineInfo.Probe();
        var r = new Dictionary<string, object>
        {
            ["mode"] = "onnx",
            ["config"] = "cifar-tiny (embed192-depth6-heads3-mlp768-img32-patch4)",
            ["threads"] = threads,
            ["batch"] = batch,
            ["reps"] = reps,
            ["onnxruntime"] = typeof(InferenceSession).Assembly.GetName().Version?.ToString() ?? "?",
            ["pruned_architecture"] = pruned.Architecture.ToString(),
            ["pruned_params_ratio"] = Math.Round((double)pruned.Architecture.ParameterCount / arch.ParameterCount, 3),
            ["pruned_flops_ratio"] = Math.Round((double)pruned.Architecture.ForwardFlops / arch.ForwardFlops, 3),
            ["int8_gemm_kernel_path"] = Int8GemmPath(machine),
            ["int8_kept_float32"] = "patch embedding, position embedding, layer norms, q·kT and attention·v products, softmax, GELU, residual adds, head",
            ["note"] = "medians of timed runs; shared 2-core machine with other jobs running, so absolute numbers are noisy",
        };
        Console.WriteLine($"machine: {machine}; int8 GEMM path: {r["int8_gemm_kernel_path"]}");

        var models = new[] { ("dense", dense), ("pruned", pruned) };
        var sizes = new[] { 1, batch };
        var inputs = sizes.ToDictionary(n => n, n => randn(n, 3, 32, 32));
        var torchMs = new Dictionary<string, double>();
        var torchOut = new Dictionary<string, float[]>();
        foreach (var (name, model) in models)
            foreach (int n in sizes)
            {
                var x = inputs[n];
                string key = $"{name}_b{n}";
                torchMs[key] = Median(reps, n == 1 ? 20 : 3, () => { using var _ = no_grad(); using var y = model.forward(x); });
                using (no_grad())
                using (var y = model.forward(x))
                    torchOut[key] = y.data<float>().ToArray();
            }

        // the exported files of every variant stay in artifacts/onnx-bench (for python3-onnx's checker and inspection)
        var dir = Directory.CreateDirectory(Path.Combine("artifacts", "onnx-bench")).FullName;
        var ortMs = new Dictionary<string, double>();
        foreach (var (name, model) in models)
        {
            var sessions = new List<InferenceSession>();
            foreach (var (tag, options) in Variants)
            {
                string path = Path.Combine(dir, $"{name}_{tag}.onnx"), optimized = Path.Combine(dir, $"{name}_{tag}.optimized.onnx");
                OnnxExport.Save(model, path, options);
                sessions.Add(Session(File.ReadAllBytes(path), threads, optimized));
                if (tag != "f32") r[$"{name}_{tag}_ort_optimized_ops"] = OpCounts(optimized);
            }
            foreach (int n in sizes)
            {
                string key = $"{name}_b{n}";
                using var input = OrtValue.CreateTensorValueFromMemory(inputs[n].data<float>().ToArray(), [n, 3, 32, 32]);
                using var run = new RunOptions();
                var ms = MedianInTurn(reps, n == 1 ? 20 : 3, sessions.Select(s => (Action)(() => { using var o = s.Run(run, ["input"], [input], ["logits"]); })).ToArray());
                var logits = sessions.Select(s => { using var o = s.Run(run, ["input"], [input], ["logits"]); return o[0].GetTensorDataAsSpan<float>().ToArray(); }).ToArray();
                double diff = logits[0].Zip(torchOut[key], (p, q) => Math.Abs(p - q)).Max();
                double t = torchMs[key], f32 = ms[0];
                ortMs[key] = f32;
                r[$"{key}_torchsharp_ms"] = Math.Round(t, 3);
                r[$"{key}_onnxruntime_ms"] = Math.Round(f32, 3);
                r[$"{key}_ort_speedup"] = Math.Round(t / f32, 2);
                r[$"{key}_max_abs_logit_diff"] = diff;
                Console.WriteLine($"{name,-6} batch {n,3}: TorchSharp {t,8:F3} ms, ONNX Runtime float32 {f32,8:F3} ms (×{t / f32:F2}), max |Δlogit| {diff:E1}");
                for (int v = 1; v < Variants.Length; v++)
                {
                    string tag = Variants[v].Tag;
                    double d8 = logits[v].Zip(logits[0], (p, q) => Math.Abs(p - q)).Max();
                    double agree = Agreement(logits[v], logits[0], arch.NumClasses);
                    ortMs[$"{key}_{tag}"] = ms[v];
                    r[$"{key}_onnxruntime_{tag}_ms"] = Math.Round(ms[v], 3);
                    r[$"{key}_{tag}_speedup_vs_ort_f32"] = Math.Round(f32 / ms[v], 2);
                    r[$"{key}_{tag}_max_abs_logit_diff_vs_f32"] = Math.Round(d8, 4);
                    r[$"{key}_{tag}_argmax_agreement_vs_f32"] = Math.Round(agree, 4);
                    Console.WriteLine($"{"",6} {"",9}  ONNX Runtime {tag,-26} {ms[v],8:F3} ms (×{f32 / ms[v]:F2} vs float32), max |Δlogit| vs float32 {d8:F4}, argmax agreement {agree:P1}");
                }
            }
            foreach (var s in sessions) s.Dispose();
        }
        foreach (int n in sizes)
        {
            r[$"pruned_vs_dense_b{n}_speedup_torchsharp"] = Math.Round(torchMs[$"dense_b{n}"] / torchMs[$"pruned_b{n}"], 2);
            r[$"pruned_vs_dense_b{n}_speedup_onnxruntime"] = Math.Round(ortMs[$"dense_b{n}"] / ortMs[$"pruned_b{n}"], 2);
            r[$"dense_f32_vs_pruned_int8_b{n}_speedup_onnxruntime"] = Math.Round(ortMs[$"dense_b{n}"] / ortMs[$"pruned_b{n}_int8"], 2);
            Console.WriteLine($"batch {n,3}: ONNX Runtime dense float32 → pruned int8 ×{ortMs[$"dense_b{n}"] / ortMs[$"pruned_b{n}_int8"]:F2}");
        }

        foreach (var kv in MLNetVsRaw(pruned, inputs[batch], threads, reps, dir)) r[kv.Key] = kv.Value;
        foreach (var x in inputs.Values) x.Dispose();
        return r;
    }

    /// <summary>
    /// ML.NET <c>ApplyOnnxModel</c> scoring the pruned model's int8 (and float32) file on the rows of one batch, against raw
    /// ONNX Runtime on the same images: one run per image (what the transformer does, row by row) and one batched run.
    /// </summary>
    private static Dictionary<string, object> MLNetVsRaw(VisionTransformerModel pruned, Tensor batchInput, int threads, int reps, string dir)
    {
        var r = new Dictionary<string, object>();
        int n = (int)batchInput.shape[0];
        var pixels = batchInput.contiguous().data<float>().ToArray();
        var rows = Enumerable.Range(0, n).Select(i => new PixelRow { Input = pixels.AsSpan(i * 3072, 3072).ToArray() }).ToArray();
        var ml = new MLContext(seed: 0);
        var data = ml.Data.LoadFromEnumerable(rows);
        foreach (var (tag, options) in Variants.Take(2))
        {
            string path = Path.Combine(dir, $"pruned_{tag}.onnx");
            var transformer = ml.Transforms.ApplyOnnxModel(new OnnxOptions
            {
                ModelFile = path, InputColumns = ["input"], OutputColumns = ["probabilities"], IntraOpNumThreads = threads, InterOpNumThreads = 1,
            }).Fit(data);
            using var session = Session(File.ReadAllBytes(path), threads, null);
            using var run = new RunOptions();
            var one = Enumerable.Range(0, n).Select(i => OrtValue.CreateTensorValueFromMemory(rows[i].Input, [1, 3, 32, 32])).ToArray();
            using var all = OrtValue.CreateTensorValueFromMemory(pixels, [n, 3, 32, 32]);
            var ms = MedianInTurn(reps, 2,
                () => { foreach (var p in transformer.Transform(data).GetColumn<float[]>("probabilities")) GC.KeepAlive(p); },
                () => { foreach (var x in one) { using var o = session.Run(run, ["input"], [x], ["probabilities"]); } },
                () => { using var o = session.Run(run, ["input"], [all], ["probabilities"]); });
            foreach (var x in one) x.Dispose();
            double mlnet = n * 1000 / ms[0], rawRows = n * 1000 / ms[1], rawBatch = n * 1000 / ms[2];
            r[$"pruned_{tag}_mlnet_applyonnxmodel_images_per_s"] = Math.Round(mlnet, 1);
            r[$"pruned_{tag}_raw_ort_batch1_images_per_s"] = Math.Round(rawRows, 1);
            r[$"pruned_{tag}_raw_ort_batch{n}_images_per_s"] = Math.Round(rawBatch, 1);
            r[$"pruned_{tag}_mlnet_vs_raw_ort_batch1"] = Math.Round(mlnet / rawRows, 3);
            r[$"pruned_{tag}_mlnet_vs_raw_ort_batch{n}"] = Math.Round(mlnet / rawBatch, 3);
            Console.WriteLine($"pruned {tag}: ML.NET ApplyOnnxModel {mlnet:F0} img/s ({n} rows); raw ONNX Runtime one image per run {rawRows:F0} img/s " +
                $"(ML.NET ×{mlnet / rawRows:F2}), batch of {n} {rawBatch:F0} img/s (ML.NET ×{mlnet / rawBatch:F2})");
        }
        return r;
    }

    /// <summary>
    /// Accuracy cost of int8: cifar-tiny trained <paramref name="epochs"/> epochs through ML.NET on the CIFAR-10 subset's training
    /// images, and a 50% GOHSP-pruned copy (one soft-pruning and <paramref name="fineTuneEpochs"/> fine-tuning epochs); each
    /// exported as float32 and int8 (normalisation inside) and scored by ONNX Runtime on every test image: top-1, NLL, and
    /// the agreement of the int8 predictions with the float32 ones. The exported files stay in <paramref name="outDir"/>.
    /// </summary>
    public static Dictionary<string, object> Accuracy(string subset, int epochs, int fineTuneEpochs, int maxImages, int threads, int seed, string outDir)
    {
        torch.set_num_threads(threads);
        Directory.CreateDirectory(outDir);
        var ml = new MLContext(seed);
        var trainSet = Cifar10.Read(subset, Cifar10Split.Train, maxImages);
        var testSet = Cifar10.Read(subset, Cifar10Split.Test);
        var train = Cifar10.ToDataView(ml, trainSet, Cifar10Columns.Pixels);
        var test = Cifar10.ToDataView(ml, testSet, Cifar10Columns.Pixels);
        var r = new Dictionary<string, object>
        {
            ["mode"] = "onnx-accuracy", ["config"] = "cifar-tiny", ["train_images"] = trainSet.Count, ["test_images"] = testSet.Count,
            ["epochs"] = epochs, ["gohsp_sparsity"] = 0.5, ["gohsp_soft_epochs"] = 1, ["gohsp_finetune_epochs"] = fineTuneEpochs, ["seed"] = seed,
        };
        var sw = Stopwatch.StartNew();
        var o = new ViTClassificationTrainer.Options
        {
            ImageColumnName = "Pixels", ArchitecturePreset = "cifar-tiny", Epochs = epochs, NumberOfThreads = threads, Device = ViTDevice.Cpu, Seed = seed,
        };
        var dense = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(train);
        Console.WriteLine($"dense cifar-tiny trained {epochs} epochs on {trainSet.Count} images ({sw.Elapsed.TotalSeconds:F0} s)");
        sw.Restart();
        var gohsp = new GohspPruningEstimator.Options
        {
            Sparsity = 0.5, ImageColumnName = "Pixels",
            SoftPruning = new() { Epochs = 1, NumberOfThreads = threads, Device = ViTDevice.Cpu, WarmupEpochs = 0 },
            FineTune = new() { Epochs = fineTuneEpochs, NumberOfThreads = threads, Device = ViTDevice.Cpu, WarmupEpochs = 0 },
        };
        var prunedStage = ml.Transforms.GohspPrune(gohsp, dense).Fit(dense.Transform(train));
        var pruned = new TransformerChain<ITransformer>(dense.Take(1).Append<ITransformer>(prunedStage).ToArray());
        Console.WriteLine($"GOHSP 50% ({sw.Elapsed.TotalSeconds:F0} s): {prunedStage.Model.Architecture}");
        r["pruned_architecture"] = prunedStage.Model.Architecture.ToString();

        // the key each test row's label maps to (1-based), i.e. the output index + 1
        var keys = dense.Transform(test).GetColumn<uint>("Label").ToArray();
        r["dense_native_top1"] = Math.Round(ml.MulticlassClassification.Evaluate(dense.Transform(test)).MicroAccuracy, 4);
        r["pruned_native_top1"] = Math.Round(ml.MulticlassClassification.Evaluate(pruned.Transform(test)).MicroAccuracy, 4);
        var raw = testSet.Pixels.Select(b => (float)b).ToArray();
        foreach (var (name, model) in new[] { ("dense", (ITransformer)dense), ("pruned", pruned) })
        {
            var probs = new Dictionary<string, float[]>();
            foreach (var (tag, options) in Variants.Take(2))
            {
                string path = Path.Combine(outDir, $"cifar-tiny-{name}-{tag}.onnx");
                ml.Model.ExportViTToOnnx(model, path, options);
                using var session = Session(File.ReadAllBytes(path), threads, null);
                probs[tag] = Score(session, raw, testSet.Count);
                var (top1, nll) = TopOneAndNll(probs[tag], keys);
                r[$"{name}_{tag}_top1"] = Math.Round(top1, 4);
                r[$"{name}_{tag}_nll"] = Math.Round(nll, 4);
                r[$"{name}_{tag}_file_bytes"] = new FileInfo(path).Length;
                Console.WriteLine($"{name} {tag}: top-1 {top1:P2}, NLL {nll:F4}, {new FileInfo(path).Length / 1024.0:F0} KiB ({path})");
            }
            int k = keys.Length > 0 ? probs["f32"].Length / keys.Length : 0;
            double agree = Agreement(probs["int8"], probs["f32"], k);
            double dp = probs["int8"].Zip(probs["f32"], (a, b) => Math.Abs(a - b)).Max();
            r[$"{name}_int8_agreement_vs_f32"] = Math.Round(agree, 4);
            r[$"{name}_int8_max_abs_prob_diff_vs_f32"] = Math.Round(dp, 4);
            r[$"{name}_int8_top1_delta_points"] = Math.Round(100 * ((double)r[$"{name}_int8_top1"] - (double)r[$"{name}_f32_top1"]), 2);
            r[$"{name}_int8_nll_delta"] = Math.Round((double)r[$"{name}_int8_nll"] - (double)r[$"{name}_f32_nll"], 4);
            Console.WriteLine($"{name}: int8 agrees with float32 on {agree:P2} of {keys.Length} test images, max |Δprob| {dp:F4}");
        }
        return r;
    }

    private static float[] Score(InferenceSession session, float[] raw, int count)
    {
        var result = new List<float>();
        using var run = new RunOptions();
        for (int start = 0; start < count; start += 64)
        {
            int n = Math.Min(64, count - start);
            using var x = OrtValue.CreateTensorValueFromMemory(raw.AsSpan(start * 3072, n * 3072).ToArray(), [n, 3, 32, 32]);
            using var o = session.Run(run, ["input"], [x], ["probabilities"]);
            result.AddRange(o[0].GetTensorDataAsSpan<float>().ToArray());
        }
        return result.ToArray();
    }

    private static (double Top1, double Nll) TopOneAndNll(float[] probs, uint[] keys)
    {
        int k = probs.Length / keys.Length, correct = 0;
        double nll = 0;
        for (int i = 0; i < keys.Length; i++)
        {
            var row = probs.AsSpan(i * k, k);
            int label = (int)keys[i] - 1;
            if (ArgMax(row) == label) correct++;
            nll -= Math.Log(Math.Max(row[label], 1e-12));
        }
        return ((double)correct / keys.Length, nll / keys.Length);
    }

    private static double Agreement(float[] a, float[] b, int classes)
    {
        int rows = a.Length / classes, same = 0;
        for (int i = 0; i < rows; i++)
            if (ArgMax(a.AsSpan(i * classes, classes)) == ArgMax(b.AsSpan(i * classes, classes))) same++;
        return (double)same / rows;
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    /// <summary>
    /// The int8 GEMM kernel ONNX Runtime's MLAS dispatches to for uint8 activations × int8 weights, from the CPU's flags
    /// (MLAS's order: AMX, AVX-512 VNNI, AVX-VNNI, AVX-512BW, AVX2).
    /// </summary>
    internal static string Int8GemmPath(MachineInfo m) =>
        m.Amx ? "AMX-INT8 (u8s8 tiles)"
        : m.Avx512Vnni ? "AVX-512 VNNI (VPDPBUSD, u8s8)"
        : m.AvxVnni ? "AVX-VNNI (VPDPBUSD, u8s8)"
        : m.Avx512 ? "AVX-512BW (VPMADDUBSW + VPMADDWD, u8s8, no VNNI)"
        : m.Avx2 ? "AVX2 (VPMADDUBSW + VPMADDWD, u8s8, no VNNI)"
        : "SSE4.1/baseline";

    /// <summary>The op types of the graph ONNX Runtime runs after its optimisations, with their counts, most frequent first.</summary>
    private static string OpCounts(string optimizedPath) =>
        string.Join(", ", Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(optimizedPath)).Graph.Node
            .GroupBy(n => n.OpType).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key}×{g.Count()}"));

    private static InferenceSession Session(byte[] onnx, int threads, string? optimizedPath)
    {
        using var o = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        if (optimizedPath is not null)
        {
            o.OptimizedModelFilePath = optimizedPath;
            o.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;   // not the warning that the saved graph is specific to this CPU
        }
        return new InferenceSession(onnx, o);
    }

    /// <summary>Median of <paramref name="reps"/> timed runs after <paramref name="warmup"/> untimed ones, in ms.</summary>
    private static double Median(int reps, int warmup, Action f) => MedianInTurn(reps, warmup, f)[0];

    /// <summary>
    /// Medians, in ms, of <paramref name="reps"/> rounds in which every action runs once, in turn (after
    /// <paramref name="warmup"/> untimed rounds), so that load changes on the machine hit every candidate alike.
    /// </summary>
    private static double[] MedianInTurn(int reps, int warmup, params Action[] fs)
    {
        for (int i = 0; i < warmup; i++) foreach (var f in fs) f();
        var times = fs.Select(_ => new double[reps]).ToArray();
        for (int i = 0; i < reps; i++)
            for (int j = 0; j < fs.Length; j++)
            {
                var sw = Stopwatch.StartNew();
                fs[j]();
                times[j][i] = sw.Elapsed.TotalMilliseconds;
            }
        return times.Select(t => { Array.Sort(t); return t[reps / 2]; }).ToArray();
    }

    private sealed class PixelRow
    {
        [VectorType(3, 32, 32)]
        [ColumnName("input")]
        public float[] Input { get; set; } = [];
    }
}
