using System.Diagnostics;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Inference latency of cifar-tiny, dense and 50% structurally pruned (magnitude plan: StructuredProjection + HardPruning,
/// random weights — latency does not depend on the values), in TorchSharp and in ONNX Runtime on the CPU with the same
/// thread count. Every figure is the median of <c>reps</c> timed runs after warm-up. All TorchSharp runs come before the
/// first ONNX Runtime session is created: an idle ORT intra-op pool keeps its threads spinning for a while (ORT's default
/// allow_spinning) and, on 2 cores, that slowed TorchSharp's OpenMP threads by up to 50× when both ran in turn in one process.
/// </summary>
internal static class OnnxBenchmark
{
    public static Dictionary<string, object> Run(int threads, int batch, int reps, int seed)
    {
        torch.set_num_threads(threads);
        manual_seed(seed);
        var arch = ViTArchitecture.CifarTiny();
        using var dense = new VisionTransformerModel(arch, seed: seed);
        dense.eval();
        var plan = StructuredProjection.Allocate(arch, StructuredProjection.Magnitude(dense), 0.5);
        using var pruned = HardPruning.Prune(dense, plan);
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
            ["note"] = "medians of timed runs; shared 2-core machine with other jobs running, so absolute numbers are noisy",
        };

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

        var ortMs = new Dictionary<string, double>();
        foreach (var (name, model) in models)
        {
            using var session = Session(OnnxExport.ToBytes(model), threads);
            foreach (int n in sizes)
            {
                string key = $"{name}_b{n}";
                using var input = OrtValue.CreateTensorValueFromMemory(inputs[n].data<float>().ToArray(), [n, 3, 32, 32]);
                using var run = new RunOptions();
                ortMs[key] = Median(reps, n == 1 ? 20 : 3, () => { using var o = session.Run(run, ["input"], [input], ["logits"]); });
                using var outputs = session.Run(run, ["input"], [input], ["logits"]);
                double diff = outputs[0].GetTensorDataAsSpan<float>().ToArray().Zip(torchOut[key], (p, q) => Math.Abs(p - q)).Max();
                double t = torchMs[key], o2 = ortMs[key];
                r[$"{key}_torchsharp_ms"] = Math.Round(t, 3);
                r[$"{key}_onnxruntime_ms"] = Math.Round(o2, 3);
                r[$"{key}_ort_speedup"] = Math.Round(t / o2, 2);
                r[$"{key}_max_abs_logit_diff"] = diff;
                Console.WriteLine($"{name,-6} batch {n,3}: TorchSharp {t,8:F3} ms, ONNX Runtime {o2,8:F3} ms (×{t / o2:F2}), max |Δlogit| {diff:E1}");
            }
        }
        foreach (int n in sizes)
        {
            r[$"pruned_vs_dense_b{n}_speedup_torchsharp"] = Math.Round(torchMs[$"dense_b{n}"] / torchMs[$"pruned_b{n}"], 2);
            r[$"pruned_vs_dense_b{n}_speedup_onnxruntime"] = Math.Round(ortMs[$"dense_b{n}"] / ortMs[$"pruned_b{n}"], 2);
        }
        foreach (var x in inputs.Values) x.Dispose();
        return r;
    }

    private static InferenceSession Session(byte[] onnx, int threads)
    {
        using var o = new SessionOptions
        {
            IntraOpNumThreads = threads,
            InterOpNumThreads = 1,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
        };
        return new InferenceSession(onnx, o);
    }

    /// <summary>Median of <paramref name="reps"/> timed runs after <paramref name="warmup"/> untimed ones, in ms.</summary>
    private static double Median(int reps, int warmup, Action f)
    {
        for (int i = 0; i < warmup; i++) f();
        var times = new double[reps];
        for (int i = 0; i < reps; i++)
        {
            var sw = Stopwatch.StartNew();
            f();
            times[i] = sw.Elapsed.TotalMilliseconds;
        }
        Array.Sort(times);
        return times[reps / 2];
    }
}
