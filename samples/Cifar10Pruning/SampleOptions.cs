using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Cifar10Pruning;

/// <summary>Command-line flags of the sample, parsed and validated before any data is read or any model is trained.</summary>
internal sealed record SampleOptions
{
    public const string Usage = """
        Cifar10Pruning: train a vision transformer on CIFAR-10 in ML.NET, prune it, compare, save, reload, predict.

        usage: dotnet Cifar10Pruning.dll [flags]        (or ./build.sh sample -- [flags])
          --data PATH          cifar-10-batches-bin folder or cifar-10-binary.tar.gz (env CIFAR10_DATA). Default:
                               ../shared/data/cifar-10-subset when present, else the official archive is downloaded
          --images DIR         train on your own images instead of CIFAR-10: one folder per class of image files
                               (DIR/<class>/*.png|jpg; any size, grayscale/RGBA converted, resized to the preset's
                               image size). DIR/train + DIR/test when both exist, else --test-fraction of each class
                               is held out as the test split
          --test-fraction F    with --images: fraction of each class held out as the test split (seeded by
                               --validation-seed). Default 0.2
          --arch NAME          architecture preset (cifar-micro, cifar-tiny, cifar-tiny-6h, cifar-small; with
                               --images any preset, e.g. vit-tiny at 224×224). Default cifar-tiny
          --epochs N           dense training epochs before pruning. Default 4
          --post-epochs N      epoch budget after the dense model, the same for every method and for the dense
                               reference (which is trained N more epochs). Default 2
          --sparsity S[,S...]  fraction(s) of the parameters to remove, each in (0, 1). Default 0.5 (none when only
                               --target-latency is given)
          --target-latency F[,F...]   prune to F of the dense model's measured batch latency instead (0.5: 2× faster),
                               each in (0, 1); every method spends its own calibrated latency budget, and every entry
                               reports its measured latency next to the target. With --sparsity, both kinds of entries
          --method M           gohsp | sgmp | somp | sgmp-fisher | somp-fisher | somp-taylor, or a comma list;
                               all = gohsp,sgmp,somp; controls = sgmp-fisher,somp-fisher,somp-taylor (SGMP in the Fisher
                               metric, SOMP ranked by the Fisher metric, SOMP ranked by first-order Taylor importance).
                               Default gohsp
          --method-assembly PATH   load PATH, an assembly that registers pruning methods when it loads
                               (PruningMethods.Register in a module initializer, e.g. samples/CustomPruningMethod);
                               --method then also takes their names
          --seed N | --seeds N[,N...]   one or more seeds; each seed is a full run (dense + every method). Default 1
          --out DIR            output folder (models, report.json, report.md, plots). Default out
          --threads N          TorchSharp intra-op threads (0: all cores). Default 0
          --max-train N        use only the first N training images (--images: of the seeded-shuffled files)
          --max-test N         evaluate and time on only the first N test images (quick runs)
          --validation F       fraction of the training images held out (seeded, stratified by class) as the validation
                               split: pruning stages are measured on it (cut shock, per-stage NLL); 0 = none. Default 0.1
          --validation-seed N  seed of that split (the same split for every --seed; with --images also of the test
                               split and of the file order). Default 1
          --head-graph-weight G   GOHSP: exponent of the head graph's importance in each head's score (magnitude ×
                               importance^G); 0 scores heads by magnitude alone. Default 1
          --head-graph-scoring S   GOHSP: rank-within-block (the graph-weighted scores only order each block's heads;
                               magnitudes decide how many) or scaled (they compete as they are). Default rank-within-block
          --sparsity-ramp F    GOHSP: fraction of stage 2 over which ADMM's projection ramps to the target sparsity,
                               in [0, 1). Default 0.5
          --monotone-support [on|off]   GOHSP: each ADMM projection stays inside the previous one's support (as
                               SGMP's masks); bare: on. Default on
          --projection-metric M   GOHSP: metric of ADMM's projection: fisher (structures weighted by the running mean
                               of their squared gradients) or euclidean (magnitude). Default fisher
          --admm-pull P        GOHSP: where ADMM's proximal term pulls W toward Z − U: outside (only the structures
                               outside Z's support; U stays 0 on it) or everywhere (U grows on the support too and
                               steers which structures the next projection keeps). Default outside
          --sgmp-metric M      SGMP: metric of its ranking: euclidean (magnitude: the gradual magnitude baseline) or
                               fisher (GOHSP's projection metric; its entries are named sgmp-fisher). Default euclidean
          --sgmp-ramp F        SGMP and sgmp-fisher: fraction of the gradual phase by which the sparsity ramp ends, in
                               (0, 1]. Default 0.75
          --sgmp-frequency N   SGMP and sgmp-fisher: optimiser steps between pruning steps (0: automatic, at most 10
                               pruning steps). Default 0
          --first-stage-epochs N   GOHSP and SGMP: epochs of --post-epochs before the cut (soft pruning, gradual
                               pruning), from 1 to --post-epochs − 1; the rest fine-tunes. Default ⌊post-epochs / 2⌋
          --carry-moments      GOHSP and SGMP: the fine-tuning after the cut starts from AdamW's moments and step
                               counts at the end of the stage before it, sliced as the weights are, instead of afresh
          --teacher NAME       distil the ViT (dense training and every pruning stage that trains) from a teacher's
                               scores: resnet18 = ML.NET's pretrained ResNet18 featurizer (224×224) + LbfgsMaximumEntropy,
                               fitted on the training images, which it scores once; report.json gets config.teacher
                               (its own test top-1). Default: no teacher
          --teacher-folds K    with --teacher: score each training image with a teacher fitted on the other K − 1 folds
                               (cross-fitted, out-of-fold scores); 1 scores every image with the teacher fitted on all of
                               them. Default 1
          --teacher-cache DIR  with --teacher: where the teacher's scores and figures are stored, keyed by a hash of the
                               teacher, its folds, its packages and the training and test images; a run on the same
                               images reads them instead of fitting again. off: always fit, store nothing. Default
                               ~/.local/share/Microsoft.ML.Gohsp/teacher (%LOCALAPPDATA% on Windows)
          --teacher-weight A   with --teacher: α of α·T²·KL(teacher ‖ student) + (1 − α)·CE(label), in [0, 1]. Default 0.5
          --teacher-temperature T   with --teacher: the temperature T of both distributions, > 0. Default 1
          --distil D           distil every pruning method from the dense model: fine-tune (its fine-tuning) or
                               every-stage (also GOHSP's soft pruning and SGMP's gradual stage), with the library's α
                               and T; off: none. Not with --teacher. Default off
          --precision P        training precision: auto | fp32 | bf16 (auto: bf16 where the CPU has native bf16). Default auto
          --dense-from DIR     start from the dense model and dense reference of an earlier run of one seed (its --out
                               folder: dense.zip, dense-reference.zip, report.json) instead of training them; the run
                               must have trained what this one would (arch, seed, epochs, images, validation split,
                               teacher, precision)
          --results-md PATH    also write the mean ± std table over all seeds as markdown to PATH
          --aggregate DIR      train nothing: aggregate DIR/**/report.json into DIR/results.md (or --results-md)
          --retime DIR         train nothing: time every model of DIR/**/report.json pruned to a latency target again
                               against its run's dense.zip, 15 interleaved rounds instead of 7; writes retimed.json
                               beside each report (--aggregate then adds a table of both figures)
          --baselines DIR      with --aggregate: pair each run with the other methods of the same seed's report under DIR
                               (which must start from the same dense model), e.g. GOHSP rerun with new settings
          --no-speed           skip the speed columns (accuracy comparisons; timings taken beside other work are wrong anyway)
          --plain              plain log lines instead of live progress bars (automatic when output is redirected)
          --help               this text
        """;

    public string? Data { get; init; }
    /// <summary>A folder per class of image files (<c>--images</c>), instead of CIFAR-10.</summary>
    public string? Images { get; init; }
    /// <summary>With <see cref="Images"/>: fraction of each class held out as the test split when DIR has no train/test folders.</summary>
    public double TestFraction { get; init; } = 0.2;
    public string Arch { get; init; } = "cifar-tiny";
    public int Epochs { get; init; } = 4;
    public int PostEpochs { get; init; } = 2;
    public IReadOnlyList<double> Sparsities { get; init; } = [0.5];
    /// <summary>Latency targets as fractions of the dense model's batch latency (<c>--target-latency</c>).</summary>
    public IReadOnlyList<double> TargetLatencies { get; init; } = [];
    /// <summary>The registered methods the run uses (distinct, in the order of <see cref="Variants"/>).</summary>
    public IReadOnlyList<PruningMethodRegistration> Methods => Variants.Select(v => v.Method).Distinct().ToArray();
    /// <summary>The methods and their named variants, in the order they run (<c>--method</c>).</summary>
    public IReadOnlyList<MethodVariant> Variants { get; init; } = [MethodVariant.Gohsp];
    public IReadOnlyList<int> Seeds { get; init; } = [1];
    public string Out { get; init; } = "out";
    public int Threads { get; init; }
    public int? MaxTrain { get; init; }
    public int? MaxTest { get; init; }
    public string Precision { get; init; } = "auto";
    public double Validation { get; init; } = 0.1;
    public int ValidationSeed { get; init; } = 1;
    public string? ResultsMarkdown { get; init; }
    public string? Aggregate { get; init; }
    /// <summary>Stored runs whose latency-target models are timed again (<c>--retime</c>; see <see cref="Cifar10Pruning.Retime"/>).</summary>
    public string? Retime { get; init; }
    /// <summary>With <see cref="Aggregate"/>: stored runs whose other methods each aggregated run is paired with (<c>--baselines</c>).</summary>
    public string? Baselines { get; init; }
    public bool Plain { get; init; }
    public bool NoSpeed { get; init; }
    public bool Help { get; init; }
    /// <summary>GOHSP's <see cref="GohspOptions.HeadGraphWeight"/> (<c>--head-graph-weight</c>); null keeps the default.</summary>
    public double? HeadGraphWeight { get; init; }
    /// <summary>GOHSP's <see cref="GohspOptions.HeadGraphScoring"/> (<c>--head-graph-scoring</c>); null keeps the default.</summary>
    public HeadGraphScoring? HeadGraphScoring { get; init; }
    /// <summary>GOHSP's <see cref="AdmmOptions.SparsityRampFraction"/> (<c>--sparsity-ramp</c>); null keeps the default.</summary>
    public double? SparsityRamp { get; init; }
    /// <summary>GOHSP's <see cref="AdmmOptions.MonotoneSupport"/> (<c>--monotone-support on|off</c>); null keeps the default.</summary>
    public bool? MonotoneSupport { get; init; }
    /// <summary>GOHSP's <see cref="AdmmOptions.Metric"/> (<c>--projection-metric</c>); null keeps the default.</summary>
    public ProjectionMetric? ProjectionMetric { get; init; }
    /// <summary>GOHSP's <see cref="AdmmOptions.PullOutsideSupportOnly"/> (<c>--admm-pull outside|everywhere</c>); null keeps the default.</summary>
    public bool? PullOutsideSupportOnly { get; init; }

    /// <summary>SGMP's <see cref="SgmpOptions.Metric"/> (<c>--sgmp-metric</c>); null keeps the default.</summary>
    public ProjectionMetric? SgmpMetric { get; init; }

    /// <summary>Applies <c>--distil</c> to every method, then the flags of the method <paramref name="options"/> configure (GOHSP's, SGMP's).</summary>
    public PruningOptions ApplyMethodFlags(PruningOptions options)
    {
        options.Distillation = Distil != DenseDistillation.Off;
        options.DistillEveryStage = Distil == DenseDistillation.EveryStage;
        options.CarryOptimizerMoments = CarryMoments;
        return options switch
        {
            GohspOptions g => ApplyGohspFlags(g),
            SgmpOptions s => ApplySgmpFlags(s),
            _ => options,
        };
    }

    /// <summary>Distillation of every pruning method from the dense model (<c>--distil</c>).</summary>
    public DenseDistillation Distil { get; init; }

    /// <summary>Applies the SGMP flags to <paramref name="sgmp"/> (the defaults stay where a flag is absent).</summary>
    public T ApplySgmpFlags<T>(T sgmp) where T : SgmpOptions
    {
        if (SgmpMetric is ProjectionMetric m) sgmp.Metric = m;
        if (SgmpRamp is double r) sgmp.RampFraction = r;
        if (SgmpFrequency is int f) sgmp.PruningFrequency = f;
        return sgmp;
    }

    /// <summary>
    /// The name a variant's entries have in report.json: the variant's, and "sgmp-fisher" for plain SGMP run in the Fisher
    /// metric through <c>--sgmp-metric fisher</c>, which is not the magnitude baseline.
    /// </summary>
    public string EntryName(MethodVariant variant) =>
        variant == MethodVariant.Sgmp && ApplySgmpFlags(new SgmpOptions()).Metric == Microsoft.ML.Gohsp.Pruning.ProjectionMetric.Fisher
            ? MethodVariant.SgmpFisher.Name : variant.Name;

    /// <summary>Every pruning budget of the run: each parameter sparsity, then each latency target.</summary>
    public IReadOnlyList<PruningBudgetSpec> Budgets =>
        [.. Sparsities.Select(PruningBudgetSpec.Parameters), .. TargetLatencies.Select(PruningBudgetSpec.Latency)];

    /// <summary>Applies the GOHSP flags to <paramref name="gohsp"/> (the defaults stay where a flag is absent).</summary>
    public T ApplyGohspFlags<T>(T gohsp) where T : GohspOptions
    {
        if (HeadGraphWeight is double g) gohsp.HeadGraphWeight = g;
        if (HeadGraphScoring is HeadGraphScoring hs) gohsp.HeadGraphScoring = hs;
        if (SparsityRamp is double r) gohsp.Admm.SparsityRampFraction = r;
        if (MonotoneSupport is bool m) gohsp.Admm.MonotoneSupport = m;
        if (ProjectionMetric is ProjectionMetric pm) gohsp.Admm.Metric = pm;
        if (PullOutsideSupportOnly is bool pull) gohsp.Admm.PullOutsideSupportOnly = pull;
        return gohsp;
    }

    /// <summary>The command line, for the reports.</summary>
    public string CommandLine { get; init; } = "";

    /// <summary>The teacher the ViT distils from (<c>--teacher</c>, <see cref="TeacherPipeline"/>); null: none.</summary>
    public string? Teacher { get; init; }

    /// <summary>SGMP's ramp fraction (<c>--sgmp-ramp</c>); null: the library's default.</summary>
    public double? SgmpRamp { get; init; }

    /// <summary>SGMP's pruning frequency in optimiser steps (<c>--sgmp-frequency</c>); null: the library's default.</summary>
    public int? SgmpFrequency { get; init; }

    /// <summary>Carry AdamW's state across the cut (<c>--carry-moments</c>, <see cref="PruningOptions.CarryOptimizerMoments"/>).</summary>
    public bool CarryMoments { get; init; }

    /// <summary>GOHSP's and SGMP's epochs before the cut (<c>--first-stage-epochs</c>); null: the protocol's ⌊post-epochs / 2⌋.</summary>
    public int? FirstStageEpochs { get; init; }

    /// <summary>An earlier run's output folder whose dense model and dense reference this run starts from (<c>--dense-from</c>).</summary>
    public string? DenseFrom { get; init; }

    /// <summary>Folds of the teacher's cross-fitted training scores (<c>--teacher-folds</c>); 1: in-sample scores.</summary>
    public int TeacherFolds { get; init; } = 1;

    /// <summary>Where the teacher's results are cached (<c>--teacher-cache</c>, <see cref="Cifar10Pruning.TeacherCache"/>); null: not cached.</summary>
    public string? TeacherCache { get; init; } = Cifar10Pruning.TeacherCache.DefaultDirectory;

    /// <summary>α of the teacher's term (<c>--teacher-weight</c>); null: the library's default.</summary>
    public double? TeacherWeight { get; init; }

    /// <summary>The distillation temperature (<c>--teacher-temperature</c>); null: the library's default.</summary>
    public double? TeacherTemperature { get; init; }

    /// <summary>Sets <c>--teacher-weight</c> and <c>--teacher-temperature</c>, where given, on a training recipe.</summary>
    public ViTTrainingOptions ApplyTeacherFlags(ViTTrainingOptions o)
    {
        if (TeacherWeight is double a) o.TeacherWeight = a;
        if (TeacherTemperature is double t) o.TeacherTemperature = t;
        return o;
    }

    private static double ParseRamp(string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double r) && r > 0 && r <= 1 ? r
        : throw new ArgumentException($"Option '--sgmp-ramp': '{v}' is not a fraction in (0, 1].");

    private static double ParseTeacherWeight(string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double a) && a >= 0 && a <= 1 ? a
        : throw new ArgumentException($"Option '--teacher-weight': '{v}' is not a weight in [0, 1].");

    private static double ParseTeacherTemperature(string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double t) && t > 0 && double.IsFinite(t) ? t
        : throw new ArgumentException($"Option '--teacher-temperature': '{v}' is not a positive number.");

    private static string ParseTeacher(string v) => TeacherPipeline.Names.FirstOrDefault(n => string.Equals(n, v, StringComparison.OrdinalIgnoreCase))
        ?? throw new ArgumentException($"Option '--teacher': unknown teacher '{v}'. Known: {string.Join(", ", TeacherPipeline.Names)}.");

    private static readonly string[] ValueFlags =
        ["data", "images", "test-fraction", "arch", "epochs", "post-epochs", "sparsity", "target-latency", "method", "method-assembly", "seed", "seeds", "out", "threads", "max-train", "max-test", "precision",
         "validation", "validation-seed", "results-md", "aggregate", "retime", "baselines", "head-graph-weight", "head-graph-scoring", "sparsity-ramp", "monotone-support",
         "projection-metric", "sgmp-metric", "teacher", "teacher-weight", "teacher-temperature", "teacher-folds", "teacher-cache",
         "sgmp-ramp", "sgmp-frequency", "dense-from", "distil", "admm-pull", "first-stage-epochs"];
    private static readonly string[] SwitchFlags = ["plain", "no-speed", "help", "carry-moments"];
    private static readonly string[] GohspFlags = ["head-graph-weight", "head-graph-scoring", "sparsity-ramp", "monotone-support", "projection-metric", "admm-pull"];
    private static readonly string[] SgmpFlags = ["sgmp-ramp", "sgmp-frequency"];
    private static readonly string[] BeforeCutFlags = ["first-stage-epochs", "carry-moments"];
    private static readonly string[] TeacherFlags = ["teacher-weight", "teacher-temperature", "teacher-folds", "teacher-cache"];

    /// <summary>Parses the flags; every problem is an <see cref="ArgumentException"/> with a one-line message naming the flag.</summary>
    public static SampleOptions Parse(string[] args)
    {
        var values = new Dictionary<string, string>();
        var switches = new HashSet<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string a = args[i];
            if (a is "-h" or "/?") { switches.Add("help"); continue; }
            if (!a.StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"Unexpected argument '{a}' (flags start with --; see --help).");
            string key = a[2..];
            if (SwitchFlags.Contains(key)) { switches.Add(key); continue; }
            if (key == "monotone-support" && (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal)))
            {
                // a bare --monotone-support means on
                if (!values.TryAdd(key, "on")) throw new ArgumentException($"Option '--{key}' is given twice.");
                continue;
            }
            if (!ValueFlags.Contains(key)) throw new ArgumentException($"Unknown option '--{key}'. Known: {string.Join(", ", ValueFlags.Concat(SwitchFlags).Select(k => "--" + k))}.");
            if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"Option '--{key}' needs a value.");
            if (!values.TryAdd(key, args[++i])) throw new ArgumentException($"Option '--{key}' is given twice.");
        }
        if (values.ContainsKey("seed") && values.ContainsKey("seeds")) throw new ArgumentException("Give either --seed or --seeds, not both.");
        if (values.ContainsKey("images") && values.ContainsKey("data"))
            throw new ArgumentException("Option '--images': give either --data (CIFAR-10) or --images (a folder of image files), not both.");
        if (values.ContainsKey("test-fraction") && !values.ContainsKey("images"))
            throw new ArgumentException("Option '--test-fraction' applies to --images only (CIFAR-10 has its own test batch).");

        // methods registered by another assembly are known before --method is read
        if (values.TryGetValue("method-assembly", out var methodAssembly)) LoadMethodAssembly(methodAssembly);
        var o = new SampleOptions
        {
            Data = values.ContainsKey("images") ? null : values.GetValueOrDefault("data") ?? Environment.GetEnvironmentVariable("CIFAR10_DATA"),
            Images = values.GetValueOrDefault("images"),
            TestFraction = values.TryGetValue("test-fraction", out var tf) ? ParseTestFraction(tf) : 0.2,
            Arch = values.GetValueOrDefault("arch") ?? "cifar-tiny",
            Epochs = Int(values, "epochs", 4, min: 1),
            PostEpochs = Int(values, "post-epochs", 2, min: 1),
            Sparsities = values.TryGetValue("sparsity", out var sp) ? List(sp, "sparsity", ParseSparsity)
                       : values.ContainsKey("target-latency") ? [] : [0.5],
            TargetLatencies = values.TryGetValue("target-latency", out var tl) ? List(tl, "target-latency", ParseLatency) : [],
            Variants = values.TryGetValue("method", out var m) ? ParseMethods(m) : [MethodVariant.Gohsp],
            Seeds = values.TryGetValue("seeds", out var ss) ? List(ss, "seeds", ParseSeed)
                  : values.TryGetValue("seed", out var s1) ? [ParseSeed(s1, "seed")] : [1],
            Out = values.GetValueOrDefault("out") ?? "out",
            Threads = Int(values, "threads", 0, min: 0),
            MaxTrain = values.ContainsKey("max-train") ? Int(values, "max-train", 0, min: 1) : null,
            MaxTest = values.ContainsKey("max-test") ? Int(values, "max-test", 0, min: 1) : null,
            Precision = ParsePrecision(values.GetValueOrDefault("precision") ?? "auto"),
            Validation = values.TryGetValue("validation", out var vf) ? ParseValidation(vf) : 0.1,
            ValidationSeed = values.TryGetValue("validation-seed", out var vs) ? ParseSeed(vs, "validation-seed") : 1,
            ResultsMarkdown = values.GetValueOrDefault("results-md"),
            Aggregate = values.GetValueOrDefault("aggregate"),
            Retime = values.GetValueOrDefault("retime"),
            Baselines = values.GetValueOrDefault("baselines"),
            Plain = switches.Contains("plain"),
            NoSpeed = switches.Contains("no-speed"),
            CarryMoments = switches.Contains("carry-moments"),
            Help = switches.Contains("help"),
            HeadGraphWeight = values.TryGetValue("head-graph-weight", out var hg) ? ParseNumber(hg, "head-graph-weight", 0, double.PositiveInfinity) : null,
            HeadGraphScoring = values.TryGetValue("head-graph-scoring", out var hs) ? ParseChoice(hs, "head-graph-scoring", HeadGraphScoringNames) : null,
            SparsityRamp = values.TryGetValue("sparsity-ramp", out var sr) ? ParseNumber(sr, "sparsity-ramp", 0, 1) : null,
            MonotoneSupport = values.TryGetValue("monotone-support", out var ms) ? ParseChoice(ms, "monotone-support", OnOffNames) : null,
            ProjectionMetric = values.TryGetValue("projection-metric", out var pm) ? ParseChoice(pm, "projection-metric", ProjectionMetricNames) : null,
            PullOutsideSupportOnly = values.TryGetValue("admm-pull", out var ap) ? ParseChoice(ap, "admm-pull", AdmmPullNames) : null,
            SgmpMetric = values.TryGetValue("sgmp-metric", out var sm) ? ParseChoice(sm, "sgmp-metric", ProjectionMetricNames) : null,
            Teacher = values.TryGetValue("teacher", out var teacher) ? ParseTeacher(teacher) : null,
            SgmpRamp = values.TryGetValue("sgmp-ramp", out var sgr) ? ParseRamp(sgr) : null,
            SgmpFrequency = values.ContainsKey("sgmp-frequency") ? Int(values, "sgmp-frequency", 0, min: 0) : null,
            FirstStageEpochs = values.ContainsKey("first-stage-epochs") ? Int(values, "first-stage-epochs", 0, min: 1) : null,
            DenseFrom = values.GetValueOrDefault("dense-from"),
            Distil = values.TryGetValue("distil", out var di) ? ParseChoice(di, "distil", DistilNames) : DenseDistillation.Off,
            TeacherFolds = Int(values, "teacher-folds", 1, min: 1),
            TeacherCache = values.TryGetValue("teacher-cache", out var tc) ? (tc == "off" ? null : tc) : Cifar10Pruning.TeacherCache.DefaultDirectory,
            TeacherWeight = values.TryGetValue("teacher-weight", out var tw) ? ParseTeacherWeight(tw) : null,
            TeacherTemperature = values.TryGetValue("teacher-temperature", out var tt) ? ParseTeacherTemperature(tt) : null,
            CommandLine = string.Join(" ", args.Select(Quote)),
        };
        string methods = string.Join(",", o.Variants.Select(v => v.Name));
        if (o.Methods.Where(m => m.MinimumTrainingEpochs > o.PostEpochs).ToArray() is { Length: > 0 } tooFew)
            throw new ArgumentException($"Option '--post-epochs': {string.Join(" and ", tooFew.Select(m => m.Label))} need at least {tooFew.Max(m => m.MinimumTrainingEpochs)} epochs after the dense model (one per training stage), got {o.PostEpochs}.");
        if (o.FirstStageEpochs is int fse && fse >= o.PostEpochs)
            throw new ArgumentException($"Option '--first-stage-epochs': {fse} leaves none of the {o.PostEpochs} post-dense epochs (--post-epochs) for the fine-tuning after the cut; give 1 to {o.PostEpochs - 1}.");
        if (TeacherFlags.FirstOrDefault(values.ContainsKey) is string teacherFlag && o.Teacher is null)
            throw new ArgumentException($"Option '--{teacherFlag}' sets how the ViT distils from a teacher, but no --teacher is given.");
        if (o.Distil != DenseDistillation.Off && o.Teacher is not null)
            throw new ArgumentException("Option '--distil' distils from the dense model, and --teacher gives another teacher: choose one.");
        if (o.Retime is not null && (o.Aggregate is not null || o.DenseFrom is not null))
            throw new ArgumentException($"Option '--retime' times stored models and trains nothing; it does not combine with --{(o.Aggregate is not null ? "aggregate" : "dense-from")}.");
        if (o.Baselines is not null && o.Aggregate is null) throw new ArgumentException("Option '--baselines' applies to --aggregate only (it pairs stored runs).");
        if (GohspFlags.FirstOrDefault(values.ContainsKey) is string gohspFlag && !o.Methods.Contains(PruningMethods.Gohsp))
            throw new ArgumentException($"Option '--{gohspFlag}' sets a GOHSP option, but --method {methods} runs no GOHSP.");
        if (SgmpFlags.FirstOrDefault(values.ContainsKey) is string sgmpFlag && !o.Methods.Contains(PruningMethods.Sgmp))
            throw new ArgumentException($"Option '--{sgmpFlag}' sets an SGMP option, but --method {methods} runs no SGMP.");
        if (BeforeCutFlags.FirstOrDefault(f => values.ContainsKey(f) || switches.Contains(f)) is string cutFlag && o.Methods.All(m => m.MinimumTrainingEpochs < 2))
            throw new ArgumentException($"Option '--{cutFlag}' sets the training stage before the cut, but --method {methods} runs no method with one (GOHSP, SGMP).");
        if (o.DenseFrom is { } denseFrom)
        {
            if (o.Aggregate is not null) throw new ArgumentException("Option '--dense-from' trains; --aggregate trains nothing.");
            if (o.Seeds.Count != 1) throw new ArgumentException($"Option '--dense-from' starts one seed's run from an earlier one; got {o.Seeds.Count} seeds.");
            if (!Directory.Exists(denseFrom)) throw new ArgumentException($"Option '--dense-from': folder '{denseFrom}' does not exist.");
        }
        if (values.ContainsKey("sgmp-metric") && !o.Variants.Contains(MethodVariant.Sgmp))
            throw new ArgumentException($"Option '--sgmp-metric' sets an SGMP option, but --method {methods} runs no SGMP (sgmp-fisher names its metric itself).");
        if (!ViTArchitecture.PresetNames.Contains(o.Arch, StringComparer.OrdinalIgnoreCase))
            throw new ArgumentException($"Option '--arch': unknown preset '{o.Arch}'. Known: {string.Join(", ", ViTArchitecture.PresetNames)}.");
        if (o.Images is null && ViTArchitecture.FromPreset(o.Arch, 10).ImageSize is int size && size != 32)
            throw new ArgumentException($"Option '--arch': preset '{o.Arch}' is for {size}×{size} images; CIFAR-10 is 32×32 (use cifar-micro, cifar-tiny, cifar-tiny-6h or cifar-small).");
        return o;
    }

    /// <summary>
    /// The training precision: fp32, bf16, or for "auto" bf16 where the CPU computes bf16 natively (AVX512-BF16 or AMX;
    /// measured 1.7–2× faster than fp32 at equal accuracy, docs/benchmarks.md) and fp32 elsewhere (emulated bf16 is slow).
    /// </summary>
    public ComputePrecision ResolvePrecision() => Precision switch
    {
        "fp32" => ComputePrecision.Float32,
        "bf16" => ComputePrecision.BFloat16,
        _ => HasNativeBf16() ? ComputePrecision.BFloat16 : ComputePrecision.Float32,
    };

    private static bool HasNativeBf16() => Microsoft.ML.Gohsp.Diagnostics.MachineInfo.Probe().NativeBf16;

    private static double ParseLatency(string v, string flag) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && f > 0 && f < 1 ? f
        : throw new ArgumentException($"Option '--{flag}': '{v}' is not a fraction in (0, 1) of the dense model's latency (e.g. 0.5 asks for 2× faster).");

    private static double ParseSparsity(string v, string flag) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double s) && s > 0 && s < 1 ? s
        : throw new ArgumentException($"Option '--{flag}': '{v}' is not a fraction in (0, 1) (e.g. 0.4 removes 40% of the parameters).");

    /// <summary>A number in [min, max).</summary>
    private static double ParseNumber(string v, string flag, double min, double max) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && f >= min && f < max ? f
        : throw new ArgumentException($"Option '--{flag}': '{v}' is not a number in [{min.ToString(CultureInfo.InvariantCulture)}, " +
            $"{(double.IsPositiveInfinity(max) ? "∞" : max.ToString(CultureInfo.InvariantCulture))}).");

    /// <summary>The names of <c>--distil</c>'s values.</summary>
    public static readonly IReadOnlyDictionary<string, DenseDistillation> DistilNames = new Dictionary<string, DenseDistillation>
    {
        ["off"] = DenseDistillation.Off,
        ["fine-tune"] = DenseDistillation.FineTune,
        ["every-stage"] = DenseDistillation.EveryStage,
    };

    private static readonly IReadOnlyDictionary<string, bool> OnOffNames = new Dictionary<string, bool> { ["on"] = true, ["off"] = false };

    /// <summary>The <c>--admm-pull</c> values (<see cref="AdmmOptions.PullOutsideSupportOnly"/>), as report.json also names them.</summary>
    public static readonly IReadOnlyDictionary<string, bool> AdmmPullNames = new Dictionary<string, bool> { ["outside"] = true, ["everywhere"] = false };

    /// <summary>The <c>--head-graph-scoring</c> values, as report.json also names them.</summary>
    public static readonly IReadOnlyDictionary<string, HeadGraphScoring> HeadGraphScoringNames = new Dictionary<string, HeadGraphScoring>
    {
        ["scaled"] = Microsoft.ML.Gohsp.Pruning.HeadGraphScoring.Scaled,
        ["rank-within-block"] = Microsoft.ML.Gohsp.Pruning.HeadGraphScoring.RankWithinBlock,
    };

    /// <summary>The <c>--projection-metric</c> and <c>--sgmp-metric</c> values, as report.json also names them.</summary>
    public static readonly IReadOnlyDictionary<string, ProjectionMetric> ProjectionMetricNames = new Dictionary<string, ProjectionMetric>
    {
        ["euclidean"] = Microsoft.ML.Gohsp.Pruning.ProjectionMetric.Euclidean,
        ["fisher"] = Microsoft.ML.Gohsp.Pruning.ProjectionMetric.Fisher,
    };

    /// <summary>The value <paramref name="names"/> gives <paramref name="v"/> (case-insensitive); the error lists the known names.</summary>
    private static T ParseChoice<T>(string v, string flag, IReadOnlyDictionary<string, T> names) =>
        names.TryGetValue(v.ToLowerInvariant(), out var value) ? value
        : throw new ArgumentException($"Option '--{flag}': unknown value '{v}'. Known: {string.Join(", ", names.Keys)}.");

    /// <summary>The name <paramref name="names"/> gives <paramref name="value"/>, as report.json records it.</summary>
    public static string NameOf<T>(IReadOnlyDictionary<string, T> names, T value) =>
        names.Single(n => EqualityComparer<T>.Default.Equals(n.Value, value)).Key;

    private static double ParseValidation(string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && f >= 0 && f < 1 ? f
        : throw new ArgumentException($"Option '--validation': '{v}' is not a fraction in [0, 1) (0 holds out nothing).");

    private static double ParseTestFraction(string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double f) && f > 0 && f < 1 ? f
        : throw new ArgumentException($"Option '--test-fraction': '{v}' is not a fraction in (0, 1).");

    private static int ParseSeed(string v, string flag) =>
        int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int s) ? s
        : throw new ArgumentException($"Option '--{flag}' expects integers, got '{v}'.");

    private static IReadOnlyList<MethodVariant> ParseMethods(string v)
    {
        var names = List(v, "method", (s, flag) => s.ToLowerInvariant() is var n && (MethodVariant.Groups.ContainsKey(n) || MethodVariant.ByName(n) is not null) ? n
            : throw new ArgumentException($"Option '--{flag}': unknown method '{s}'. Known: {string.Join(", ", MethodVariant.All.Select(a => a.Name).Concat(MethodVariant.Groups.Keys))}."));
        return names.SelectMany(n => MethodVariant.Groups.TryGetValue(n, out var group) ? group : [MethodVariant.ByName(n)!]).Distinct().ToArray();
    }

    /// <summary>Loads an assembly and runs its module initializer, where it registers its pruning methods.</summary>
    private static void LoadMethodAssembly(string path)
    {
        Assembly assembly;
        try { assembly = Assembly.LoadFrom(Path.GetFullPath(path)); }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new ArgumentException($"Option '--method-assembly': cannot load '{path}' as a .NET assembly ({e.Message}).");
        }
        RuntimeHelpers.RunModuleConstructor(assembly.ManifestModule.ModuleHandle);
    }

    private static string ParsePrecision(string v) => v.ToLowerInvariant() is "auto" or "fp32" or "bf16"
        ? v.ToLowerInvariant()
        : throw new ArgumentException($"Option '--precision': unknown value '{v}'. Known: auto, fp32, bf16.");

    private static IReadOnlyList<T> List<T>(string v, string flag, Func<string, string, T> parse)
    {
        var items = v.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(s => parse(s, flag)).Distinct().ToArray();
        return items.Length > 0 ? items : throw new ArgumentException($"Option '--{flag}' needs at least one value.");
    }

    private static int Int(Dictionary<string, string> d, string key, int dflt, int min) =>
        !d.TryGetValue(key, out var v) ? dflt
        : int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int x) && x >= min ? x
        : throw new ArgumentException($"Option '--{key}' expects an integer ≥ {min}, got '{v}'.");

    private static string Quote(string a) => a.Length > 0 && a.All(c => char.IsLetterOrDigit(c) || "-_./,=:+".Contains(c)) ? a : $"'{a}'";
}

/// <summary>Where the pruning methods distil from the dense model (<c>--distil</c>).</summary>
internal enum DenseDistillation
{
    /// <summary>Nowhere (the default).</summary>
    Off = 0,
    /// <summary>In fine-tuning (<see cref="PruningOptions.Distillation"/>).</summary>
    FineTune = 1,
    /// <summary>In every training stage (<see cref="PruningOptions.DistillEveryStage"/>).</summary>
    EveryStage = 2,
}
