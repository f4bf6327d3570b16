using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Distillation from a teacher's scores given per image (<see cref="ImageTensorData.WithTeacherProbabilities"/>, the
/// <c>TeacherScoreColumnName</c> options): the loss, its wiring into the training loop, the column checks and the pruning
/// estimators.
/// </summary>
public class TeacherDistillationTests
{
    // ---- the loss --------------------------------------------------------------------------------------------

    [Fact]
    public void SoftTargetLossEqualsAHandComputedValueAndTheLogitTeacherAtTheSameTemperature()
    {
        using var scope = NewDisposeScope();
        float[] z = [1.0f, -0.5f, 2.0f, 0.3f, 0.3f, -1.2f];          // student logits, 2 images × 3 classes
        float[] p = [0.7f, 0.2f, 0.1f, 0.05f, 0.9f, 0.05f];           // teacher probabilities
        double t = 2;
        var loss = DistillationLoss.FromProbabilities(tensor(z, 2, 3), tensor(p, 2, 3), t).ToDouble();

        // by hand: T²·mean_i Σ_c q(c)·(log q(c) − log s(c)), q = softmax(log p / T), s = softmax(z / T)
        double expected = 0;
        for (int i = 0; i < 2; i++)
        {
            var lq = Enumerable.Range(0, 3).Select(c => Math.Log(p[3 * i + c]) / t).ToArray();
            var ls = Enumerable.Range(0, 3).Select(c => z[3 * i + c] / t).ToArray();
            double nq = Math.Log(lq.Sum(Math.Exp)), ns = Math.Log(ls.Sum(Math.Exp));
            for (int c = 0; c < 3; c++) expected += Math.Exp(lq[c] - nq) * ((lq[c] - nq) - (ls[c] - ns));
        }
        expected *= t * t / 2;
        expected.Should().BeGreaterThan(0.1, "the student disagrees with the teacher");
        loss.Should().BeApproximately(expected, 1e-5);

        // a teacher given as probabilities is the logit teacher whose softmax they are, at any temperature
        var teacherLogits = tensor(new float[] { 0.2f, 1.1f, -0.7f, 2.5f, 0.0f, 0.4f }, 2, 3);
        var probabilities = teacherLogits.softmax(1);
        DistillationLoss.FromProbabilities(tensor(z, 2, 3), probabilities, 3).ToDouble()
            .Should().BeApproximately(DistillationLoss.FromLogits(tensor(z, 2, 3), teacherLogits, 3).ToDouble(), 1e-5);

        // an exact zero probability gives a finite loss
        double.IsFinite(DistillationLoss.FromProbabilities(tensor(z, 2, 3), tensor(new float[] { 1, 0, 0, 0, 1, 0 }, 2, 3), 1).ToDouble()).Should().BeTrue();
    }

    // ---- the core: the data and the training loop ------------------------------------------------------------

    private static readonly ViTArchitecture Micro = ViTArchitecture.CifarMicro(3);

    /// <summary>16 random 32×32 images, labels 0, 1, 2, 0, …</summary>
    private static ImageTensorData Images(int n = 16)
    {
        var rng = new Random(5);
        var pixels = new float[n * 3 * 32 * 32];
        for (int i = 0; i < pixels.Length; i++) pixels[i] = rng.Next(256);
        return new ImageTensorData(pixels, Enumerable.Range(0, n).Select(i => i % 3).ToArray(), 3, 32);
    }

    /// <summary>Per-image probability rows: random ones, or one-hot at each image's label.</summary>
    private static float[] TeacherRows(ImageTensorData data, bool oneHotAtLabel)
    {
        var rng = new Random(9);
        var rows = new float[data.Count * 3];
        for (int i = 0; i < data.Count; i++)
        {
            if (oneHotAtLabel) { rows[3 * i + data.Labels[i]] = 1; continue; }
            var r = new[] { rng.NextSingle() + 0.05f, rng.NextSingle() + 0.05f, rng.NextSingle() + 0.05f };
            float sum = r.Sum();
            for (int c = 0; c < 3; c++) rows[3 * i + c] = r[c] / sum;
        }
        return rows;
    }

    private static ViTTrainingOptions LoopOptions(double alpha, double temperature = 4, double labelSmoothing = 0.1) => new()
    {
        Epochs = 1, BatchSize = 8, LearningRate = 1e-3, WarmupEpochs = 0, Device = ViTDevice.Cpu, NumberOfThreads = 2, Seed = 3,
        TeacherWeight = alpha, TeacherTemperature = temperature, LabelSmoothing = labelSmoothing,
    };

    /// <summary>Records the head's gradient after every backward pass.</summary>
    private sealed class GradientRecorder : ITrainingHook
    {
        public List<float[]> Gradients { get; } = new();

        public void AfterBackward(VisionTransformerModel model, long globalStep) =>
            Gradients.Add(model.Head.weight.grad!.data<float>().ToArray());
    }

    /// <summary>One epoch (two steps of 8 shuffled images); the head's gradients of both steps and the final weights.</summary>
    private static (List<float[]> Gradients, float[] Weights) TrainOnce(ImageTensorData data, ViTTrainingOptions options)
    {
        using var model = new VisionTransformerModel(Micro, seed: 11);
        var recorder = new GradientRecorder();
        new TrainingLoop(options) { Hook = recorder }.Train(model, data);
        return (recorder.Gradients, model.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).ToArray());
    }

    private static double MaxDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    [Fact]
    public void ATeacherChangesTheGradientsAndAtWeightZeroChangesNothing()
    {
        var plain = Images();
        var taught = plain.WithTeacherProbabilities(TeacherRows(plain, oneHotAtLabel: false), 3);

        var without = TrainOnce(plain, LoopOptions(alpha: 0.5));
        var with = TrainOnce(taught, LoopOptions(alpha: 0.5));
        var zero = TrainOnce(taught, LoopOptions(alpha: 0));

        without.Gradients.Should().HaveCount(2);
        MaxDiff(with.Gradients[0], without.Gradients[0]).Should().BeGreaterThan(1e-4, "the first step's gradient includes the teacher's term");
        MaxDiff(with.Weights, without.Weights).Should().BeGreaterThan(1e-5);
        MaxDiff(zero.Gradients[0], without.Gradients[0]).Should().Be(0, "α = 0 trains on the labels alone");
        MaxDiff(zero.Weights, without.Weights).Should().Be(0);
    }

    [Fact]
    public void AOneHotTeacherAtTemperatureOneIsTheLabelLossSoTheLossIsAConvexMixAndRowsFollowTheirShuffledImages()
    {
        // (1 − α)·CE + α·1²·KL(one-hot ‖ student) = CE for every α, when each image's row follows it through the shuffling;
        // a wrong weighting (CE + α·KL) or a row of another image would change the gradient.
        var plain = Images();
        var taught = plain.WithTeacherProbabilities(TeacherRows(plain, oneHotAtLabel: true), 3);
        var reference = TrainOnce(plain, LoopOptions(alpha: 0.5, temperature: 1, labelSmoothing: 0));
        foreach (double alpha in new[] { 0.5, 1.0 })
        {
            var distilled = TrainOnce(taught, LoopOptions(alpha, temperature: 1, labelSmoothing: 0));
            for (int s = 0; s < 2; s++)
                MaxDiff(distilled.Gradients[s], reference.Gradients[s]).Should().BeLessThan(1e-5, $"α = {alpha}, step {s + 1}");
        }
        var misaligned = plain.WithTeacherProbabilities(TeacherRows(plain, oneHotAtLabel: true).Skip(3).Concat(new float[] { 1, 0, 0 }).ToArray(), 3);
        MaxDiff(TrainOnce(misaligned, LoopOptions(1, 1, 0)).Gradients[0], reference.Gradients[0]).Should().BeGreaterThan(1e-4);
    }

    [Fact]
    public void TeacherRowsFollowTheirImagesThroughSelectTakeAndTheValidationSplit()
    {
        var plain = Images(12);
        var rows = TeacherRows(plain, oneHotAtLabel: false);
        var data = plain.WithTeacherProbabilities(rows, 3);
        float[] Row(int i) => rows.AsSpan(3 * i, 3).ToArray();

        var selected = data.Select([7, 2, 9]);
        selected.TeacherClasses.Should().Be(3);
        selected.TeacherProbabilities.Should().Equal(Row(7).Concat(Row(2)).Concat(Row(9)));
        data.Take(2).TeacherProbabilities.Should().Equal(Row(0).Concat(Row(1)));
        var (train, validation, held) = data.SplitValidation(0.25, seed: 4);
        validation.TeacherProbabilities.Should().Equal(held.SelectMany(Row));
        train.TeacherProbabilities.Should().Equal(ImageTensorData.Complement(held, 12).SelectMany(Row));
        plain.Select([1]).TeacherProbabilities.Should().BeNull();
    }

    [Theory]
    [InlineData(float.NaN, "*image 1*entry 0 is NaN*")]
    [InlineData(-0.1f, "*image 1*negative*")]
    [InlineData(0.5f, "*image 1*sum to*not 1*")]
    public void RowsThatAreNotProbabilityVectorsAreRefusedNamingTheImage(float first, string message)
    {
        var data = Images(2);
        var rows = new float[] { 0.2f, 0.3f, 0.5f, first, 0.6f, 0.4f };
        if (first < 0) rows[4] = 0.7f; // a negative entry in a row that sums to 1
        data.Invoking(d => d.WithTeacherProbabilities(rows, 3)).Should().Throw<ArgumentException>().WithMessage(message);
        data.Invoking(d => d.WithTeacherProbabilities(new float[5], 3)).Should().Throw<ArgumentException>().WithMessage("*expected 2 images · 3 classes*");
    }

    [Fact]
    public void TheLoopRefusesTeacherRowsOfAnotherClassCountAndTheOptionsCheckAlphaAndT()
    {
        var plain = Images(4);
        var twoClasses = plain.WithTeacherProbabilities([0.5f, 0.5f, 1, 0, 0, 1, 0.3f, 0.7f], 2);
        using var model = new VisionTransformerModel(Micro, seed: 1);
        new TrainingLoop(LoopOptions(0.5)).Invoking(l => l.Train(model, twoClasses)).Should().Throw<ArgumentException>().WithMessage("*teacher probabilities have 2 classes*model has 3*");
        foreach (double alpha in new[] { -0.1, 1.1, double.NaN })
            LoopOptions(alpha).Invoking(o => o.Validate(3)).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == nameof(ViTTrainingOptions.TeacherWeight));
        foreach (double t in new[] { 0, -1, double.PositiveInfinity })
            LoopOptions(0.5, t).Invoking(o => o.Validate(3)).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == nameof(ViTTrainingOptions.TeacherTemperature));
    }

    [Fact]
    public void TheProtocolGivesEveryStageOfEveryMethodTheSameTeacherSettingsAndTwoTeachersAreRefused()
    {
        var b = new ViTTrainingOptions { TeacherWeight = 0.3, TeacherTemperature = 2 };
        foreach (var method in Enum.GetValues<PruningMethod>())
            foreach (var (name, o) in PruningProtocol.ForEpochBudget(method, 0.4, 4, b).TrainingStages)
                (o.TeacherWeight, o.TeacherTemperature).Should().Be((0.3, 2.0), $"{method} {name}");

        var data = Images(8);
        var taught = data.WithTeacherProbabilities(TeacherRows(data, oneHotAtLabel: false), 3);
        using var model = new VisionTransformerModel(Micro, seed: 1);
        var somp = PruningProtocol.ForEpochBudget(PruningMethod.Somp, 0.4, 1, LoopOptions(0.5));
        somp.Distillation = true;
        ((Action)(() => PruningProtocol.Run(new PruningContext(model, taught), somp))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == nameof(PruningOptions.Distillation)).WithMessage("*teacher's probabilities replace the dense-model teacher*");
    }

    // ---- ML.NET: the column --------------------------------------------------------------------------------

    private sealed class Row
    {
        [VectorType(3 * 32 * 32)] public float[] Pixels { get; set; }
        public string Label { get; set; }
        [VectorType(2)] public float[] Teacher { get; set; }
    }

    private sealed class ThreeClassTeacherRow
    {
        [VectorType(3 * 32 * 32)] public float[] Pixels { get; set; }
        public string Label { get; set; }
        [VectorType(3)] public float[] Teacher { get; set; }
    }

    private sealed class ImageOnlyRow
    {
        [VectorType(3 * 32 * 32)] public float[] Pixels { get; set; }
        public string Label { get; set; }
    }

    /// <summary>SchemaShape.Create is internal to ML.NET; estimators receive shapes from EstimatorChain.</summary>
    private static SchemaShape Shape(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)!
            .Invoke(null, new object[] { schema })!;

    private static float[] Pixels(int i) => Enumerable.Range(0, 3072).Select(k => (float)((k * 7 + i * 31) % 256)).ToArray();

    private static IDataView Rows(MLContext ml, int n, Func<int, float[]> teacher = null) =>
        ml.Data.LoadFromEnumerable(Enumerable.Range(0, n).Select(i => new Row
        {
            Pixels = Pixels(i), Label = (i % 2).ToString(), Teacher = teacher?.Invoke(i) ?? (i % 2 == 0 ? [0.8f, 0.2f] : [0.3f, 0.7f]),
        }));

    private static ViTClassificationTrainer.Options TrainerOptions(string teacher = "Teacher") => new()
    {
        Architecture = ViTArchitecture.CifarMicro(), ImageColumnName = "Pixels", TeacherScoreColumnName = teacher,
        Epochs = 1, BatchSize = 4, WarmupEpochs = 0, Device = ViTDevice.Cpu, NumberOfThreads = 2, Seed = 3,
    };

    private static Func<ITransformer> Fit(MLContext ml, IDataView data, ViTClassificationTrainer.Options o) =>
        () => ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(data);

    [Fact]
    public void TheTrainerRefusesABadTeacherColumnNamingIt()
    {
        var ml = new MLContext(1);
        // missing: at GetOutputSchema, before the data is read
        var missing = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(TrainerOptions("Soft")));
        missing.Invoking(p => p.GetOutputSchema(Shape(Rows(ml, 2).Schema))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == nameof(ViTClassificationTrainer.Options.TeacherScoreColumnName)).WithMessage("*Teacher score column 'Soft' was not found*");
        // not a float vector
        Fit(ml, Rows(ml, 2), TrainerOptions("Label")).Should().Throw<ArgumentException>().WithMessage("*TeacherScoreColumnName 'Label'*other than the image and label*");
        var doubles = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.Transforms.Conversion.ConvertType("Doubles", "Teacher", DataKind.Double))
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(TrainerOptions("Doubles")));
        doubles.Invoking(p => p.Fit(Rows(ml, 2))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Teacher score column 'Doubles' has type*Double*expected*Single*");
        // wrong length: 3 values for a 2-class label
        var three = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 2).Select(i => new ThreeClassTeacherRow { Pixels = Pixels(i), Label = (i % 2).ToString(), Teacher = [0.2f, 0.3f, 0.5f] }));
        Fit(ml, three, TrainerOptions()).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Teacher score column 'Teacher' has 3 values per row; the label has 2 classes*");
        // not probability vectors, with the row named
        Fit(ml, Rows(ml, 3, i => i == 2 ? [float.NaN, 1f] : [0.5f, 0.5f]), TrainerOptions()).Should().Throw<InvalidOperationException>()
            .WithMessage("*Teacher score column 'Teacher' is not a probability vector in row 2: entry 0 is NaN*");
        Fit(ml, Rows(ml, 3, i => i == 1 ? [float.PositiveInfinity, 0f] : [0.5f, 0.5f]), TrainerOptions()).Should().Throw<InvalidOperationException>()
            .WithMessage("*'Teacher' is not a probability vector in row 1: entry 0 is *");
        Fit(ml, Rows(ml, 3, i => i == 0 ? [-0.5f, 1.5f] : [0.5f, 0.5f]), TrainerOptions()).Should().Throw<InvalidOperationException>()
            .WithMessage("*'Teacher' is not a probability vector in row 0: entry 0 is negative*");
        Fit(ml, Rows(ml, 3, i => i == 1 ? [2.5f, 0.5f] : [0.5f, 0.5f]), TrainerOptions()).Should().Throw<InvalidOperationException>()
            .WithMessage("*'Teacher' is not a probability vector in row 1: its entries sum to 3*");
        // α and T are checked when the trainer is created
        var badAlpha = TrainerOptions();
        badAlpha.TeacherWeight = 2;
        ((Action)(() => ml.MulticlassClassification.Trainers.ViTClassification(badAlpha))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == nameof(ViTTrainingOptions.TeacherWeight));
    }

    [Theory]
    [InlineData("0,1", true)]
    [InlineData("1,0", false)]
    public void ATeacherColumnThatNamesItsClassesInAnotherOrderThanTheLabelIsRefused(string slotNames, bool accepted)
    {
        var ml = new MLContext(1);
        var schema = SchemaDefinition.Create(typeof(Row));
        var names = slotNames.Split(',').Select(n => n.AsMemory()).ToArray();
        schema[nameof(Row.Teacher)].AddAnnotation("SlotNames", new VBuffer<ReadOnlyMemory<char>>(2, names), new VectorDataViewType(TextDataViewType.Instance, 2));
        var rows = Enumerable.Range(0, 4).Select(i => new Row { Pixels = Pixels(i), Label = (i % 2).ToString(), Teacher = [0.6f, 0.4f] }).ToArray();
        var fit = Fit(ml, ml.Data.LoadFromEnumerable(rows, schema), TrainerOptions());
        if (accepted) fit().Should().NotBeNull();
        else fit.Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == nameof(ViTClassificationTrainer.Options.TeacherScoreColumnName))
            .WithMessage("*Teacher score column 'Teacher' names its classes [1, 0]; label column 'Label' has the classes [0, 1]*");
    }

    [Fact]
    public void TheTrainerDistilsFromTheColumnAndTheModelPredictsAndSavesWithoutIt()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("[dense]")) lock (log) log.Add(e.Message); };
        var data = Rows(ml, 8);
        var taught = (TransformerChain<MulticlassPredictionTransformer<ViTModelParameters>>)Fit(ml, data, TrainerOptions())();
        var plainOptions = TrainerOptions();
        plainOptions.TeacherScoreColumnName = null;
        var plain = (TransformerChain<MulticlassPredictionTransformer<ViTModelParameters>>)Fit(ml, data, plainOptions)();
        log.Should().Contain(l => l.Contains("teacher KL")).And.Contain(l => !l.Contains("teacher KL"), "only the run with the column distils");
        MaxDiff(Weights(taught), Weights(plain)).Should().BeGreaterThan(1e-5, "the teacher column changes the training");

        // prediction needs the image alone: score, save, load and score data without the teacher column
        var images = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 4).Select(i => new ImageOnlyRow { Pixels = Pixels(i), Label = (i % 2).ToString() }));
        var before = taught.Transform(images).GetColumn<float[]>("Score").ToArray();
        using var stream = new MemoryStream();
        ml.Model.Save(taught, images.Schema, stream);
        stream.Position = 0;
        var loaded = new MLContext(2).Model.Load(stream, out _);
        var after = loaded.Transform(images).GetColumn<float[]>("Score").ToArray();
        after.Should().HaveCount(4);
        MaxDiff(after.SelectMany(s => s).ToArray(), before.SelectMany(s => s).ToArray()).Should().BeLessThan(1e-5);
    }

    private static float[] Weights(TransformerChain<MulticlassPredictionTransformer<ViTModelParameters>> chain) =>
        chain.LastTransformer.Model.Model.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).ToArray();

    // ---- ML.NET: the pruning estimators ------------------------------------------------------------------------

    private static ViTTrainingOptions Stage() => new() { Epochs = 1, BatchSize = 4, WarmupEpochs = 0, Device = ViTDevice.Cpu, NumberOfThreads = 2 };

    [Fact]
    public void EveryPruningMethodDistilsFromTheColumnInEveryStageThatTrains()
    {
        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("] epoch ")) lock (log) log.Add(e.Message); };
        var data = Rows(ml, 8);
        var plainOptions = TrainerOptions();
        plainOptions.TeacherScoreColumnName = null;
        var dense = Fit(ml, data, plainOptions)();
        var scored = dense.Transform(data);

        var gohsp = new GohspPruningEstimator.Options
        {
            Sparsity = 0.4, CalibrationImages = 8, TeacherScoreColumnName = "Teacher", SoftPruning = Stage(), FineTune = Stage(),
        };
        var somp = new SompPruningEstimator.Options { Sparsity = 0.4, TeacherScoreColumnName = "Teacher", FineTune = Stage() };
        var sgmp = new SgmpPruningEstimator.Options { Sparsity = 0.4, TeacherScoreColumnName = "Teacher", Gradual = Stage(), FineTune = Stage() };
        var report = ml.Transforms.GohspPrune(gohsp, dense).Fit(scored).Model.PruningReport!;
        report.ParametersAfter.Should().BeLessThan(report.ParametersBefore);
        ml.Transforms.SompPrune(somp, dense).Fit(scored);
        ml.Transforms.SgmpPrune(sgmp, dense).Fit(scored);
        foreach (var stage in new[] { "gohsp-soft-pruning", "gohsp-fine-tune", "somp-fine-tune", "sgmp-gradual", "sgmp-fine-tune" })
            log.Should().Contain(l => l.Contains($"[{stage}] epoch") && l.Contains("teacher KL"), stage);

        // the column replaces the dense-model teacher: both are refused, naming the column option
        somp.Distillation = true;
        ml.Transforms.SompPrune(somp, dense).Invoking(e => e.GetOutputSchema(Shape(scored.Schema))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == nameof(PruningOptions.TeacherScoreColumnName)).WithMessage("*two teachers*");
        somp.Distillation = false;
        somp.TeacherScoreColumnName = "Missing";
        ml.Transforms.SompPrune(somp, dense).Invoking(e => e.Fit(scored)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Teacher score column 'Missing' was not found*");
        somp.TeacherScoreColumnName = "Teacher";
        ml.Transforms.SompPrune(somp, dense).Invoking(e => e.Fit(dense.Transform(Rows(ml, 4, i => [0.9f, 0.2f])))).Should().Throw<InvalidOperationException>()
            .WithMessage("*Teacher score column 'Teacher' is not a probability vector in row 0*");
    }
}
