// Benchmark of the reference ViT config (embed 192, depth 6, 3 heads, MLP 768, 32×32, patch 4, batch 64, 2 threads).
// Prints human-readable lines, then ONE JSON object as the last line.
// Usage: ./build.sh bench [-- --threads N --batch N --reps N --rss-epochs N --max-images N --accuracy-epochs N --seed N]
// --ablation-epochs N > 0: instead, the head-ranking ablation (3 dense seeds trained N epochs in bf16, 2 calibration sets, validation split).
// --accuracy-epochs N > 0 adds test accuracies on the CIFAR-10 subset: SdcaMaximumEntropy vs the ViT in fp32 and bf16 (long).
// --breakdown: instead, where one block's inference time goes (linears vs attention core, GELU, norms), medians of --reps rounds.
// --speed: instead, dense vs pruned 40/50/80% batch speed-ups against executed-FLOP ratios (with an in-chain profile by op
//          kind), ML.NET Transform + Evaluate vs the raw batched forward, PredictionEngine vs a raw forward; interleaved in
//          one process, medians of --reps rounds; and a latency budget: 0.5 × the dense batch latency as SOMP's
//          TargetLatencyMs (the device's LatencyModel, calibrated by timing in the run), re-timed (--latency-epochs N > 0 trains the dense model N epochs first and reports top-1 before
//          and after N/2 fine-tune epochs) (docs/benchmarks.md).
// --shapes PATH: instead, the shapes of a sample run's report.json (every entry's blocks) timed against its dense preset,
//          interleaved, with the in-chain profile by op kind (docs/benchmarks.md).
// --onnx: instead, single-image and batch latency of dense and 50%-pruned cifar-tiny in ONNX Runtime (float32 and int8, with the
//         int8 operator patterns side by side) vs TorchSharp (CPU, --threads, medians of --reps timed rounds), their output
//         agreement, the int8 GEMM kernel path, and ML.NET ApplyOnnxModel vs raw ONNX Runtime throughput (docs/interop.md).
// --onnx-accuracy-epochs N > 0: instead, int8 vs float32 ONNX top-1, NLL and agreement on the 1,017 test images for cifar-tiny
//         trained N epochs (--max-images, default all 5,085) and its 50% GOHSP-pruned copy (--finetune-epochs, default 1).
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

// --shapes REPORT: the pruned shapes of a sample run's report.json timed against its dense preset, with the profile by op kind.
int shapesAt = Array.IndexOf(args, "--shapes");
if (shapesAt >= 0)
{
    if (shapesAt + 1 >= args.Length) throw new ArgumentException("--shapes needs the path of a sample report.json.");
    string report = args[shapesAt + 1];
    args = [.. args[..shapesAt], .. args[(shapesAt + 2)..]];
    var sa = ParseArgs(args);
    var shapes = SpeedBenchmark.Shapes(report, sa.GetValueOrDefault("threads", 2), sa.GetValueOrDefault("batch", 64), sa.GetValueOrDefault("reps", 5));
    foreach (var kv in MachineFields(MachineInfo.Probe())) shapes[kv.Key] = kv.Value;
    Console.WriteLine(JsonSerializer.Serialize(shapes));
    return 0;
}
var a = ParseArgs(args);
int threads = a.GetValueOrDefault("threads", 2), batch = a.GetValueOrDefault("batch", 64), reps = a.GetValueOrDefault("reps", 5);
if (a.ContainsKey("breakdown"))
{
    var breakdown = BreakdownBenchmark.Run(threads, batch, reps);
    foreach (var kv in MachineFields(MachineInfo.Probe())) breakdown[kv.Key] = kv.Value;
    Console.WriteLine(JsonSerializer.Serialize(breakdown));
    return 0;
}
if (a.ContainsKey("speed"))
{
    var speed = SpeedBenchmark.Run(threads, batch, reps, a.GetValueOrDefault("latency-epochs", 0));
    foreach (var kv in MachineFields(MachineInfo.Probe())) speed[kv.Key] = kv.Value;
    Console.WriteLine(JsonSerializer.Serialize(speed));
    return 0;
}
int ablationEpochs = a.GetValueOrDefault("ablation-epochs", 0);
if (ablationEpochs > 0)
{
    var ablation = HeadRankingAblation.Run(ablationEpochs, threads, FindSubset());
    foreach (var kv in MachineFields(MachineInfo.Probe())) ablation[kv.Key] = kv.Value;
    Console.WriteLine(JsonSerializer.Serialize(ablation));
    return 0;
}
if (a.GetValueOrDefault("onnx-accuracy-epochs", 0) > 0)
{
    var accuracy = OnnxBenchmark.Accuracy(FindSubset() ?? throw new DirectoryNotFoundException("the int8 accuracy run needs ../shared/data/cifar-10-subset"),
        a["onnx-accuracy-epochs"], a.GetValueOrDefault("finetune-epochs", 1), a.GetValueOrDefault("max-images", 5085), threads, a.GetValueOrDefault("seed", 1),
        Path.Combine("artifacts", "onnx-accuracy"));
    foreach (var kv in MachineFields(MachineInfo.Probe())) accuracy[kv.Key] = kv.Value;
    Console.WriteLine(JsonSerializer.Serialize(accuracy));
    return 0;
}
if (a.ContainsKey("onnx"))
{
    var onnx = OnnxBenchmark.Run(threads, batch, a.GetValueOrDefault("reps", 30), a.GetValueOrDefault("seed", 0));
    foreach (var kv in MachineFields(MachineInfo.Probe())) onnx[kv.Key] = kv.Value;
    Console.WriteLine(JsonSerializer.Serialize(onnx));
    return 0;
}
int rssEpochs = Math.Max(4, a.GetValueOrDefault("rss-epochs", 6));
torch.set_num_threads(threads);
var machine = MachineInfo.Probe();
Console.WriteLine($"machine: {machine}");
manual_seed(0);
var arch = ViTArchitecture.CifarTiny();
// FLOPs per image that the forward executes: every block in full except the last, which computes only the class token's
// row (VisionTransformerModel.forward). Rates and fractions of GEMM use it; arch.ForwardFlops (all tokens everywhere, the
// timm/fvcore count) is reported as model_forward_flops_per_image and used for compression ratios.
double fwd = arch.ExecutedForwardFlops;

double gemm = Median(reps, () => GemmGflops());
Console.WriteLine($"fp32 GEMM 1024³: {gemm:F1} GFLOP/s");

using var model = new VisionTransformerModel(arch, seed: 0);
var x = randn(batch, 3, 32, 32);
var y = randint(0, 10, batch);
using var opt = optim.AdamW(model.parameters(), 1e-3);
// Fractions of GEMM: every timed round of fp32 training and inference is preceded by its own GEMM measurement, and the
// reported fraction is the median of those per-round ratios (two measurements a second apart). The VM's speed drifts by
// ±5% over minutes, which a ratio of the start-of-run GEMM median to a workload median taken minutes later would carry;
// that unpaired ratio is reported too (*_fraction_of_start_gemm).
var trainFractions = new List<double>();
var inferFractions = new List<double>();
double trainFp32 = TrainRate(model, ComputePrecision.Float32, trainFractions);
// bf16 is timed only where the CPU computes it natively: emulated bf16 is slower than fp32 and tells the user nothing.
double trainBf16 = machine.NativeBf16 ? TrainRate(model, ComputePrecision.BFloat16) : double.NaN;
double infer = InferRate(model, inferFractions);
double trainFraction = MedianOf(trainFractions), inferFraction = MedianOf(inferFractions);
Console.WriteLine($"train fp32 {trainFp32:F1} img/s ({trainFp32 * 3 * fwd / 1e9:F1} GFLOP/s, {trainFraction:P1} of GEMM paired per round, {trainFp32 * 3 * fwd / 1e9 / gemm:P1} of the start GEMM)");
Console.WriteLine(machine.NativeBf16 ? $"train bf16 {trainBf16:F1} img/s ({trainBf16 / trainFp32:F2}× fp32)" : "train bf16: not native on this CPU, not timed");
Console.WriteLine($"infer fp32 {infer:F1} img/s ({infer * fwd / 1e9:F1} GFLOP/s, {inferFraction:P1} of GEMM paired per round, {infer * fwd / 1e9 / gemm:P1} of the start GEMM)");

// Pruned vs dense inference: the reference model structurally pruned (magnitude plan, same projection + surgery as GOHSP).
var prunedRates = new Dictionary<string, object>();
foreach (double sp in new[] { 0.4, 0.5 })
{
    var plan = Microsoft.ML.Gohsp.Pruning.StructuredProjection.Allocate(arch, Microsoft.ML.Gohsp.Pruning.StructuredProjection.Magnitude(model), sp);
    using var pm = Microsoft.ML.Gohsp.Pruning.HardPruning.Prune(model, plan);
    double denseRate = InferRate(model), prunedRate = InferRate(pm);
    string tag = ((int)(sp * 100)).ToString(CultureInfo.InvariantCulture);
    prunedRates[$"pruned{tag}_params_ratio"] = Math.Round((double)pm.Architecture.ParameterCount / arch.ParameterCount, 3);
    prunedRates[$"pruned{tag}_flops_ratio"] = Math.Round((double)pm.Architecture.ForwardFlops / arch.ForwardFlops, 3);
    prunedRates[$"pruned{tag}_infer_speedup"] = Math.Round(prunedRate / denseRate, 3);
    Console.WriteLine($"pruned {sp:P0}: params ×{(double)pm.Architecture.ParameterCount / arch.ParameterCount:F3}, FLOPs ×{(double)pm.Architecture.ForwardFlops / arch.ForwardFlops:F3}, batch inference {prunedRate:F0} vs {denseRate:F0} img/s (×{prunedRate / denseRate:F2})");
}

// Real training-loop throughput (real CIFAR-10 images, augmentation, schedule): epochs 2+ of a short run, fp32 vs bf16.
var data = LoadData(a.GetValueOrDefault("max-images", 1280));
double LoopRate(ComputePrecision p, List<double>? rssOut = null, int epochs = 3)
{
    var rates = new List<double>();
    using var m = new VisionTransformerModel(arch, seed: 1);
    var o = new ViTTrainingOptions
    {
        Epochs = epochs, BatchSize = batch, NumberOfThreads = threads, Device = ViTDevice.Cpu, TrainingPrecision = p, WarmupEpochs = 0.5,
    };
    var loop = new TrainingLoop(o, "bench", null, new SyncProgress(e =>
    {
        if (!e.EpochCompleted) return;
        rates.Add(e.ImagesPerSecond);
        if (rssOut is not null)
        {
            // managed Tensor wrappers are finalisable: collect them so RSS reflects live native memory
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            rssOut.Add(RssMb());
        }
    }));
    loop.Train(m, data);
    return MedianOf(rates.Skip(1).ToList());
}
var rss = new List<double>();
double loopFp32 = LoopRate(ComputePrecision.Float32, rss, rssEpochs);
double loopBf16 = machine.NativeBf16 ? LoopRate(ComputePrecision.BFloat16) : double.NaN;
Console.WriteLine(machine.NativeBf16
    ? $"training loop on real images: fp32 {loopFp32:F1} img/s, bf16 {loopBf16:F1} img/s ({loopBf16 / loopFp32:F2}×)"
    : $"training loop on real images: fp32 {loopFp32:F1} img/s, bf16 not native on this CPU, not timed");
Console.WriteLine($"RSS after each epoch (MB): {string.Join(", ", rss.Select(r => r.ToString("F0")))}");

var result = new Dictionary<string, object>
{
    ["config"] = "embed192-depth6-heads3-mlp768-img32-patch4",
    ["batch"] = batch,
    ["threads"] = threads,
    ["train_images_per_s"] = Math.Round(trainFp32, 1),
    ["infer_images_per_s"] = Math.Round(infer, 1),
    ["train_images_per_s_bf16"] = NativeOr(trainBf16, 1),
    ["gemm_gflops"] = Math.Round(gemm, 1),
    ["forward_flops_per_image"] = arch.ExecutedForwardFlops,
    ["model_forward_flops_per_image"] = arch.ForwardFlops,
    ["train_gflops"] = Math.Round(trainFp32 * 3 * fwd / 1e9, 1),
    ["infer_gflops"] = Math.Round(infer * fwd / 1e9, 1),
    ["train_fraction_of_gemm"] = Math.Round(trainFraction, 3),
    ["infer_fraction_of_gemm"] = Math.Round(inferFraction, 3),
    ["train_fraction_of_gemm_per_round"] = trainFractions.Select(f => Math.Round(f, 3)).ToArray(),
    ["infer_fraction_of_gemm_per_round"] = inferFractions.Select(f => Math.Round(f, 3)).ToArray(),
    ["train_fraction_of_start_gemm"] = Math.Round(trainFp32 * 3 * fwd / 1e9 / gemm, 3),
    ["infer_fraction_of_start_gemm"] = Math.Round(infer * fwd / 1e9 / gemm, 3),
    ["bf16_train_speedup"] = NativeOr(trainBf16 / trainFp32, 3),
    ["loop_train_images_per_s"] = Math.Round(loopFp32, 1),
    ["loop_train_images_per_s_bf16"] = NativeOr(loopBf16, 1),
    ["loop_bf16_speedup"] = NativeOr(loopBf16 / loopFp32, 3),
    ["rss_mb_per_epoch"] = rss.Select(r => Math.Round(r, 1)).ToArray(),
    ["rss_drift_from_epoch2"] = rss.Count >= 2 ? Math.Round((rss[^1] - rss[1]) / rss[1], 4) : 0,
    ["params"] = arch.ParameterCount,
};
foreach (var kv in prunedRates) result[kv.Key] = kv.Value;
foreach (var kv in MachineFields(machine)) result[kv.Key] = kv.Value;
int accuracyEpochs = a.GetValueOrDefault("accuracy-epochs", 0);
if (accuracyEpochs > 0)
{
    foreach (var kv in AccuracyRuns(accuracyEpochs, threads, a.GetValueOrDefault("seed", 1))) result[kv.Key] = kv.Value;
}
Console.WriteLine(JsonSerializer.Serialize(result));
return 0;

// A bf16 figure, or "not native" where the CPU has no AVX512-BF16/AMX and bf16 was not timed.
object NativeOr(double v, int digits) => machine.NativeBf16 ? Math.Round(v, digits) : "not native";

double TrainRate(VisionTransformerModel m, ComputePrecision p, List<double>? fractionsOfGemm = null)
{
    m.Precision = p; m.train();
    void Step()
    {
        using var s = NewDisposeScope();
        opt.zero_grad();
        nn.functional.cross_entropy(m.forward(x), y).backward();
        opt.step();
    }
    for (int i = 0; i < 3; i++) Step();
    double r = TimedRounds(4, Step, 3.0 * m.Architecture.ExecutedForwardFlops, fractionsOfGemm);
    m.Precision = ComputePrecision.Float32;
    return r;
}

double InferRate(VisionTransformerModel m, List<double>? fractionsOfGemm = null)
{
    m.eval();
    using var _ = no_grad();
    for (int i = 0; i < 3; i++) m.forward(x).Dispose();
    return TimedRounds(8, () => m.forward(x).Dispose(), m.Architecture.ExecutedForwardFlops, fractionsOfGemm);
}

// Median images/s of `reps` rounds of `calls` batches. With fractionsOfGemm, each round is preceded by its own GEMM
// measurement and adds its rate (flopsPerImage per image) as a fraction of that GEMM.
double TimedRounds(int calls, Action call, double flopsPerImage, List<double>? fractionsOfGemm) => Median(reps, () =>
{
    double g = fractionsOfGemm is null ? 0 : GemmGflops();
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < calls; i++) call();
    double rate = (double)calls * batch / sw.Elapsed.TotalSeconds;
    fractionsOfGemm?.Add(rate * flopsPerImage / 1e9 / g);
    return rate;
});

static double GemmGflops()
{
    using var s = NewDisposeScope();
    var m = randn(1024, 1024);
    for (int i = 0; i < 3; i++) m.matmul(m).Dispose();
    var sw = Stopwatch.StartNew();
    for (int i = 0; i < 10; i++) m.matmul(m).Dispose();
    return 10 * 2.0 * 1024 * 1024 * 1024 / sw.Elapsed.TotalSeconds / 1e9;
}

// The machine every figure of a run belongs to (MachineInfo): flat JSON fields.
static Dictionary<string, object> MachineFields(MachineInfo m) => new()
{
    ["cpu_model"] = m.CpuModel,
    ["logical_cores"] = m.LogicalCores,
    ["isa_flags"] = m.IsaFlags,
    ["isa_kind"] = m.IsaKind,
    ["avx2"] = m.Avx2,
    ["avx512"] = m.Avx512,
    ["avx512_bf16"] = m.Avx512Bf16,
    ["amx"] = m.Amx,
    ["native_bf16"] = m.NativeBf16,
    ["avx512_vnni"] = m.Avx512Vnni,
    ["avx_vnni"] = m.AvxVnni,
    ["torch_threads"] = m.TorchThreads,
};

static double Median(int n, Func<double> f) => MedianOf(Enumerable.Range(0, n).Select(_ => f()).ToList());

static double MedianOf(IReadOnlyList<double> values)
{
    var v = values.OrderBy(t => t).ToArray();
    return v.Length == 0 ? double.NaN : v[v.Length / 2];
}

static double RssMb()
{
    foreach (var line in File.ReadLines("/proc/self/status"))
        if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
    return Environment.WorkingSet / 1048576.0;
}

static ImageTensorData LoadData(int maxImages)
{
    if (FindSubset() is string p)
    {
        var d = Cifar10.Read(p, Cifar10Split.Train, maxImages);
        return d.ToTensorData();
    }
    var rng = new Random(0);
    var px = new float[maxImages * 3072];
    for (int i = 0; i < px.Length; i++) px[i] = rng.Next(256);
    return new ImageTensorData(px, Enumerable.Range(0, maxImages).Select(i => i % 10).ToArray(), 3, 32);
}

// Test accuracy on the CIFAR-10 subset (5,085 train / 1,017 test): ML.NET's SdcaMaximumEntropy on raw pixels vs the
// dense cifar-tiny ViT trained for the same number of epochs in fp32 and in bf16 mixed precision.
static Dictionary<string, object> AccuracyRuns(int epochs, int threads, int seed)
{
    var dir = FindSubset() ?? throw new DirectoryNotFoundException("accuracy runs need ../shared/data/cifar-10-subset");
    var ml = new Microsoft.ML.MLContext(seed);
    var train = Cifar10.ToDataView(ml, Cifar10.Read(dir, Cifar10Split.Train), Cifar10Columns.Pixels);
    var test = Cifar10.ToDataView(ml, Cifar10.Read(dir, Cifar10Split.Test), Cifar10Columns.Pixels);
    var r = new Dictionary<string, object> { ["accuracy_epochs"] = epochs, ["accuracy_seed"] = seed };

    var sw = Stopwatch.StartNew();
    var sdca = ml.Transforms.Conversion.MapValueToKey("Label")
        .Append(ml.Transforms.NormalizeMinMax("Features", "Pixels"))
        .Append(ml.MulticlassClassification.Trainers.SdcaMaximumEntropy())
        .Fit(train);
    double sdcaAcc = ml.MulticlassClassification.Evaluate(sdca.Transform(test)).MicroAccuracy;
    Console.WriteLine($"SdcaMaximumEntropy on raw pixels: {sdcaAcc:P2} ({sw.Elapsed.TotalSeconds:F0} s)");
    r["sdca_top1"] = Math.Round(sdcaAcc, 4);

    foreach (var p in new[] { ComputePrecision.Float32, ComputePrecision.BFloat16 })
    {
        sw.Restart();
        var o = new Microsoft.ML.Gohsp.ViTClassificationTrainer.Options
        {
            ImageColumnName = "Pixels", ArchitecturePreset = "cifar-tiny", Epochs = epochs, NumberOfThreads = threads,
            Device = ViTDevice.Cpu, Seed = seed, TrainingPrecision = p,
        };
        var vit = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(o))
            .Fit(train);
        double acc = ml.MulticlassClassification.Evaluate(vit.Transform(test)).MicroAccuracy;
        string key = p == ComputePrecision.Float32 ? "vit_top1_fp32" : "vit_top1_bf16";
        Console.WriteLine($"ViT cifar-tiny {p}, {epochs} epochs: {acc:P2} ({sw.Elapsed.TotalSeconds:F0} s)");
        r[key] = Math.Round(acc, 4);
        r[key.Replace("top1", "train_seconds")] = Math.Round(sw.Elapsed.TotalSeconds, 1);
    }
    return r;
}

static string? FindSubset()
{
    for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
    {
        var p = Path.Combine(dir.FullName, "shared", "data", "cifar-10-subset");
        if (Directory.Exists(p)) return p;
    }
    return null;
}

static Dictionary<string, int> ParseArgs(string[] args)
{
    var d = new Dictionary<string, int>();
    for (int i = 0; i < args.Length; i++)
    {
        if (!args[i].StartsWith("--", StringComparison.Ordinal))
            throw new ArgumentException($"Expected '--name integer' pairs or the flags --onnx / --breakdown / --speed, got '{args[i]}'.");
        if (i + 1 < args.Length && int.TryParse(args[i + 1], out int v)) { d[args[i][2..]] = v; i++; }
        else if (args[i] is "--onnx" or "--breakdown" or "--speed") d[args[i][2..]] = 1;
        else throw new ArgumentException($"Expected an integer after '{args[i]}'.");
    }
    return d;
}

sealed class SyncProgress(Action<ViTTrainingProgress> f) : IProgress<ViTTrainingProgress>
{
    public void Report(ViTTrainingProgress value) => f(value);
}
