using System.Diagnostics;
using MathNet.Numerics.Distributions;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// The head-ranking ablation (<c>--ablation-epochs N</c>): for 3 dense seeds × 2 disjoint calibration sets, remove 30% and
/// 50% of the heads of a trained dense cifar-tiny by each ranking and score the model before any fine-tuning by NLL and
/// top-1 on the validation split (10% of the training images, seed 1). Every ranking is normalised per block (mean 1) and
/// selected globally with ≥ 1 head per block. The test images are not read. <c>guided</c> is the ranking GOHSP's default
/// projections use for heads (<see cref="HeadPruningMode.Guided"/>): each head's ℓ2 magnitude times its graph importance.
/// Paired differences against the default graph ranking (same dense model, same calibration set) come with 95% Student-t
/// intervals over the 6 runs.
/// </summary>
internal static class HeadRankingAblation
{
    public static Dictionary<string, object> Run(int epochs, int threads, string? subset)
    {
        var dir = subset ?? throw new DirectoryNotFoundException("the ablation needs ../shared/data/cifar-10-subset");
        var all = Cifar10.Read(dir, Cifar10Split.Train).ToTensorData();
        var (train, validation, _) = all.SplitValidation(0.1, 1);
        var calibrations = new[] { train.Select(Enumerable.Range(0, 256).ToArray()), train.Select(Enumerable.Range(256, 256).ToArray()) };
        var o = new ViTTrainingOptions { Epochs = epochs, NumberOfThreads = threads, Device = ViTDevice.Cpu, TrainingPrecision = ComputePrecision.BFloat16 };
        var scores = new Dictionary<(string Ranking, double Fraction), List<(double Top1, double Nll)>>();
        var res = new Dictionary<string, object> { ["ablation_epochs"] = epochs, ["ablation_validation_images"] = validation.Count };
        var denseTop1 = new List<double>();
        foreach (int seed in new[] { 1, 2, 3 })
        {
            var sw = Stopwatch.StartNew();
            using var model = new VisionTransformerModel(ViTArchitecture.CifarTiny(), seed: seed);
            new TrainingLoop(new ViTTrainingOptions { Epochs = epochs, NumberOfThreads = threads, Device = ViTDevice.Cpu, TrainingPrecision = ComputePrecision.BFloat16, Seed = seed }, "ablation-dense").Train(model, train);
            var dense = Fidelity.Measure(model, validation, o);
            denseTop1.Add(dense.Top1);
            Console.WriteLine($"ablation: dense cifar-tiny seed {seed} ({epochs} epochs bf16, {sw.Elapsed.TotalSeconds:F0} s): validation top-1 {dense.Top1:P2}, NLL {dense.Nll:F4}");
            for (int c = 0; c < calibrations.Length; c++)
            {
                var calib = calibrations[c];
                var rankings = new Dictionary<string, double[][]>();
                var graph = HeadGraphRanking.Rank(model, calib, o);
                rankings["graph_central_important"] = graph.Select(g => g.Importance(HeadRankingDirection.CentralIsImportant)).ToArray();
                rankings["graph_central_redundant"] = graph.Select(g => g.Importance(HeadRankingDirection.CentralIsRedundant)).ToArray();
                var js = HeadGraphRanking.Rank(model, calib, o, HeadSimilarity.AttentionMapJensenShannon);
                rankings["graph_js_central_important"] = js.Select(g => g.Importance(HeadRankingDirection.CentralIsImportant)).ToArray();
                var taylor = HeadGraphRanking.TaylorSaliency(model, calib, o);
                var ppr = HeadGraphRanking.Rank(model, calib, o, teleport: taylor);
                rankings["graph_taylor_personalized"] = ppr.Select(g => g.Importance(HeadRankingDirection.CentralIsImportant)).ToArray();
                rankings["taylor"] = taylor.Select(PerBlockMean).ToArray();
                rankings["l2"] = StructuredProjection.Magnitude(model).Select(b => PerBlockMean(b.Heads.Select(v => (double)v).ToArray())).ToArray();
                rankings["guided"] = rankings["l2"].Select((b, i) => PerBlockMean(b.Select((v, h) => v * rankings["graph_central_important"][i][h]).ToArray())).ToArray();
                var r = new Random(1000 * seed + c);
                rankings["random"] = model.Architecture.Blocks.Select(b => Enumerable.Range(0, b.Heads).Select(_ => r.NextDouble()).ToArray()).ToArray();
                foreach (double frac in new[] { 0.3, 0.5 })
                    foreach (var (name, imp) in rankings)
                    {
                        model.SetHeadMasks(HeadGraphRanking.SelectHeads(imp, frac));
                        var m = Fidelity.Measure(model, validation, o);
                        model.ClearHeadMasks();
                        if (!scores.TryGetValue((name, frac), out var list)) scores[(name, frac)] = list = new();
                        list.Add((m.Top1, m.Nll));
                    }
            }
        }
        res["ablation_dense_validation_top1_mean"] = Math.Round(denseTop1.Average(), 4);
        Console.WriteLine($"ablation: mean over 3 dense seeds × 2 calibration sets (6 runs), validation split of {validation.Count} images, before fine-tuning");
        Console.WriteLine("| ranking | 30% heads: top-1 | 30%: NLL | 50% heads: top-1 | 50%: NLL |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: |");
        foreach (var name in scores.Keys.Select(k => k.Ranking).Distinct())
        {
            string Cell(double f, Func<(double Top1, double Nll), double> pick, string fmt) =>
                $"{scores[(name, f)].Average(pick).ToString(fmt)} ± {Std(scores[(name, f)].Select(pick).ToArray()).ToString(fmt)}";
            Console.WriteLine($"| {name} | {Cell(0.3, s => s.Top1 * 100, "F2")} | {Cell(0.3, s => s.Nll, "F3")} | {Cell(0.5, s => s.Top1 * 100, "F2")} | {Cell(0.5, s => s.Nll, "F3")} |");
            foreach (double f in new[] { 0.3, 0.5 })
            {
                res[$"ablation_heads{(int)(f * 100)}_{name}_top1"] = Math.Round(scores[(name, f)].Average(s => s.Top1), 4);
                res[$"ablation_heads{(int)(f * 100)}_{name}_nll"] = Math.Round(scores[(name, f)].Average(s => s.Nll), 4);
            }
        }
        Console.WriteLine("paired differences, ranking − graph_central_important, mean [95% CI] over the 6 runs (NLL: lower is better)");
        Console.WriteLine("| ranking | 30%: Δ top-1 (pts) | 30%: Δ NLL | 50%: Δ top-1 (pts) | 50%: Δ NLL |");
        Console.WriteLine("| --- | ---: | ---: | ---: | ---: |");
        foreach (var name in scores.Keys.Select(k => k.Ranking).Distinct().Where(n => n != "graph_central_important"))
        {
            string Diff(double f, string metric, Func<(double Top1, double Nll), double> pick, string fmt)
            {
                var d = scores[(name, f)].Zip(scores[("graph_central_important", f)], (x, g) => pick(x) - pick(g)).ToArray();
                var (mean, low, high) = MeanInterval(d);
                res[$"ablation_heads{(int)(f * 100)}_{name}_minus_graph_{metric}"] = new[] { Math.Round(mean, 4), Math.Round(low, 4), Math.Round(high, 4) };
                return $"{mean.ToString(fmt)} [{low.ToString(fmt)}, {high.ToString(fmt)}]";
            }
            Console.WriteLine($"| {name} | {Diff(0.3, "top1", s => s.Top1 * 100, "F2")} | {Diff(0.3, "nll", s => s.Nll, "F3")} | {Diff(0.5, "top1", s => s.Top1 * 100, "F2")} | {Diff(0.5, "nll", s => s.Nll, "F3")} |");
        }
        return res;
    }

    /// <summary>Mean and two-sided 95% Student-t interval of paired differences.</summary>
    private static (double Mean, double Low, double High) MeanInterval(double[] d)
    {
        double mean = d.Average(), half = StudentT.InvCDF(0, 1, d.Length - 1, 0.975) * Std(d) / Math.Sqrt(d.Length);
        return (mean, mean - half, mean + half);
    }

    private static double[] PerBlockMean(double[] v) { double m = v.Average(); return v.Select(x => m > 0 ? x / m : 1).ToArray(); }

    private static double Std(double[] v)
    {
        if (v.Length < 2) return 0;
        double m = v.Average();
        return Math.Sqrt(v.Sum(x => (x - m) * (x - m)) / (v.Length - 1));
    }
}
