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
        if (options.Teacher is { } teacherName) (teacher, prepared) = TeacherPipeline.Fit(ml, teacherName, trainSet, testSet, prep, ui);
        var validation = validationSplit is null ? null : prep.Transform(validationSplit.Images.ToDataView(ml));

        // 1. The dense model every method starts from: E epochs.
        var sw = Stopwatch.StartNew();
        var dense = ui.Train($"Dense {options.Arch}, {Text.Count(options.Epochs, "epoch")} on {trainSet.Count:N0} images (seed {seed}, {PrecisionName})",
            p => ml.MulticlassClassification.Trainers.ViTClassification(TrainerOptions(seed, options.Epochs, p)).Fit(prepared));
        double denseSeconds = sw.Elapsed.TotalSeconds;
        var post = ml.Transforms.Conversion.MapKeyToValue("PredictedLabel").Fit(dense.Transform(prepared));
        ITransformer Full(ITransformer predictor) => prep.Append(predictor).Append(post);

        var models = new List<(ModelEntry Template, MulticlassPredictionTransformer<ViTModelParameters> Predictor)>();
        string denseZip = Path.Combine(outDir, "dense.zip");
        ml.Model.SaveAtomically(Full(dense), train.Schema, denseZip);
        double denseStartTop1 = ml.MulticlassClassification.Evaluate(Full(dense).Transform(testSet.ToDataView(ml))).MicroAccuracy;
        ui.Line(Text.Invariant($"Dense model: {dense.Model.ParameterCount:N0} parameters, {dense.Model.ForwardFlops / 1e6:F1} MFLOPs/image, top-1 {denseStartTop1:P2}; saved {denseZip}"));

        // 2. The dense reference: the same model trained P more epochs, the budget every pruning method gets after it.
        sw.Restart();
        var reference = ui.Train($"Dense reference: {Text.Count(options.PostEpochs, "more epoch")}",
            p => ml.MulticlassClassification.Trainers.ViTClassification(ReferenceOptions(seed, p)).Fit(prepared, dense.Model));
        models.Add((Template("dense", PruningBudgetSpec.Parameters(0), seed, $"continued training {options.PostEpochs}", sw.Elapsed.TotalSeconds, "dense-reference.zip"), reference));

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
            },
            Dense = entries[0],
            Entries = entries.Skip(1).ToArray(),
        };
    }

    private string PrecisionName => _precision == ComputePrecision.BFloat16 ? "bf16" : "fp32";

    private ViTClassificationTrainer.Options TrainerOptions(int seed, int epochs, IProgress<ViTTrainingProgress>? progress) => new()
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
        return o;
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
        PruningProtocol.ApplyEpochBudget(variant.Configure(budget.Apply(o)), options.PostEpochs, PostDenseRecipe(seed));
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
        var vit = ((IEnumerable<ITransformer>)loaded).OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single().Model;

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
            ValidationTop1 = pruning?.ValidationAccuracy.GetValueOrDefault(PruningReport.FinalStage),
            ValidationNll = pruning?.ValidationNll.GetValueOrDefault(PruningReport.FinalStage),
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
