using System.Diagnostics;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Where one transformer block of the reference config spends its inference time (batch 64, no autograd): the block as
/// the library runs it, and each of its parts timed alone on the same shapes — the four linear layers (with the rate each
/// reaches as a matrix product), the attention core (scores, softmax, weighted sum over 65 tokens per head), GELU, the two
/// layer norms and the residual adds. Medians of <c>reps</c> rounds; the fp32 1024³ GEMM is measured in the same rounds.
/// It also times the attention and MLP modules and fc1 followed by GELU as the library chains them (and with GELU in place),
/// and counts minor page faults per call: the parts alone sum to less than the chained block (docs/benchmarks.md, "Where
/// inference time goes").
/// </summary>
internal static class BreakdownBenchmark
{
    public static Dictionary<string, object> Run(int threads, int batch, int reps)
    {
        torch.set_num_threads(threads);
        manual_seed(0);
        var arch = ViTArchitecture.CifarTiny();
        using var model = new VisionTransformerModel(arch, seed: 0);
        model.eval();
        using var _ = no_grad();
        var spec = arch.Blocks[0];
        int d = arch.EmbedDim, n = arch.SequenceLength, heads = spec.Heads, dh = spec.QkDim, mlp = spec.MlpHidden;
        long tokens = (long)batch * n;
        var x = randn(batch, n, d);
        var block = model.Blocks[0];
        var lnW = ones(d); var lnB = zeros(d);
        var linears = new (string Name, long In, long Out)[] { ("qkv", d, 3 * heads * dh), ("proj", heads * dh, d), ("fc1", d, mlp), ("fc2", mlp, d) };
        var weights = linears.Select(l => (W: randn(l.Out, l.In).mul_(0.05), B: randn(l.Out).mul_(0.05), X: randn(tokens, l.In))).ToArray();
        var qkv = randn(batch, n, 3 * heads * dh);
        var hidden = randn(tokens, mlp).mul_(0.3);   // the spread of fc1's output in a trained model
        var big = randn(1024, 1024);

        var times = new Dictionary<string, List<double>>();
        var faults = new Dictionary<string, List<double>>();
        void Time(string name, Func<Tensor> f, int iters = 10)
        {
            for (int i = 0; i < 2; i++) f().Dispose();
            long f0 = MinorFaults();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < iters; i++) f().Dispose();
            (times.TryGetValue(name, out var l) ? l : times[name] = []).Add(sw.Elapsed.TotalMilliseconds / iters);
            (faults.TryGetValue(name, out var fl) ? fl : faults[name] = []).Add((MinorFaults() - f0) / (double)iters);
        }
        Tensor Attention()
        {
            using var scope = NewDisposeScope();
            var outs = new Tensor[heads];
            for (int h = 0; h < heads; h++)
            {
                var q = qkv.narrow(2, h * dh, dh); var k = qkv.narrow(2, (heads + h) * dh, dh); var v = qkv.narrow(2, (2 * heads + h) * dh, dh);
                outs[h] = bmm(bmm(q, k.transpose(1, 2)).mul_(1.0 / Math.Sqrt(dh)).softmax(-1), v);
            }
            return cat(outs, 2).MoveToOuterDisposeScope();
        }

        for (int r = 0; r < reps; r++)
        {
            Time("gemm1024", () => big.matmul(big), 5);
            Time("block", () => block.forward(x));
            Time("attention_module", () => block.attn.forward(x));
            Time("mlp_module", () => block.mlp.forward(x));
            Time("fc1_then_gelu", () => { using var h = block.mlp.fc1.forward(x); return nn.functional.gelu(h); });
            Time("fc1_then_gelu_inplace", () => { var h = block.mlp.fc1.forward(x); nn.functional.gelu(h, inplace: true); return h; });
            for (int i = 0; i < linears.Length; i++)
            {
                var (w, b, input) = weights[i];
                Time(linears[i].Name, () => nn.functional.linear(input, w, b));
            }
            Time("attention_core", Attention);
            Time("gelu", () => nn.functional.gelu(hidden));
            Time("layernorm_x2", () => { nn.functional.layer_norm(x, [d], lnW, lnB, 1e-6).Dispose(); return nn.functional.layer_norm(x, [d], lnW, lnB, 1e-6); });
            Time("residual_adds_x2", () => { x.add(x).Dispose(); return x.add(x); });
        }

        static double MedOf(List<double> values) { var l = values.Order().ToList(); return l[l.Count / 2]; }
        double Med(string k) => MedOf(times[k]);
        double gemm = 2.0 * 1024 * 1024 * 1024 / Med("gemm1024") / 1e6;
        double blockMs = Med("block");
        double blockFlops = arch.BlockForwardFlops(0) * (double)batch;
        var r2 = new Dictionary<string, object>
        {
            ["mode"] = "breakdown",
            ["config"] = "cifar-tiny block 0 (embed192, 3 heads, MLP 768, 65 tokens), batch " + batch,
            ["threads"] = threads,
            ["gemm_gflops"] = Math.Round(gemm, 1),
            ["block_ms"] = Math.Round(blockMs, 2),
            ["block_gflops"] = Math.Round(blockFlops / blockMs / 1e6, 1),
            ["block_fraction_of_gemm"] = Math.Round(blockFlops / blockMs / 1e6 / gemm, 3),
        };
        Console.WriteLine($"fp32 GEMM 1024³ {gemm:F1} GFLOP/s; block {blockMs:F2} ms = {blockFlops / blockMs / 1e6:F1} GFLOP/s ({blockFlops / blockMs / 1e6 / gemm:P1} of GEMM)");
        double partsMs = 0;
        foreach (var (name, inDim, outDim) in linears)
        {
            double ms = Med(name), rate = 2.0 * tokens * inDim * outDim / ms / 1e6;
            partsMs += ms;
            r2[$"{name}_ms"] = Math.Round(ms, 2);
            r2[$"{name}_fraction_of_gemm"] = Math.Round(rate / gemm, 3);
            Console.WriteLine($"  linear {name,-4} [{tokens}×{inDim}]·[{inDim}×{outDim}]: {ms:F2} ms, {rate:F1} GFLOP/s ({rate / gemm:P0} of GEMM)");
        }
        double attnFlops = 4.0 * batch * heads * n * n * dh;
        foreach (var name in new[] { "attention_core", "gelu", "layernorm_x2", "residual_adds_x2" })
        {
            double ms = Med(name);
            partsMs += ms;
            r2[$"{name}_ms"] = Math.Round(ms, 2);
            string extra = name == "attention_core" ? $", {attnFlops / ms / 1e6:F1} GFLOP/s" : "";
            Console.WriteLine($"  {name,-17} {ms:F2} ms ({ms / blockMs:P0} of the block{extra})");
        }
        foreach (var name in new[] { "attention_module", "mlp_module", "fc1_then_gelu", "fc1_then_gelu_inplace" })
        {
            r2[$"{name}_ms"] = Math.Round(Med(name), 2);
            Console.WriteLine($"  {name,-21} {Med(name):F2} ms (chained{(name.EndsWith("inplace", StringComparison.Ordinal) ? ", GELU in place: not what the library runs" : " as the library runs them")})");
        }
        // Minor page faults per call: each is a 4 KB page the kernel hands out (and zeroes) because the allocator returned
        // the memory of an earlier, freed activation to it. docs/benchmarks.md shows what they cost.
        foreach (var name in new[] { "block", "mlp_module", "fc1_then_gelu", "fc1_then_gelu_inplace" })
            r2[$"{name}_page_faults"] = Math.Round(MedOf(faults[name]), 0);
        Console.WriteLine($"  minor page faults per call: block {MedOf(faults["block"]):F0}, fc1 then GELU {MedOf(faults["fc1_then_gelu"]):F0} (in place {MedOf(faults["fc1_then_gelu_inplace"]):F0})");
        r2["attention_core_gflops"] = Math.Round(attnFlops / Med("attention_core") / 1e6, 1);
        r2["parts_sum_ms"] = Math.Round(partsMs, 2);
        Console.WriteLine($"  parts sum {partsMs:F2} ms vs block {blockMs:F2} ms");
        foreach (var t in weights) { t.W.Dispose(); t.B.Dispose(); t.X.Dispose(); }
        return r2;
    }

    /// <summary>This process's minor page faults so far (field 10 of /proc/self/stat); 0 where there is no procfs.</summary>
    private static long MinorFaults()
    {
        if (!File.Exists("/proc/self/stat")) return 0;
        string stat = File.ReadAllText("/proc/self/stat");
        string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');   // fields after "pid (comm) ", starting at state
        return long.Parse(fields[7], System.Globalization.CultureInfo.InvariantCulture);
    }
}
