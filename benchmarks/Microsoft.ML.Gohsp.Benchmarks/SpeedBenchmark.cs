using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

/// <summary>
/// Speed where users run it (<c>--speed</c>), every comparison interleaved in one process, medians of <c>reps</c> rounds:
/// <list type="bullet">
/// <item>dense cifar-tiny vs pruned 40/50/80% (magnitude plan, the same projection + surgery GOHSP uses): batch-64
///   inference speed-up against the executed-FLOP ratio, and an in-chain profile of each model by op kind;</item>
/// <item>ML.NET <c>Transform</c> + <c>Evaluate</c> over the CIFAR-10 test subset against the raw batched forward of the
///   same model (fresh transformer, reloaded zip with <c>UseBatchScoring</c>, and row by row);</item>
/// <item><c>PredictionEngine.Predict</c> on one image against a raw single-image forward.</item>
/// </list>
/// </summary>
internal static class SpeedBenchmark
{
    public static Dictionary<string, object> Run(int threads, int batch, int reps, int latencyEpochs)
    {
        torch.set_num_threads(threads);
        manual_seed(0);
        var r = new Dictionary<string, object> { ["mode"] = "speed", ["threads"] = threads, ["batch"] = batch, ["reps"] = reps };
        PrunedVsDense(r, batch, reps);
        MlNetVsRaw(r, threads, reps);
        LatencyBudgetExample(r, threads, batch, reps, latencyEpochs);
        return r;
    }

    /// <summary>
    /// Prune to milliseconds: dense cifar-tiny trained <paramref name="epochs"/> epochs (bf16 where native), its batch
    /// latency X measured, then SOMP with <see cref="PruningOptions.TargetLatencyMs"/> = 0.5·X against this device's
    /// <see cref="LatencyModel"/>: the run calibrates the table's budget by timing
    /// (<see cref="PruningOptions.LatencyCalibrationIterations"/>), plans by the magnitude of the trained weights, cuts and
    /// fine-tunes epochs/2 epochs; the pruned model is re-timed against the dense one, interleaved.
    /// </summary>
    private static void LatencyBudgetExample(Dictionary<string, object> r, int threads, int batch, int reps, int epochs)
    {
        var arch = ViTArchitecture.CifarTiny();
        var sw = Stopwatch.StartNew();
        var latency = LatencyModel.LoadOrMeasure(arch, batch);
        Console.WriteLine($"latency model ({sw.Elapsed.TotalSeconds:F0} s incl. cache lookup): dense estimate {latency.ModelMs(arch):F1} ms per batch of {batch}");
        var dir = FindSubset();
        ImageTensorData? train = null, test = null;
        var o = new ViTTrainingOptions
        {
            Epochs = Math.Max(1, epochs), NumberOfThreads = threads, Device = ViTDevice.Cpu, Seed = 1,
            TrainingPrecision = Microsoft.ML.Gohsp.Diagnostics.MachineInfo.Probe().NativeBf16 ? ComputePrecision.BFloat16 : ComputePrecision.Float32,
        };
        using var dense = new VisionTransformerModel(arch, seed: 1);
        if (epochs > 0 && dir is not null)
        {
            train = Cifar10.Read(dir, Cifar10Split.Train).ToTensorData();
            test = Cifar10.Read(dir, Cifar10Split.Test).ToTensorData();
            new TrainingLoop(o, "latency-dense").Train(dense, train);
        }
        dense.eval();
        using var x = randn(batch, 3, 32, 32);
        double Ms(VisionTransformerModel m)
        {
            using var _ = no_grad();
            var sw2 = Stopwatch.StartNew();
            for (int i = 0; i < 6; i++) m.forward(x).Dispose();
            return sw2.Elapsed.TotalMilliseconds / 6;
        }
        for (int i = 0; i < 3; i++) Ms(dense);
        double denseMs = Median(Enumerable.Range(0, reps).Select(_ => Ms(dense)).ToList());
        double target = 0.5 * denseMs;
        // the options path: SOMP (the magnitude plan) with the target in ms; the run calibrates the table's budget by timing
        // before it cuts (PruningOptions.LatencyCalibrationIterations, default 3), then fine-tunes epochs/2 epochs
        var fineTune = new ViTTrainingOptions
        {
            Epochs = Math.Max(1, epochs / 2), WarmupEpochs = 0, NumberOfThreads = threads, Device = ViTDevice.Cpu, Seed = 1,
            TrainingPrecision = o.TrainingPrecision,
        };
        var options = new SompOptions { TargetLatencyMs = target, LatencyBatchSize = batch, LatencyTable = latency, FineTune = fineTune };
        // without the data set (untrained weights): one fine-tune step on random images, which does not change the speed
        var rng = new Random(0);
        var tuneData = train ?? new ImageTensorData(new float[batch * arch.Channels * arch.ImageSize * arch.ImageSize].Select(_ => rng.NextSingle()).ToArray(),
            Enumerable.Range(0, batch).Select(i => i % arch.NumClasses).ToArray(), arch.Channels, arch.ImageSize);
        var result = new SompPruner(options).Run(new PruningContext(dense, tuneData, test) { Log = line => Console.WriteLine(line) });
        using var pruned = result.Model;
        var report = result.Report;
        var calibration = report.LatencyCalibration ?? throw new InvalidOperationException("the run did not calibrate its latency target");
        r["latency_table_only_ratio"] = Math.Round(calibration.TableOnlyRatio, 3);
        r["latency_calibrated_ratio"] = Math.Round(calibration.MeasuredRatio, 3);
        r["latency_calibration_target_ratio"] = Math.Round(calibration.TargetRatio, 3);
        r["latency_calibration_plans"] = calibration.Iterations;
        r["latency_calibrated_table_fraction"] = calibration.TableLatencyFraction;
        double prunedTop1NoTune = double.NaN, denseTop1 = double.NaN, prunedTop1 = double.NaN;
        if (train is not null && test is not null)
        {
            denseTop1 = report.ValidationAccuracy["dense"];
            prunedTop1NoTune = report.ValidationAccuracy[PruningReport.HardPrunedStage];
            prunedTop1 = report.ValidationAccuracy[PruningReport.FinalStage];
        }
        pruned.eval();
        Ms(pruned);
        var d = new List<double>(); var p = new List<double>();
        for (int i = 0; i < reps; i++) { d.Add(Ms(dense)); p.Add(Ms(pruned)); }
        double achieved = Median(p), denseAgain = Median(d);
        var pa = pruned.Architecture;
        r["latency_dense_ms"] = Math.Round(denseMs, 2);
        r["latency_target_ms"] = Math.Round(target, 2);
        r["latency_estimate_ms"] = Math.Round(latency.ModelMs(pa), 2);
        r["latency_achieved_ms"] = Math.Round(achieved, 2);
        r["latency_achieved_over_target"] = Math.Round(achieved / target, 3);
        r["latency_dense_ms_interleaved"] = Math.Round(denseAgain, 2);
        // the machine's speed drifts between minutes: the same ratio against the dense model timed in the same rounds
        r["latency_achieved_over_half_dense_interleaved"] = Math.Round(achieved / (0.5 * denseAgain), 3);
        r["latency_pruned_blocks"] = string.Join(" ", pa.Blocks.Select(b => $"{b.Heads}x{b.QkDim}/{b.VDim}-{b.MlpHidden}"));
        r["latency_pruned_params_ratio"] = Math.Round((double)pa.ParameterCount / arch.ParameterCount, 3);
        r["latency_dense_epochs"] = epochs;
        if (!double.IsNaN(denseTop1))
        {
            r["latency_dense_top1"] = Math.Round(denseTop1, 4);
            r["latency_pruned_top1_before_finetune"] = Math.Round(prunedTop1NoTune, 4);
            r["latency_pruned_top1"] = Math.Round(prunedTop1, 4);
        }
        Console.WriteLine($"latency budget: dense {denseMs:F1} ms per batch of {batch} → target {target:F1} ms → estimate {latency.ModelMs(pa):F1} ms, " +
            $"achieved {achieved:F1} ms ({achieved / target:P0} of the target; dense {denseAgain:F1} ms in the same rounds, so {achieved / (0.5 * denseAgain):P0} of half of it), params ×{(double)pa.ParameterCount / arch.ParameterCount:F3}, " +
            $"blocks {r["latency_pruned_blocks"]}" + (double.IsNaN(denseTop1) ? "" :
            $"; top-1 dense {denseTop1:P2} ({epochs} epochs), pruned {prunedTop1NoTune:P2} before / {prunedTop1:P2} after {Math.Max(1, epochs / 2)} fine-tune epochs"));
    }

    private static void PrunedVsDense(Dictionary<string, object> r, int batch, int reps)
    {
        var arch = ViTArchitecture.CifarTiny();
        using var dense = new VisionTransformerModel(arch, seed: 0);
        var models = new List<(string Name, VisionTransformerModel Model)> { ("dense", dense) };
        foreach (double sp in new[] { 0.4, 0.5, 0.8 })
        {
            var plan = StructuredProjection.Allocate(arch, StructuredProjection.Magnitude(dense), sp);
            models.Add(($"pruned{(int)Math.Round(sp * 100)}", HardPruning.Prune(dense, plan)));
        }
        try { CompareWithDense(r, models, batch, reps); }
        finally { foreach (var (name, m) in models) if (name != "dense") m.Dispose(); }
    }

    /// <summary>
    /// <c>--shapes report.json</c>: the pruned shapes of a sample run (each entry's heads, q/k dim, v dim and MLP width per
    /// block), rebuilt with random weights (speed does not depend on them) and timed against the dense preset of that run,
    /// interleaved, with the in-chain profile by op kind: where each method's model spends the time its FLOPs promise to save.
    /// </summary>
    public static Dictionary<string, object> Shapes(string reportPath, int threads, int batch, int reps)
    {
        torch.set_num_threads(threads);
        manual_seed(0);
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(reportPath));
        var config = doc.RootElement.GetProperty("config");
        var arch = ViTArchitecture.FromPreset(config.GetProperty("arch").GetString()!, config.TryGetProperty("classes", out var c) ? c.GetInt32() : 10);
        var r = new Dictionary<string, object> { ["mode"] = "shapes", ["report"] = reportPath, ["threads"] = threads, ["batch"] = batch, ["reps"] = reps };
        using var dense = new VisionTransformerModel(arch, seed: 0);
        var models = new List<(string Name, VisionTransformerModel Model)> { ("dense", dense) };
        foreach (var e in doc.RootElement.GetProperty("entries").EnumerateArray())
        {
            string name = Path.GetFileNameWithoutExtension(e.GetProperty("model").GetString()!);
            var blocks = e.GetProperty("blocks").EnumerateArray().Select(b => new ViTBlockSpec(
                b.GetProperty("heads").GetInt32(), b.GetProperty("qk_dim").GetInt32(), b.GetProperty("v_dim").GetInt32(), b.GetProperty("mlp_width").GetInt32()));
            models.Add((name, new VisionTransformerModel(arch.WithBlocks(blocks), seed: 0)));
        }
        try
        {
            CompareWithDense(r, models, batch, reps);
            AttentionCores(r, models, batch, reps);
        }
        finally { foreach (var (name, m) in models) if (name != "dense") m.Dispose(); }
        return r;
    }

    /// <summary>
    /// The attention core of every distinct block shape (after qkv, before the output projection), timed three ways on the
    /// same qkv output, interleaved: one <c>bmm</c> → softmax → <c>bmm</c> per head on strided views (what the inference
    /// path runs), the same on [B·heads] batches (one 4-D product for all heads), and
    /// <c>scaled_dot_product_attention</c>. ms per batch, medians of <paramref name="reps"/> rounds of 10 calls.
    /// </summary>
    private static void AttentionCores(Dictionary<string, object> r, List<(string Name, VisionTransformerModel Model)> models, int batch, int reps)
    {
        var a = models[0].Model.Architecture;
        using var _ = no_grad();
        foreach (var (h, dq, dv) in models.SelectMany(m => m.Model.Architecture.Blocks).Select(s => (s.Heads, s.QkDim, s.VDim)).Distinct()
            .OrderByDescending(s => s.Heads * (2 * s.QkDim + s.VDim)))
        {
            long n = a.SequenceLength;
            using var scope = NewDisposeScope();
            var t = randn(batch, n, (long)h * (2 * dq + dv));
            Tensor PerHead() => PerHeadCore(t, h, dq, dv);
            (Tensor Q, Tensor K, Tensor V) Split()
            {
                var parts = t.split(new long[] { (long)h * dq, (long)h * dq, (long)h * dv }, -1);
                return (parts[0].view(batch, n, h, dq).transpose(1, 2), parts[1].view(batch, n, h, dq).transpose(1, 2), parts[2].view(batch, n, h, dv).transpose(1, 2));
            }
            Tensor Batched()
            {
                var (q, k, v) = Split();
                var o = matmul(matmul(q, k.transpose(2, 3)).mul_(1.0 / Math.Sqrt(dq)).softmax(-1), v);
                return o.transpose(1, 2).reshape(batch, n, (long)h * dv);
            }
            Tensor Sdpa()
            {
                var (q, k, v) = Split();
                return nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, n, (long)h * dv);
            }
            var variants = new (string Name, Func<Tensor> F)[] { ("per_head_bmm", PerHead), ("batched_matmul", Batched), ("sdpa", Sdpa) };
            var maxDiff = variants.Skip(1).Select(v => (v.F() - PerHead()).abs().max().item<float>()).Max();
            var times = variants.ToDictionary(v => v.Name, _ => new List<double>());
            foreach (var (_, f) in variants) for (int i = 0; i < 3; i++) using (NewDisposeScope()) f();
            for (int round = 0; round < reps; round++)
                foreach (var (name, f) in variants)
                {
                    var sw = Stopwatch.StartNew();
                    for (int i = 0; i < 10; i++) using (NewDisposeScope()) f();
                    times[name].Add(sw.Elapsed.TotalMilliseconds / 10);
                }
            string key = $"core_{h}x{dq}/{dv}";
            foreach (var (name, list) in times) r[$"{key}_{name}_ms"] = Math.Round(Median(list), 3);
            r[$"{key}_max_abs_difference"] = maxDiff;
            Console.WriteLine($"attention core {h}x{dq}/{dv}: " + string.Join(", ", times.Select(kv => $"{kv.Key} {Median(kv.Value):F3} ms")) + $" (max |Δ| {maxDiff:G2})");
        }
    }

    /// <summary>
    /// Times every model against <paramref name="models"/>[0] (the dense one), interleaved: per round 6 forwards of each,
    /// and the in-chain profile by op kind; speed-ups against executed-FLOP ratios, medians of <paramref name="reps"/> rounds.
    /// </summary>
    private static void CompareWithDense(Dictionary<string, object> r, List<(string Name, VisionTransformerModel Model)> models, int batch, int reps)
    {
        var arch = models[0].Model.Architecture;
        foreach (var (_, m) in models) m.eval();
        using var _ = no_grad();
        using var x = randn(batch, 3, 32, 32);
        var ms = models.ToDictionary(m => m.Name, _ => new List<double>());
        var speedups = models.Skip(1).ToDictionary(m => m.Name, _ => new List<double>());
        var profiles = models.ToDictionary(m => m.Name, _ => new List<Dictionary<string, double>>());
        foreach (var (_, m) in models) for (int i = 0; i < 3; i++) m.forward(x).Dispose();
        for (int round = 0; round < reps; round++)
        {
            foreach (var (name, m) in models)
            {
                const int calls = 6;
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < calls; i++) m.forward(x).Dispose();
                ms[name].Add(sw.Elapsed.TotalMilliseconds / calls);
                profiles[name].Add(Profile(m, x));
            }
            foreach (var (name, _) in models.Skip(1)) speedups[name].Add(ms["dense"][^1] / ms[name][^1]);
        }
        var denseProfile = MedianProfile(profiles["dense"]);
        foreach (var (name, m) in models)
        {
            var a = m.Architecture;
            double batchMs = Median(ms[name]);
            r[$"{name}_batch_ms"] = Math.Round(batchMs, 2);
            r[$"{name}_images_per_s"] = Math.Round(batch * 1000 / batchMs, 1);
            r[$"{name}_blocks"] = string.Join(" ", a.Blocks.Select(b => $"{b.Heads}x{b.QkDim}/{b.VDim}-{b.MlpHidden}"));
            var profile = MedianProfile(profiles[name]);
            foreach (var (k, v) in profile) r[$"{name}_profile_{k}_ms"] = Math.Round(v, 2);
            string line = $"{name,-9} {batchMs,7:F2} ms/batch ({batch * 1000 / batchMs:F0} img/s), blocks {r[$"{name}_blocks"]}";
            if (name != "dense")
            {
                double flopRatio = (double)arch.ExecutedForwardFlops / a.ExecutedForwardFlops, speedup = Median(speedups[name]);
                r[$"{name}_params_ratio"] = Math.Round((double)a.ParameterCount / arch.ParameterCount, 3);
                r[$"{name}_executed_flop_ratio"] = Math.Round(flopRatio, 3);
                r[$"{name}_speedup"] = Math.Round(speedup, 3);
                r[$"{name}_speedup_per_round"] = speedups[name].Select(s => Math.Round(s, 3)).ToArray();
                r[$"{name}_speedup_over_flop_ratio"] = Math.Round(speedup / flopRatio, 3);
                line += $"\n          speed-up ×{speedup:F2} (rounds {string.Join(", ", speedups[name].Select(s => s.ToString("F2")))}) vs executed-FLOP ratio ×{flopRatio:F2} = {speedup / flopRatio:P0}";
            }
            line += "\n          profile (ms per batch, ×dense time / this): " + string.Join(", ", profile.Select(kv =>
                $"{kv.Key} {kv.Value:F2}" + (name == "dense" ? "" : $" (×{denseProfile[kv.Key] / kv.Value:F2})")));
            Console.WriteLine(line);
        }
    }

    /// <summary>
    /// The forward of <paramref name="m"/> on <paramref name="x"/> as <see cref="VisionTransformerModel.forward"/> runs it
    /// (slices, class-token last block), with a stopwatch around each kind of op: ms per batch by kind.
    /// </summary>
    internal static Dictionary<string, double> Profile(VisionTransformerModel m, Tensor x)
    {
        var t = new Dictionary<string, double>
        {
            ["qkv"] = 0, ["attention_core"] = 0, ["proj_residual"] = 0, ["fc1"] = 0, ["gelu"] = 0, ["fc2_residual"] = 0, ["norms"] = 0,
            ["last_block"] = 0, ["embed_head"] = 0,
        };
        var sw = new Stopwatch();
        Tensor Timed(string k, Func<Tensor> f) { sw.Restart(); var y = f(); t[k] += sw.Elapsed.TotalMilliseconds; return y; }
        foreach (var (start, length) in VisionTransformerModel.SliceRanges(x.shape[0], m.InferenceSliceSize))
        {
            using var scope = NewDisposeScope();
            var images = x.narrow(0, start, length);
            var h = Timed("embed_head", () => m.TokensBeforeBlocks(images));
            for (int bi = 0; bi < m.Blocks.Count; bi++)
            {
                var block = m.Blocks[bi];
                if (bi == m.Blocks.Count - 1) { h = Timed("last_block", () => block.ForwardClassToken(h)); break; }
                var spec = block.attn.Spec;
                int heads = spec.Heads, dq = spec.QkDim, dv = spec.VDim;
                var n1 = Timed("norms", () => block.norm1.forward(h));
                var qkv = Timed("qkv", () => block.attn.qkv.forward(n1));
                var merged = Timed("attention_core", () => PerHeadCore(qkv, heads, dq, dv));
                // as Block runs it in float32: the products accumulate into the residual stream (x + b, then += input·Wᵀ)
                var x0 = h;
                h = Timed("proj_residual", () => Block.Accumulate(x0.add(block.attn.proj.bias, Scalars.One), merged, block.attn.proj.weight));
                var n2 = Timed("norms", () => block.norm2.forward(h));
                var f1 = Timed("fc1", () => block.mlp.fc1.forward(n2));
                var g = Timed("gelu", () => nn.functional.gelu(f1));
                var x1 = h;
                h = Timed("fc2_residual", () => Block.Accumulate(x1.add_(block.mlp.fc2.bias, Scalars.One), g, block.mlp.fc2.weight));
            }
            Timed("embed_head", () => m.Head.forward(m.FinalNorm.forward(h.select(1, 0))));
        }
        return t;
    }


    /// <summary>The attention core as the inference path runs it: per head, bmm → scale → softmax → bmm on strided views of the qkv output.</summary>
    private static Tensor PerHeadCore(Tensor qkv, int heads, int dq, int dv)
    {
        var outs = new Tensor[heads];
        for (int i = 0; i < heads; i++)
        {
            var q = qkv.narrow(2, (long)i * dq, dq);
            var k = qkv.narrow(2, (long)(heads + i) * dq, dq);
            var v = qkv.narrow(2, 2L * heads * dq + (long)i * dv, dv);
            outs[i] = bmm(bmm(q, k.transpose(1, 2)).mul_(1.0 / Math.Sqrt(dq)).softmax(-1), v);
        }
        return heads == 1 ? outs[0] : cat(outs, 2);
    }

    private static Dictionary<string, double> MedianProfile(List<Dictionary<string, double>> rounds) =>
        rounds[0].Keys.ToDictionary(k => k, k => Median(rounds.Select(p => p[k]).ToList()));

    private static void MlNetVsRaw(Dictionary<string, object> r, int threads, int reps)
    {
        var dir = FindSubset();
        if (dir is null) { Console.WriteLine("ML.NET vs raw: skipped (no ../shared/data/cifar-10-subset)"); return; }
        var ml = new MLContext(seed: 1);
        var trainSet = Cifar10.Read(dir, Cifar10Split.Train, 256);
        var testSet = Cifar10.Read(dir, Cifar10Split.Test);
        var test = Cifar10.ToDataView(ml, testSet);
        var testTensor = testSet.ToTensorData();
        // cifar-tiny trained for one short epoch: the speed does not depend on the weights
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(new ViTClassificationTrainer.Options
            {
                ImageColumnName = "Pixels", ArchitecturePreset = "cifar-tiny", Epochs = 1, NumberOfThreads = threads, Device = ViTDevice.Cpu,
            }))
            .Fit(Cifar10.ToDataView(ml, trainSet));
        var vit = model.LastTransformer.Model;
        var zip = Path.Combine(Path.GetTempPath(), $"gohsp-speed-{Environment.ProcessId}.zip");
        ml.Model.SaveAtomically(model, test.Schema, zip);
        var fresh = new MLContext(seed: 1);
        var loaded = fresh.Model.Load(zip, out _).UseBatchScoring();
        File.Delete(zip);

        double Raw() { var sw = Stopwatch.StartNew(); vit.PredictProbabilities(testTensor, 64); return testSet.Count / sw.Elapsed.TotalSeconds; }
        double Transform(MLContext c, ITransformer t)
        {
            var sw = Stopwatch.StartNew();
            c.MulticlassClassification.Evaluate(t.Transform(Cifar10.ToDataView(c, testSet)));
            return testSet.Count / sw.Elapsed.TotalSeconds;
        }
        Raw(); Transform(ml, model); Transform(fresh, loaded);
        var raw = new List<double>(); var fit = new List<double>(); var load = new List<double>();
        var fitRatio = new List<double>(); var loadRatio = new List<double>();
        for (int i = 0; i < reps; i++)
        {
            GC.Collect(); GC.WaitForPendingFinalizers();
            raw.Add(Raw()); fit.Add(Transform(ml, model)); load.Add(Transform(fresh, loaded));
            fitRatio.Add(fit[^1] / raw[^1]); loadRatio.Add(load[^1] / raw[^1]);
        }
        // row by row (ML.NET's own scorer), one timed pass: the reference the batched scorer replaces
        vit.ScoringBatchSize = 1;
        Transform(ml, model);
        double rowByRow = Transform(ml, model);
        vit.ScoringBatchSize = 64;
        r["mlnet_raw_batch_images_per_s"] = Math.Round(Median(raw), 1);
        r["mlnet_transform_evaluate_images_per_s"] = Math.Round(Median(fit), 1);
        r["mlnet_transform_evaluate_over_raw"] = Math.Round(Median(fitRatio), 3);
        r["mlnet_loaded_transform_evaluate_images_per_s"] = Math.Round(Median(load), 1);
        r["mlnet_loaded_transform_evaluate_over_raw"] = Math.Round(Median(loadRatio), 3);
        r["mlnet_row_by_row_images_per_s"] = Math.Round(rowByRow, 1);
        Console.WriteLine($"ML.NET Transform + Evaluate over {testSet.Count} test images: {Median(fit):F0} img/s ({Median(fitRatio):P0} of raw batched {Median(raw):F0} img/s, " +
            $"rounds {string.Join(", ", fitRatio.Select(v => v.ToString("P0")))}); reloaded zip + UseBatchScoring {Median(load):F0} img/s ({Median(loadRatio):P0}); row by row {rowByRow:F0} img/s");

        // PredictionEngine on one MLImage vs a raw forward of the same image, alternating
        using var engine = fresh.Model.CreatePredictionEngine<ImageInput, ScoreOutput>(loaded);
        var input = new ImageInput { Image = Cifar10.CreateImage(testSet.GetImage(0)) };
        var pre = vit.Preprocessing;
        var planar = testSet.GetImage(0);
        var xs = new float[planar.Length];
        for (int i = 0; i < xs.Length; i++) xs[i] = (planar[i] * pre.PixelScale - pre.Mean[i / 1024]) / pre.Std[i / 1024];
        using var one = tensor(xs, new long[] { 1, 3, 32, 32 });
        var engineMs = new List<double>(); var rawMs = new List<double>(); var ratio = new List<double>();
        for (int i = 0; i < 210; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            engine.Predict(input);
            long t1 = Stopwatch.GetTimestamp();
            using (NewDisposeScope()) using (no_grad()) vit.Model.forward(one);
            long t2 = Stopwatch.GetTimestamp();
            if (i < 10) continue;
            engineMs.Add(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
            rawMs.Add(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
        }
        r["predictionengine_ms"] = Math.Round(Median(engineMs), 3);
        r["raw_single_forward_ms"] = Math.Round(Median(rawMs), 3);
        r["predictionengine_over_raw"] = Math.Round(Median(engineMs) / Median(rawMs), 3);
        Console.WriteLine($"PredictionEngine {Median(engineMs):F3} ms vs raw single-image forward {Median(rawMs):F3} ms (×{Median(engineMs) / Median(rawMs):F3}; medians of 200 alternating calls)");
    }

    internal static double Median(IReadOnlyList<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    internal static string? FindSubset()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var p = Path.Combine(dir.FullName, "shared", "data", "cifar-10-subset");
            if (Directory.Exists(p)) return p;
        }
        return null;
    }

    private sealed class ImageInput
    {
        [Microsoft.ML.Transforms.Image.ImageType(32, 32)]
        public MLImage Image { get; set; } = null!;
        public string Label { get; set; } = "cat";
    }

    private sealed class ScoreOutput
    {
        public float[] Score { get; set; } = [];
    }
}
