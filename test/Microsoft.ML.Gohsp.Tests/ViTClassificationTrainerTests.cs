using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

public partial class ViTClassificationTrainerTests : IClassFixture<TrainedModelFixture>
{
    private readonly TrainedModelFixture _f;
    private readonly ITestOutputHelper _out;

    public ViTClassificationTrainerTests(TrainedModelFixture fixture, ITestOutputHelper output)
    {
        _f = fixture;
        _out = output;
    }

    /// <summary>
    /// Bar: 25% top-1 on the 1,017 real CIFAR-10 test images (chance is 10%; the binomial standard deviation of
    /// a chance-level classifier on 1,017 images is 0.9 points, so 25% is more than 15σ above chance). It is set
    /// well below what 4 short epochs of the micro config reach, so that it only fails when learning is broken.
    /// </summary>
    [Fact]
    public void TrainsClearlyAboveChanceAndEvaluateWorks()
    {
        var scored = _f.Model.Transform(_f.Test);
        var metrics = _f.Ml.MulticlassClassification.Evaluate(scored);
        _out.WriteLine($"micro accuracy {metrics.MicroAccuracy:P2}, log-loss {metrics.LogLoss:F3}");
        metrics.MicroAccuracy.Should().BeGreaterThan(0.25);
        metrics.LogLoss.Should().BeLessThan(Math.Log(10));
        metrics.ConfusionMatrix.NumberOfClasses.Should().Be(10);
    }

    [Fact]
    public void ScoreHasSlotNamesFromKeyValuesAndSumsToOne()
    {
        var scored = _f.Model.Transform(_f.Test);
        VBuffer<ReadOnlyMemory<char>> names = default;
        scored.Schema["Score"].GetSlotNames(ref names);
        names.DenseValues().Select(n => n.ToString()).Should().BeEquivalentTo(Cifar10.DefaultClassNames);
        var scores = scored.GetColumn<float[]>("Score").Take(20).ToList();
        scores.Should().OnlyContain(s => Math.Abs(s.Sum() - 1f) < 1e-4);
        scored.Schema["PredictedLabel"].Type.Should().BeOfType<KeyDataViewType>();
    }

    [Fact]
    public void ProgressAndLogReportEveryEpoch()
    {
        var epochs = _f.Progress.Where(p => p.EpochCompleted).Select(p => p.Epoch).ToList();
        epochs.Should().Equal(1, 2, 3, 4);
        _f.Progress.Should().Contain(p => !p.EpochCompleted && p.Step == 1);
        _f.Log.Should().HaveCount(4).And.Contain(l => l.Contains("epoch 4/4"));
        _f.Predictor.Model.TrainingHistory.Should().HaveCount(4);
        _f.Predictor.Model.TrainingHistory[^1].Loss.Should().BeLessThan(_f.Predictor.Model.TrainingHistory[0].Loss);
    }

    [Fact]
    public void SaveLoadInFreshContextGivesIdenticalScoresInPredictionEngine()
    {
        var path = Path.Combine(_f.TempDir, "model.zip");
        _f.Ml.Model.SaveAtomically(_f.Model, _f.Train.Schema, path);
        var fresh = new MLContext();
        var loaded = fresh.Model.Load(path, out var schema);
        var before = _f.Ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(_f.Model);
        var after = fresh.Model.CreatePredictionEngine<ImageRow, ScoreRow>(loaded);
        for (int i = 0; i < 8; i++)
        {
            var row = new ImageRow { Image = Cifar10.CreateImage(_f.TestSet.GetImage(i)), Label = "cat" };
            var a = before.Predict(row);
            var b = after.Predict(row);
            b.Score.Should().Equal(a.Score);
            b.PredictedLabel.Should().Be(a.PredictedLabel);
        }
        // and the scores equal what the bulk Transform path gives
        var bulk = _f.Model.Transform(_f.Test).GetColumn<float[]>("Score").First();
        after.Predict(new ImageRow { Image = Cifar10.CreateImage(_f.TestSet.GetImage(0)), Label = "cat" }).Score
            .Should().BeEquivalentTo(bulk, o => o.Using<float>(c => c.Subject.Should().BeApproximately(c.Expectation, 1e-5f)).WhenTypeIs<float>());
    }

    [Fact]
    public void BFloat16TrainingFitsAFloat32ModelThatDiffersFromTheFloat32Run()
    {
        var ml = new MLContext(1);
        var small = Cifar10.ToDataView(ml, _f.TrainSet.Take(256));
        VisionTransformerModel Fit(ComputePrecision precision)
        {
            var o = TrainedModelFixture.SmallOptions();
            o.Epochs = 1;
            o.ImageColumnName = "Pixels";
            o.TrainingPrecision = precision;
            var chain = ml.Transforms.Conversion.MapValueToKey("Label")
                .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
                .Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(small);
            var scores = chain.Transform(small).GetColumn<float[]>("Score").Take(8).ToList();
            scores.Should().OnlyContain(s => s.Length == 10 && s.All(float.IsFinite) && Math.Abs(s.Sum() - 1) < 1e-4);
            return chain.LastTransformer.Model.Model;
        }
        var bf16 = Fit(ComputePrecision.BFloat16);
        var fp32 = Fit(ComputePrecision.Float32);
        bf16.Precision.Should().Be(ComputePrecision.Float32, "bf16 is a training mode: the fitted model infers in float32");
        bf16.parameters().Should().OnlyContain(p => p.dtype == TorchSharp.torch.ScalarType.Float32, "master weights stay float32");
        var a = bf16.state_dict();
        var b = fp32.state_dict();
        a.Keys.Max(k => TensorAssert.MaxAbsDiff(a[k], b[k])).Should().BeGreaterThan(1e-4, "the same seed trained in bf16 takes another path than in fp32");
    }

    [Fact]
    public void MLImageInputSavesLoadsInAFreshContextAndProcessAndScoresAsInMemory()
    {
        var ml = new MLContext(1);
        var small = Cifar10.ToDataView(ml, _f.TrainSet.Take(300));
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 1;
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(small);
        var test = Cifar10.ToDataView(ml, _f.TestSet.Take(6));
        var scores = model.Transform(test).GetColumn<float[]>("Score").ToList();
        scores.Should().HaveCount(6).And.OnlyContain(s => s.Length == 10 && Math.Abs(s.Sum() - 1) < 1e-4);
        var engine = ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(model);
        var predicted = engine.Predict(new ImageRow { Image = Cifar10.CreateImage(_f.TestSet.GetImage(0)), Label = "cat" }).Score;
        predicted.Should().Equal(scores[0], (a, b) => Math.Abs(a - b) < 1e-5f);
        double accuracy = ml.MulticlassClassification.Evaluate(model.Transform(test)).MicroAccuracy;

        var path = Path.Combine(_f.TempDir, "mlimage.zip");
        ml.Model.SaveAtomically(model, small.Schema, path);

        // a fresh MLContext: Load, GetOutputSchema, Transform + Evaluate, PredictionEngine
        var fresh = new MLContext(2);
        var loaded = fresh.Model.Load(path, out _); // its input schema lacks the MLImage column, as for any ML.NET pipeline over MLImage
        ((VectorDataViewType)loaded.GetOutputSchema(test.Schema)["Score"].Type).Size.Should().Be(10);
        var freshTest = Cifar10.ToDataView(fresh, _f.TestSet.Take(6));
        var reloaded = loaded.Transform(freshTest).GetColumn<float[]>("Score").ToList();
        for (int i = 0; i < 6; i++) reloaded[i].Should().Equal(scores[i], (a, b) => Math.Abs(a - b) < 1e-5f, $"image {i} scores as in memory");
        fresh.MulticlassClassification.Evaluate(loaded.Transform(freshTest)).MicroAccuracy.Should().Be(accuracy);
        var freshEngine = fresh.Model.CreatePredictionEngine<ImageRow, ScoreRow>(loaded);
        freshEngine.Predict(new ImageRow { Image = Cifar10.CreateImage(_f.TestSet.GetImage(0)), Label = "" }).Score
            .Should().Equal(scores[0], (a, b) => Math.Abs(a - b) < 1e-5f);
        ((IEnumerable<ITransformer>)loaded).OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Should().ContainSingle()
            .Which.Model.ImageColumnName.Should().Be("Image");

        // a fresh process (PredictionEngine on MLImage rows)
        var fromOtherProcess = NewProcess.Scores(path, 6);
        for (int i = 0; i < 6; i++) fromOtherProcess[i].Should().Equal(scores[i], (a, b) => Math.Abs(a - b) < 1e-5f, $"image {i} in a new process");
    }

    [Fact]
    public void ResumeFromCheckpointContinuesInsteadOfRestarting()
    {
        var ml = new MLContext(1);
        var data = Cifar10.ToDataView(ml, _f.TrainSet.Take(256));
        var folder = Path.Combine(_f.TempDir, "ckpt");
        ViTClassificationTrainer.Options Opts(Action<Training.ViTTrainingProgress> onProgress)
        {
            var o = TrainedModelFixture.SmallOptions();
            o.Epochs = 3;
            o.CheckpointFolder = folder;
            o.Progress = new SyncProgress<Training.ViTTrainingProgress>(onProgress);
            return o;
        }
        // 1) simulate a kill after epoch 2
        var killed = Opts(p => { if (p.EpochCompleted && p.Epoch == 2) throw new OperationCanceledException("killed"); });
        var act = () => ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(killed)).Fit(data);
        act.Should().Throw<OperationCanceledException>();
        File.Exists(Path.Combine(folder, "checkpoint.bin")).Should().BeTrue();
        // 2) run again: only epoch 3 runs
        var seen = new List<int>();
        var resumed = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(Opts(p => { if (p.EpochCompleted) seen.Add(p.Epoch); }))).Fit(data);
        seen.Should().Equal(3);
        resumed.LastTransformer.Model.TrainingHistory.Select(h => h.Epoch).Should().Equal(1, 2, 3);
        // 3) same result as an uninterrupted run
        var straightOpts = TrainedModelFixture.SmallOptions();
        straightOpts.Epochs = 3;
        var straight = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(straightOpts)).Fit(data);
        var a = resumed.LastTransformer.Model.Model.parameters().ToArray();
        var b = straight.LastTransformer.Model.Model.parameters().ToArray();
        a.Zip(b).Max(t => TensorAssert.MaxAbsDiff(t.First, t.Second)).Should().BeLessThan(1e-4);
    }

    [Fact]
    public void ModelLoadsInANewProcessWithoutRegistrationAndPredictsIdentically()
    {
        var path = Path.Combine(_f.TempDir, "model-for-new-process.zip");
        _f.Ml.Model.SaveAtomically(_f.Model, _f.Train.Schema, path);
        var fromOtherProcess = NewProcess.Scores(path, 6);
        var engine = _f.Ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(_f.Model);
        fromOtherProcess.Should().HaveCount(6);
        for (int i = 0; i < 6; i++)
            fromOtherProcess[i].Should().Equal(engine.Predict(new ImageRow { Image = Cifar10.CreateImage(_f.TestSet.GetImage(i)), Label = "cat" }).Score);
    }
}
