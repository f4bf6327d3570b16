using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Platform;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Cifar10Pruning;

/// <summary>
/// One seed of the comparison, all through the public ML.NET API: train the dense ViT, continue a copy as the dense
/// reference, prune the dense model with each method and sparsity, then save every model, load it back in a fresh
/// <see cref="MLContext"/>, evaluate it and time it.
/// </summary>
internal sealed class ComparisonRun(SampleOptions options, ConsoleUi ui, ImageSet trainSet, ValidationSplit? validationSplit, ImageSet testSet, string data, string testSplit)
{
    private readonly ComputePrecision _precision = options.ResolvePrecision();

    public SampleReport Run(int seed, string outDir)
    {
        Directory.CreateDirectory(outDir);
        var ml = new MLContext(seed);
        var train = trainSet.ToDataView(ml);

        // Data preparation shared by every model: a key-typed label, and planar pixels (what a ViT that can be saved trains on).
        var prep = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Fit(train);
        var prepared = prep.Transform(train);
        // --teacher: fitted on the training images, which it scores once; the scores travel with them as a column.
        TeacherSummary? teacher = null;
        if (options.Teacher is { } teacherName)
        {
            (teacher, prepared) = TeacherPipeline.Fit(ml, teacherName, options.TeacherFolds, trainSet, testSet, prep, ui, options.TeacherCache);
            var distil = options.ApplyTeacherFlags(new ViTTrainingOptions());
            teacher = teacher with { Weight = distil.TeacherWeight, Temperature = distil.TeacherTemperature };
        }
        var validation = validationSplit is null ? null : prep.Transform(validationSplit.Images.ToDataView(ml));
        _validation = validationSplit is null ? null
            : (validationSplit.Images.ToTensorData(), ModelClassIndices(prepared.Schema["Label"], validationSplit.Images));

        // 1. The dense model every method starts from: E epochs (or an earlier run's, --dense-from).
        var sw = Stopwatch.StartNew();
        var stored = options.DenseFrom is { } from ? LoadStoredDense(ml, from, seed, teacher) : null;
        var dense = stored?.Dense ?? ui.Train($"Dense {options.Arch}, {Text.Count(options.Epochs, "epoch")} on {trainSet.Count:N0} images (seed {seed}, {PrecisionName})",
            p => ml.MulticlassClassification.Trainers.ViTClassification(TrainerOptions(seed, options.Epochs, p)).Fit(prepared));
        double denseSeconds = stored?.Report.Config.DenseSeconds ?? sw.Elapsed.TotalSeconds;
        var post = ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(dense.Transform(prepared));
        ITransformer Full(ITransformer predictor) => prep.Append(predictor).Append(post);

        var models = new List<(ModelEntry Template, MulticlassPredictionTransformer<ViTModelParameters> Predictor)>();
        string denseZip = Path.Combine(outDir, "dense.zip");
        ml.Model.SaveAtomically(Full(dense), train.Schema, denseZip);
        double denseStartTop1 = ml.MulticlassClassification.Evaluate(Full(dense).Transform(testSet.ToDataView(ml))).MicroAccuracy;
        var denseValidation = Validate(dense.Model);
        string validationText = denseValidation is { } v ? Text.Invariant($" (validation {v.Top1:P2}, NLL {v.Nll:F4})") : "";
        ui.Line(Text.Invariant($"Dense model: {dense.Model.ParameterCount:N0} parameters, {dense.Model.ForwardFlops / 1e6:F1} MFLOPs/image, top-1 {denseStartTop1:P2}{validationText}; saved {denseZip}"));

        // 2. The dense reference: the same model trained P more epochs, the budget every pruning method gets after it.
        sw.Restart();
        var reference = stored?.Reference ?? ui.Train($"Dense reference: {Text.Count(options.PostEpochs, "more epoch")}",
            p => ml.MulticlassClassification.Trainers.ViTClassification(ReferenceOptions(seed, p)).Fit(prepared, dense.Model));
        models.Add((Template("dense", PruningBudgetSpec.Parameters(0), seed, $"continued training {options.PostEpochs}",
            stored?.Report.Dense.TrainSeconds ?? sw.Elapsed.TotalSeconds, "dense-reference.zip"), reference));

        // 3. Every method prunes the same dense model to every budget (a parameter sparsity or a latency target).
        foreach (var variant in options.Variants)
            foreach (var budget in options.Budgets)
            {
                string entry = options.EntryName(variant);
                string name = $"{entry}-{budget.Suffix}";
                sw.Restart();
                var (pruned, split) = ui.Train($"{variant.Label} {budget.Describe}, {Text.Count(options.PostEpochs, "epoch")}",
                    p => Prune(ml, variant, budget, seed, dense, prepared, validation, p));
                models.Add((Template(entry, budget, seed, split, sw.Elapsed.TotalSeconds, name + ".zip"), pruned));
            }

        // 4. Save, reload in a fresh MLContext, evaluate, time.
        var testTensor = testSet.ToTensorData();
        // The models' class indices are the Label key's order (MapValueToKey: order of first appearance), not CIFAR's.
        var testLabels = ModelClassIndices(prepared.Schema["Label"], testSet);
        TorchDevices.ApplyThreads(options.Threads);
        var denseLogProbabilities = LogProbabilities(dense.Model, testTensor);
        var entries = new List<ModelEntry>();
        foreach (var (template, predictor) in models)
        {
            string zip = Path.Combine(outDir, template.Model);
            ml.Model.SaveAtomically(Full(predictor), train.Schema, zip);
            entries.Add(Measure(template, zip, predictor.Model.PruningReport, testTensor, testLabels, denseLogProbabilities, dense.Model,
                showPredictions: template == models[^1].Template));
        }

        return new SampleReport
        {
            Config = new RunConfig
            {
                Command = "Cifar10Pruning " + options.CommandLine,
                Data = data,
                Classes = trainSet.ClassNames.Count,
                TestSplit = testSplit,
                Arch = options.Arch,
                TrainImages = trainSet.Count,
                TestImages = testSet.Count,
                DenseEpochs = options.Epochs,
                PostEpochs = options.PostEpochs,
                Precision = PrecisionName,
                Threads = TorchSharp.torch.get_num_threads(),
                Seed = seed,
                DenseStartTop1 = denseStartTop1,
                DenseStartValidationTop1 = denseValidation?.Top1,
                DenseStartValidationNll = denseValidation?.Nll,
                DenseSeconds = denseSeconds,
                Date = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", System.Globalization.CultureInfo.InvariantCulture),
                Machine = $"{Environment.ProcessorCount} logical CPUs, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
                MachineInfo = Microsoft.ML.Gohsp.Diagnostics.MachineInfo.Probe(),
                SpeedMethod = options.NoSpeed ? "not measured (--no-speed)" : SampleReport.SpeedNotes,
                ValidationImages = validationSplit?.Images.Count ?? 0,
                ValidationFraction = validationSplit?.Fraction ?? 0,
                ValidationSeed = validationSplit?.Seed,
                ValidationIndicesSha256 = validationSplit?.IndicesHash,
                Teacher = teacher,
                Gohsp = options.Methods.Contains(PruningMethods.Gohsp) ? GohspSettings.Of(options.ApplyGohspFlags(new GohspOptions())) : null,
                Sgmp = options.Methods.Contains(PruningMethods.Sgmp) ? SgmpSettings.Of(options.ApplySgmpFlags(new SgmpOptions())) : null,
                DenseFrom = options.DenseFrom is { } denseFrom ? Path.GetFullPath(denseFrom) : null,
                Distil = options.Distil == DenseDistillation.Off ? null : SampleOptions.NameOf(SampleOptions.DistilNames, options.Distil),
            },
            Dense = entries[0],
            Entries = entries.Skip(1).ToArray(),
        };
    }

    /// <summary>
    /// The dense model and dense reference of the earlier run in <paramref name="dir"/> (<c>--dense-from</c>), after checking
    /// from its report.json that it trained what this run would: the same preset, seed, epochs, training images, validation
    /// split, teacher and precision.
    /// </summary>
    private StoredDense LoadStoredDense(MLContext ml, string dir, int seed, TeacherSummary? teacher)
    {
        string reportPath = Path.Combine(dir, "report.json");
        if (!File.Exists(reportPath))
            throw new ArgumentException($"Option '--dense-from': '{dir}' has no report.json (give the --out folder of an earlier run of one seed).");
        var stored = SampleReport.ReadJson(reportPath);
        var c = stored.Config;
        string? difference =
            !string.Equals(c.Arch, options.Arch, StringComparison.OrdinalIgnoreCase) ? $"arch {c.Arch}, this run {options.Arch}"
            : c.Seed != seed ? $"seed {c.Seed}, this run {seed}"
            : (c.DenseEpochs, c.PostEpochs) != (options.Epochs, options.PostEpochs) ? $"{c.DenseEpochs}+{c.PostEpochs} epochs, this run {options.Epochs}+{options.PostEpochs}"
            : c.TrainImages != trainSet.Count ? $"{c.TrainImages} training images, this run {trainSet.Count}"
            : c.ValidationIndicesSha256 != validationSplit?.IndicesHash ? "another validation split"
            : (c.Teacher?.Name, c.Teacher?.Weight, c.Teacher?.Temperature, c.Teacher?.Folds) != (teacher?.Name, teacher?.Weight, teacher?.Temperature, teacher?.Folds) ? "another teacher, or none"
            : c.Precision != PrecisionName ? $"precision {c.Precision}, this run {PrecisionName}"
            : null;
        if (difference is not null)
            throw new ArgumentException($"Option '--dense-from': the run in '{dir}' trained another dense model ({difference}).");
        MulticlassPredictionTransformer<ViTModelParameters> Vit(string file)
        {
            string zip = Path.Combine(dir, file);
            if (!File.Exists(zip)) throw new ArgumentException($"Option '--dense-from': '{zip}' does not exist.");
            return ViTOf(ml.Model.Load(zip, out _));
        }
        ui.Line($"Dense model and dense reference from {dir} (seed {seed}; not retrained).");
        return new StoredDense(Vit("dense.zip"), Vit(stored.Dense.Model), stored);
    }

    /// <summary>The ViT of a saved sample model: its pipeline holds exactly one ViT prediction transformer.</summary>
    internal static MulticlassPredictionTransformer<ViTModelParameters> ViTOf(ITransformer model) =>
        ((IEnumerable<ITransformer>)model).OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single();

    /// <summary>An earlier run's dense model, dense reference and report (<c>--dense-from</c>).</summary>
    private sealed record StoredDense(MulticlassPredictionTransformer<ViTModelParameters> Dense,
        MulticlassPredictionTransformer<ViTModelParameters> Reference, SampleReport Report);

    /// <summary>The validation images and their classes as the models' output indices (null without a validation split).</summary>
    private (ImageTensorData Images, int[] Labels)? _validation;

    /// <summary>Top-1 and NLL of <paramref name="model"/> on the validation split; null without one.</summary>
    private FidelityMetrics? Validate(ViTModelParameters model)
    {
        if (_validation is not { } v) return null;
        var logProbabilities = LogProbabilities(model, v.Images);
        return Fidelity.Compute(logProbabilities, [], v.Labels, model.Architecture.NumClasses);
    }

    private string PrecisionName => _precision == ComputePrecision.BFloat16 ? "bf16" : "fp32";

    private ViTClassificationTrainer.Options TrainerOptions(int seed, int epochs, IProgress<ViTTrainingProgress>? progress)
    {
        var o = new ViTClassificationTrainer.Options
        {
            ArchitecturePreset = options.Arch,
            ImageColumnName = "Pixels",
            Epochs = epochs,
            Seed = seed,
            NumberOfThreads = options.Threads,
            TrainingPrecision = _precision,
            Progress = progress,
            TeacherScoreColumnName = TeacherColumn,
        };
        options.ApplyTeacherFlags(o);
        return o;
    }

    private string? TeacherColumn => options.Teacher is null ? null : TeacherPipeline.ScoreColumn;

    /// <summary>
    /// The training recipe of every epoch after the dense model — the library's fine-tuning defaults (AdamW, lr 5e-4, one
    /// warm-up epoch, cosine decay) with this run's seed, threads and precision. PruningProtocol splits it into each method's
    /// stages; the dense reference trains with it unchanged.
    /// </summary>
    private ViTTrainingOptions PostDenseRecipe(int seed)
    {
        var o = new SompOptions().FineTune;
        o.Seed = seed;
        o.NumberOfThreads = options.Threads;
        o.TrainingPrecision = _precision;
        return options.ApplyTeacherFlags(o);
    }

    private ViTClassificationTrainer.Options ReferenceOptions(int seed, IProgress<ViTTrainingProgress> progress)
    {
        var o = TrainerOptions(seed, options.PostEpochs, progress);
        var recipe = PostDenseRecipe(seed);
        // the whole post-dense schedule in one stage, as SOMP gets it (the same warm-up cap)
        (o.LearningRate, o.MinLearningRate, o.WarmupEpochs) =
            (recipe.LearningRate, recipe.MinLearningRate, PruningProtocol.WarmupFor(options.PostEpochs, recipe.WarmupEpochs));
        return o;
    }

    /// <summary>
    /// Prunes <paramref name="dense"/> with one method, its post-dense epochs split by <see cref="PruningProtocol"/>; returns the
    /// pruned transformer and how the epochs were used.
    /// </summary>
    private (MulticlassPredictionTransformer<ViTModelParameters>, string) Prune(MLContext ml, MethodVariant variant, PruningBudgetSpec budget, int seed,
        MulticlassPredictionTransformer<ViTModelParameters> dense, IDataView prepared, IDataView? validation, IProgress<ViTTrainingProgress> progress)
    {
        var o = options.ApplyMethodFlags(variant.Method.CreateOptions());
        (o.Progress, o.ValidationSet, o.TeacherScoreColumnName) = (progress, validation, TeacherColumn);
        PruningProtocol.ApplyEpochBudget(variant.Configure(budget.Apply(o)), options.PostEpochs, PostDenseRecipe(seed), options.FirstStageEpochs);
        return (ml.Transforms.Prune(o, dense).Fit(prepared), variant.Method.DescribeTraining(o));
    }

    /// <summary>
    /// Natural-log class probabilities of every test image from the raw model (the same batched path as the speed column);
    /// probabilities are floored at 1e-30 before the log.
    /// </summary>
    private static float[] LogProbabilities(ViTModelParameters model, ImageTensorData data) =>
        model.PredictProbabilities(data).Select(p => MathF.Log(MathF.Max(p, 1e-30f))).ToArray();

    /// <summary>Each test image's class as the model's output index: the position of its class name in the key column's values.</summary>
    private static int[] ModelClassIndices(DataViewSchema.Column labelKey, ImageSet data)
    {
        VBuffer<ReadOnlyMemory<char>> names = default;
        labelKey.GetKeyValues(ref names);
        var index = names.DenseValues().Select((n, i) => (Name: n.ToString(), i)).ToDictionary(t => t.Name, t => t.i);
        return Enumerable.Range(0, data.Count).Select(i => index.TryGetValue(data.GetClassName(i), out int k) ? k
            : throw new InvalidDataException($"Test class '{data.GetClassName(i)}' is not among the training labels.")).ToArray();
    }

    private static ModelEntry Template(string method, PruningBudgetSpec budget, int seed, string split, double seconds, string zip) => new()
    {
        Method = method, Sparsity = budget.Sparsity, TargetLatency = budget.LatencyFraction, Seed = seed, EpochSplit = split, TrainSeconds = seconds, Model = zip,
        AchievedSparsity = 0, Params = 0, Flops = 0, Top1 = 0, BatchImagesPerS = 0, SingleLatencyMs = 0, RawForwardLatencyMs = 0,
        MlnetTransformImagesPerS = 0, PostDenseEpochs = 0, Blocks = [],
    };

    /// <summary>Loads the saved zip in a fresh MLContext (what an app does) and measures accuracy and speed on it.</summary>
    private ModelEntry Measure(ModelEntry template, string zip, PruningReport? pruning, ImageTensorData testTensor, int[] testLabels, float[] denseLogProbabilities,
        ViTModelParameters dense, bool showPredictions)
    {
        var fresh = new MLContext(template.Seed);
        var loaded = fresh.Model.Load(zip, out _).UseBatchScoring(); // Model.Load rebuilds ML.NET's row-by-row scorer
        var vit = ViTOf(loaded).Model;

        var sw = Stopwatch.StartNew();
        var metrics = fresh.MulticlassClassification.Evaluate(loaded.Transform(testSet.ToDataView(fresh)));
        double mlnetRate = testSet.Count / sw.Elapsed.TotalSeconds;
        var fidelity = Fidelity.Compute(LogProbabilities(vit, testTensor), denseLogProbabilities, testLabels, vit.Architecture.NumClasses);
        double batchRate = options.NoSpeed ? double.NaN : Speed.BatchImagesPerSecond(vit, testTensor);
        var (engineMs, rawMs) = options.NoSpeed ? (double.NaN, double.NaN) : Speed.SingleImageLatency(fresh, loaded, vit, testSet);
        double? latency = options.NoSpeed || pruning is null ? null : Speed.LatencyFraction(dense, vit);

        if (showPredictions)
        {
            ui.Line($"Predictions of {Path.GetFileName(zip)}, loaded in a fresh MLContext, through a PredictionEngine:");
            using var engine = fresh.Model.CreatePredictionEngine<ImageInput, Prediction>(loaded, inputSchemaDefinition: testSet.InputSchema());
            for (int i = 0; i < Math.Min(5, testSet.Count); i++)
            {
                using var image = testSet.CreateImage(i);
                var p = engine.Predict(new ImageInput { Image = image });
                ui.Line(Text.Invariant($"  test image {i}: predicted {p.PredictedClass,-10} ({p.Score.Max():P0}), actual {testSet.GetClassName(i)}"));
            }
        }

        var arch = vit.Architecture;
        var denseValidation = pruning is null ? Validate(vit) : null;   // a pruned model's validation figures are in its report
        var denseArch = ViTArchitecture.FromPreset(options.Arch, arch.NumClasses);
        return template with
        {
            Params = arch.ParameterCount,
            Flops = arch.ForwardFlops,
            ExecutedFlops = arch.ExecutedForwardFlops,
            AchievedSparsity = pruning?.AchievedSparsity ?? 0,
            Top1 = metrics.MicroAccuracy,
            RawTop1 = fidelity.Top1,
            Nll = fidelity.Nll,
            Agreement = fidelity.Agreement,
            KlFromDense = fidelity.KlFromDense,
            CutShockTop1 = pruning?.CutShockTop1,
            CutShockNll = pruning?.CutShockNll,
            HardPrunedValidationTop1 = pruning?.ValidationAccuracy.GetValueOrDefault(PruningReport.HardPrunedStage),
            HardPrunedValidationNll = pruning?.ValidationNll.GetValueOrDefault(PruningReport.HardPrunedStage),
            ValidationTop1 = pruning is null ? denseValidation?.Top1 : pruning.ValidationAccuracy.GetValueOrDefault(PruningReport.FinalStage),
            ValidationNll = pruning is null ? denseValidation?.Nll : pruning.ValidationNll.GetValueOrDefault(PruningReport.FinalStage),
            ResidualRatio = (pruning?.Details as GohspDetails)?.ResidualRatio,
            CutPlanOverlap = (pruning?.Details as GohspDetails)?.CutPlanOverlap,
            LatencyFraction = latency,
            CalibratedLatencyFraction = pruning?.LatencyCalibration?.MeasuredRatio,
            BatchImagesPerS = batchRate,
            SingleLatencyMs = engineMs,
            RawForwardLatencyMs = rawMs,
            MlnetTransformImagesPerS = mlnetRate,
            PostDenseEpochs = options.PostEpochs,
            Blocks = pruning?.Blocks.Select(b => new BlockShape(b.KeptHeads.Length, b.QkDim, b.VDim, b.MlpWidth, b.DenseHeads, b.DenseQkDim, b.DenseVDim, b.DenseMlpWidth)).ToArray()
                     ?? arch.Blocks.Zip(denseArch.Blocks, (b, d) => new BlockShape(b.Heads, b.QkDim, b.VDim, b.MlpHidden, d.Heads, d.QkDim, d.VDim, d.MlpHidden)).ToArray(),
        };
    }
}
