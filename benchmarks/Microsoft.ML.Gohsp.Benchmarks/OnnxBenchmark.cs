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
/// thread count. Every figure is the median of <c>reps</c> timed runs after warm-up; TorchSharp and ONNX Runtime alternate in blocks.
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
        foreach (var (name, model) in new[] { ("dense", dense), ("pruned", pruned) })
        {
            using var session = Session(OnnxExport.ToBytes(model), threads);
            foreach (int n in new[] { 1, batch })
            {
                using var x = randn(n, 3, 32, 32);
                var data = x.data<float>().ToArray();
                using var input = OrtValue.CreateTensorValueFromMemory(data, [n, 3, 32, 32]);
                using var run = new RunOptions();
                var (torchMs, ortMs) = InterleavedMedians(reps, n == 1 ? 20 : 3,
                    () => { using var _ = no_grad(); using var y = model.forward(x); },
                    () => { using var o = session.Run(run, ["input"], [input], ["logits"]); });
                using var o = session.Run(run, ["input"], [input], ["logits"]);
                float[] ort = o[0].GetTensorDataAsSpan<float>().ToArray();
                float[] ts;
                using (no_grad()) using (var y = model.forward(x)) ts = y.data<float>().ToArray();
                double diff = ort.Zip(ts, (p, q) => Math.Abs(p - q)).Max();
                string key = $"{name}_b{n}";
                r[$"{key}_torchsharp_ms"] = Math.Round(torchMs, 3);
                r[$"{key}_onnxruntime_ms"] = Math.Round(ortMs, 3);
                r[$"{key}_ort_speedup"] = Math.Round(torchMs / ortMs, 2);
                r[$"{key}_max_abs_logit_diff"] = diff;
                Console.WriteLine($"{name,-6} batch {n,3}: TorchSharp {torchMs,8:F3} ms, ONNX Runtime {ortMs,8:F3} ms (×{torchMs / ortMs:F2}), max |Δlogit| {diff:E1}");
            }
        }
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

    /// <summary>
    /// Times <paramref name="a"/> and <paramref name="b"/> in alternating blocks of runs (so load changes on a shared machine hit
    /// both alike), with a pause at each switch so that one runtime's spinning worker threads do not slow the other's first
    /// runs; returns both medians in ms.
    /// </summary>
    private static (double A, double B) InterleavedMedians(int reps, int warmup, Action a, Action b)
    {
        const int rounds = 5;
        var ta = new List<double>(); var tb = new List<double>();
        for (int r = 0; r < rounds; r++)
            foreach (var (f, times) in new[] { (a, ta), (b, tb) })
            {
                Thread.Sleep(100);
                for (int i = 0; i < (r == 0 ? warmup : 1); i++) f();
                for (int i = 0; i < (reps + rounds - 1) / rounds; i++)
                {
                    var sw = Stopwatch.StartNew();
                    f();
                    times.Add(sw.Elapsed.TotalMilliseconds);
                }
            }
        return (Median(ta), Median(tb));
    }

    private static double Median(List<double> v)
    {
        v.Sort();
        return v[v.Count / 2];
    }
}
