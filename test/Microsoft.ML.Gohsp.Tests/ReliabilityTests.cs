using System.Collections;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Platform;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>Faults a user can cause or suffer during training, resuming and prediction (docs/reliability.md lists them all).</summary>
public class ReliabilityTests
{
    private static readonly ViTArchitecture Tiny = ViTArchitecture.Uniform(32, 8, 32, 2, 2, 64, 2);

    private sealed class Row
    {
        [VectorType(3 * 32 * 32)] public float[] Pixels { get; set; }
        [KeyType(3)] public uint Label { get; set; }
    }

    private static Row[] Rows(int n, int seed = 1, int classes = 2)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(i => new Row
        {
            Pixels = Enumerable.Range(0, 3072).Select(_ => (float)rng.Next(256)).ToArray(),
            Label = (uint)(i % classes) + 1,
        }).ToArray();
    }

    private static ViTClassificationTrainer.Options Options(Action<ViTClassificationTrainer.Options> change = null)
    {
        var o = new ViTClassificationTrainer.Options
        {
            Architecture = Tiny, ImageColumnName = "Pixels", Epochs = 1, BatchSize = 4, NumberOfThreads = 1, Device = ViTDevice.Cpu, Seed = 3,
        };
        change?.Invoke(o);
        return o;
    }

    private static ImageTensorData Data(int n, int seed)
    {
        var rows = Rows(n, seed);
        return new ImageTensorData(rows.SelectMany(r => r.Pixels).ToArray(), rows.Select(r => (int)r.Label - 1).ToArray(), 3, 32);
    }

    private static ViTTrainingOptions LoopOptions(string folder = null) => new()
    {
        Epochs = 2, BatchSize = 4, NumberOfThreads = 1, Device = ViTDevice.Cpu, Seed = 3, CheckpointFolder = folder,
    };

    // ---- options ------------------------------------------------------------------------------------------------

    [Fact]
    public void BatchSizeNearIntMaxValueTrainsOneStepPerEpoch()
    {
        TrainingLoop.StepsPerEpoch(10, int.MaxValue).Should().Be(1);
        TrainingLoop.StepsPerEpoch(int.MaxValue, int.MaxValue - 1).Should().Be(2);
        using var model = new VisionTransformerModel(Tiny, seed: 1);
        var before = model.state_dict()["head.weight"].clone();
        var o = LoopOptions(); o.BatchSize = int.MaxValue; o.EvaluationBatchSize = int.MaxValue;
        var loop = new TrainingLoop(o);
        loop.Train(model, Data(6, 1), Data(4, 2));
        loop.History.Should().HaveCount(2);
        loop.History.Should().OnlyContain(h => double.IsFinite(h.Loss) && h.ValidationAccuracy.HasValue);
        model.state_dict()["head.weight"].allclose(before).Should().BeFalse("the model was trained");
    }

    [Fact]
    public void OptionsChangedAfterTheTrainerWasCreatedAreCheckedAtFit()
    {
        var ml = new MLContext(1);
        var o = Options();
        var trainer = ml.MulticlassClassification.Trainers.ViTClassification(o);
        var data = ml.Data.LoadFromEnumerable(new ThrowingRows());
        o.Epochs = 0;
        trainer.Invoking(t => t.Fit(data)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Epochs must be positive*");
        o.Epochs = 1; o.LearningRate = double.NaN;
        trainer.Invoking(t => t.Fit(data)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*LearningRate must be a positive finite number*");
        o.LearningRate = 1e-3; o.WarmupEpochs = double.PositiveInfinity;
        trainer.Invoking(t => t.Fit(data)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*WarmupEpochs must be a non-negative finite number*");
        o.WarmupEpochs = 1; o.NumberOfThreads = -1;
        trainer.Invoking(t => t.Fit(data)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*NumberOfThreads must be 0 (default) or positive*");
    }

    [Fact]
    public void CudaWithoutAGpuFailsAtFitEntryBeforeTheDataIsRead()
    {
        var ml = new MLContext(1);
        var trainer = ml.MulticlassClassification.Trainers.ViTClassification(Options(o => o.Device = ViTDevice.Cuda));
        var data = ml.Data.LoadFromEnumerable(new ThrowingRows());
        if (cuda.is_available())
            TorchDevices.Resolve(ViTDevice.Cuda).type.Should().Be(DeviceType.CUDA);
        else
            trainer.Invoking(t => t.Fit(data)).Should().Throw<InvalidOperationException>()
                .WithMessage("Device = Cuda was requested but torch.cuda.is_available() is false.*");
    }

    /// <summary>Rows whose enumeration fails: proves that a check happens before the data is read.</summary>
    private sealed class ThrowingRows : IEnumerable<Row>
    {
        public IEnumerator<Row> GetEnumerator() => throw new InvalidDataException("the data was read");
        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }

    [Fact]
    public void NumberOfThreadsIsRestoredAfterFit()
    {
        int original = get_num_threads();
        try
        {
            set_num_threads(1);
            var ml = new MLContext(1);
            var seenInside = 0;
            var o = Options(o => { o.NumberOfThreads = 2; o.Progress = new SyncProgress<ViTTrainingProgress>(_ => seenInside = get_num_threads()); });
            ml.MulticlassClassification.Trainers.ViTClassification(o).Fit(ml.Data.LoadFromEnumerable(Rows(8)));
            seenInside.Should().Be(2);
            get_num_threads().Should().Be(1);
        }
        finally
        {
            set_num_threads(original);
        }
    }

    [Fact]
    public void KeyValuesThatNeverOccurAreWarnedAboutAndStillScored()
    {
        var ml = new MLContext(1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Runtime.ChannelMessageKind.Warning) lock (warnings) warnings.Add(e.RawMessage); };
        var model = ml.MulticlassClassification.Trainers.ViTClassification(Options()).Fit(ml.Data.LoadFromEnumerable(Rows(8, classes: 2)));
        model.Model.Architecture.NumClasses.Should().Be(3);
        warnings.Should().Contain("Label column 'Label' has 3 key values, but only 2 of them occur in the training data; the model scores all 3 classes and learns to give the 1 unseen one(s) low probabilities.");
    }

    // ---- cancellation -------------------------------------------------------------------------------------------

    /// <summary>
    /// MLContext.CancelExecution() is internal to ML.NET; applications call it through the Microsoft.ML.Experimental package
    /// (<c>MLContextExtensions.CancelExecution(mlContext)</c>), which is this same call.
    /// </summary>
    private static void Cancel(MLContext ml) =>
        typeof(MLContext).GetMethod("CancelExecution", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!.Invoke(ml, null);

    [Fact]
    public void CancelExecutionStopsTheTrainerWithinOneStep()
    {
        var ml = new MLContext(1);
        var steps = new List<int>();
        var o = Options(o =>
        {
            o.Epochs = 3; o.Progress = new SyncProgress<ViTTrainingProgress>(p =>
        {
            if (p.EpochCompleted) return;
            steps.Add(p.Step);
            if (p.Step == 2) Cancel(ml);
        });
        });
        var trainer = ml.MulticlassClassification.Trainers.ViTClassification(o);
        trainer.Invoking(t => t.Fit(ml.Data.LoadFromEnumerable(Rows(16)))).Should().Throw<OperationCanceledException>();
        steps.Should().Equal(1, 2);
    }

    [Fact]
    public void CancelExecutionStopsAPruningEstimatorWithinOneStep()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Rows(16));
        var dense = ml.MulticlassClassification.Trainers.ViTClassification(Options()).Fit(data);
        var pruningContext = new MLContext(1);
        var steps = new List<string>();
        var g = new GohspPruningEstimator.Options { Sparsity = 0.5, CalibrationImages = 8 };
        foreach (var stage in new[] { g.SoftPruning, g.FineTune }) { stage.Epochs = 2; stage.BatchSize = 4; stage.NumberOfThreads = 1; stage.Device = ViTDevice.Cpu; }
        g.Progress = new SyncProgress<ViTTrainingProgress>(p =>
        {
            if (p.EpochCompleted) return;
            steps.Add($"{p.Stage} {p.Epoch} {p.Step}");
            if (p.Stage.EndsWith("soft-pruning", StringComparison.Ordinal) && p.Epoch == 1 && p.Step == 3) Cancel(pruningContext);
        });
        var gohsp = pruningContext.Transforms.GohspPrune(g, dense);
        gohsp.Invoking(e => e.Fit(dense.Transform(data))).Should().Throw<OperationCanceledException>();
        steps.Should().Equal("gohsp-soft-pruning 1 1", "gohsp-soft-pruning 1 2", "gohsp-soft-pruning 1 3");
        g.Progress.Should().BeOfType<SyncProgress<ViTTrainingProgress>>("the user's progress sink is given back");
    }

    // ---- resume -------------------------------------------------------------------------------------------------

    [Fact]
    public void AnUnreadableCheckpointChangesNothingAndTrainingStartsFromEpochOne()
    {
        var folder = Directory.CreateTempSubdirectory("gohsp-resume-").FullName;
        try
        {
            var data = Data(8, 1);
            // written by a run with the same (stateless) hook, so that it is this run's checkpoint
            using (var first = new VisionTransformerModel(Tiny, seed: 1)) new TrainingLoop(LoopOptions(folder)) { Hook = new Snapshot() }.Train(first, data);
            var path = Path.Combine(folder, "checkpoint.bin");
            var bytes = File.ReadAllBytes(path);
            File.WriteAllBytes(path, bytes[..^40]); // weights intact, optimiser state cut short

            using var model = new VisionTransformerModel(Tiny, seed: 9);
            var fresh = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
            var hook = new Snapshot();
            var log = new List<string>();
            var loop = new TrainingLoop(LoopOptions(folder), log: log.Add) { Hook = hook };
            loop.Train(model, data);
            loop.StartEpoch.Should().Be(0);
            log.Should().Contain(l => l.StartsWith($"[dense] ignoring unreadable checkpoint {path} (its optimiser state claims", StringComparison.Ordinal));
            foreach (var (name, t) in hook.AtStart)
                t.data<float>().ToArray().Should().Equal(fresh[name].data<float>().ToArray(), $"{name} starts from this run's initialisation, not from the checkpoint");
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    [Fact]
    public void ACheckpointOfOtherImagesWithTheSameRowCountIsNotResumed()
    {
        var folder = Directory.CreateTempSubdirectory("gohsp-resume-").FullName;
        try
        {
            using (var first = new VisionTransformerModel(Tiny, seed: 1)) new TrainingLoop(LoopOptions(folder)).Train(first, Data(8, 1));
            var log = new List<string>();
            using var model = new VisionTransformerModel(Tiny, seed: 1);
            var loop = new TrainingLoop(LoopOptions(folder), log: log.Add);
            loop.Train(model, Data(8, 2)); // same count, labels and shape; other pixels
            loop.StartEpoch.Should().Be(0);
            log.Should().Contain($"[dense] checkpoint in {folder} belongs to another run (different data, architecture or options); starting from epoch 1.");
            TrainingLoop.DataFingerprint(Data(8, 1)).Should().Be(TrainingLoop.DataFingerprint(Data(8, 1)));

            var again = new TrainingLoop(LoopOptions(folder), log: log.Add);
            using var resumed = new VisionTransformerModel(Tiny, seed: 1);
            again.Train(resumed, Data(8, 2));
            again.StartEpoch.Should().Be(2, "the same data resumes");
        }
        finally
        {
            Directory.Delete(folder, true);
        }
    }

    /// <summary>
    /// A checkpoint is resumed only by a run with the same hook under the same settings: another hook, other ADMM settings,
    /// distillation added or at another temperature, or no hook at all start from epoch 1.
    /// </summary>
    [Fact]
    public void ACheckpointOfAnotherHookOrOtherHookSettingsIsNotResumed()
    {
        using var teacher = new VisionTransformerModel(Tiny, seed: 2);
        var owned = new List<IDisposable>();
        ITrainingHook Admm(double sparsity, double rho = 1)
        {
            var h = new AdmmSoftPruning(sparsity, null, new AdmmOptions { Rho = rho });
            owned.Add(h);
            return h;
        }
        ITrainingHook AdmmWithKd(double temperature) => CombinedTrainingHook.Of(Admm(0.4), new Distillation(teacher, temperature))!;
        var cases = new (string Name, Func<ITrainingHook?> Written, Func<ITrainingHook?> Resumed, bool Resumes)[]
        {
            ("the same ADMM settings", () => Admm(0.4), () => Admm(0.4), true),
            ("the same ADMM and distillation", () => AdmmWithKd(4), () => AdmmWithKd(4), true),
            ("ADMM at another sparsity", () => Admm(0.4), () => Admm(0.5), false),
            ("ADMM at another rho", () => Admm(0.4), () => Admm(0.4, rho: 2), false),
            ("distillation added", () => Admm(0.4), () => AdmmWithKd(4), false),
            ("distillation at another temperature", () => AdmmWithKd(4), () => AdmmWithKd(1), false),
            ("the hook removed", () => Admm(0.4), () => null, false),
            ("a hook added", () => null, () => Admm(0.4), false),
        };
        try
        {
            foreach (var (name, written, resumed, resumes) in cases)
            {
                var folder = Directory.CreateTempSubdirectory("gohsp-hook-resume-").FullName;
                try
                {
                    using (var first = new VisionTransformerModel(Tiny, seed: 1))
                        new TrainingLoop(LoopOptions(folder)) { Hook = written() }.Train(first, Data(8, 1));
                    var log = new List<string>();
                    using var model = new VisionTransformerModel(Tiny, seed: 1);
                    var loop = new TrainingLoop(LoopOptions(folder), log: log.Add) { Hook = resumed() };
                    loop.Train(model, Data(8, 1));
                    loop.StartEpoch.Should().Be(resumes ? 2 : 0, name);
                    if (!resumes)
                        log.Should().Contain($"[dense] checkpoint in {folder} belongs to another run (different data, architecture or options); starting from epoch 1.", name);
                }
                finally
                {
                    Directory.Delete(folder, true);
                }
            }
        }
        finally
        {
            foreach (var d in owned) d.Dispose();
        }
    }

    private sealed class Snapshot : ITrainingHook
    {
        public Dictionary<string, Tensor> AtStart { get; } = new();

        public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch)
        {
            foreach (var (name, t) in model.state_dict()) AtStart[name] = t.detach().clone();
        }
    }

    // ---- prediction ---------------------------------------------------------------------------------------------

    private sealed class PixelRow
    {
        [VectorType(3 * 32 * 32)] public float[] Pixels { get; set; }
    }

    private sealed class Prediction
    {
        public float[] Score { get; set; }
    }

    private static ITransformer TinyModel(MLContext ml) =>
        ml.MulticlassClassification.Trainers.ViTClassification(Options()).Fit(ml.Data.LoadFromEnumerable(Rows(8)));

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void NonFinitePixelsAtPredictionGiveNaNScoresLikeFirstPartyTrainers(float bad)
    {
        var ml = new MLContext(1);
        var engine = ml.Model.CreatePredictionEngine<PixelRow, Prediction>(TinyModel(ml));
        var pixels = Enumerable.Repeat(100f, 3072).ToArray();
        engine.Predict(new PixelRow { Pixels = pixels }).Score.Should().OnlyContain(s => float.IsFinite(s));
        pixels[5] = bad;
        engine.Predict(new PixelRow { Pixels = pixels }).Score.Should().HaveCount(3).And.OnlyContain(s => float.IsNaN(s));
    }

    [Fact]
    public void OneSharedTransformerScoredFromFourThreadsGivesTheSingleThreadScores()
    {
        var ml = new MLContext(1);
        var model = TinyModel(ml);
        var inputs = Rows(24, seed: 5).Select(r => new PixelRow { Pixels = r.Pixels }).ToArray();
        var single = ml.Model.CreatePredictionEngine<PixelRow, Prediction>(model);
        var expected = inputs.Select(i => single.Predict(i).Score).ToArray();
        var results = new float[4][][];
        var threads = Enumerable.Range(0, 4).Select(t => new Thread(() =>
        {
            var engine = ml.Model.CreatePredictionEngine<PixelRow, Prediction>(model);
            results[t] = Enumerable.Range(0, 3).SelectMany(_ => inputs).Select(i => engine.Predict(i).Score).ToArray();
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        foreach (var r in results)
            for (int i = 0; i < r.Length; i++) r[i].Should().Equal(expected[i % inputs.Length]);
    }

    // ---- files --------------------------------------------------------------------------------------------------

    [Fact]
    public void ConfigJsonWithZeroAttentionHeadsIsRefused()
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-config-").FullName;
        try
        {
            var hf = Path.Combine(AppContext.BaseDirectory, "Fixtures", "interop", "hf");
            File.Copy(Path.Combine(hf, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
            File.WriteAllText(Path.Combine(dir, "config.json"), """{"num_attention_heads": 0, "hidden_size": 32}""");
            var act = () => PretrainedViT.Import(Path.Combine(dir, "model.safetensors"));
            act.Should().Throw<InvalidDataException>().WithMessage("*config.json' beside the checkpoint has num_attention_heads = 0; expected a positive whole number*");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void OversizedClassNameFileIsRefused()
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-meta-").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "test_batch.bin"), new byte[3073]);
            File.WriteAllText(Path.Combine(dir, "batches.meta.txt"), new string('a', 64 << 10) + "\n");
            var act = () => Cifar10.Read(dir, Cifar10Split.Test);
            act.Should().Throw<InvalidDataException>().WithMessage("*batches.meta.txt' is larger than 65,536 bytes; expected 10 class names, one per line.");
            File.WriteAllText(Path.Combine(dir, "batches.meta.txt"), string.Join("\n", Cifar10.DefaultClassNames));
            Cifar10.Read(dir, Cifar10Split.Test).Count.Should().Be(1);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
