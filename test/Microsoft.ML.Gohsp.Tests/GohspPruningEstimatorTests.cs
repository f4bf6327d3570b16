using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

public class GohspPruningEstimatorTests(ITestOutputHelper output)
{
    private static GohspPruningEstimator.Options Small(double sparsity) => new()
    {
        Sparsity = sparsity,
        HeadPruningFraction = 0.25,
        CalibrationImages = 64,
        SoftPruning = new ViTTrainingOptions { Epochs = 2, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 1.5e-3, MinLearningRate = 1.5e-3, WarmupEpochs = 0 },
        FineTune = new ViTTrainingOptions { Epochs = 1, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 5e-4, WarmupEpochs = 0.5 },
    };

    [Fact]
    public void AppendedAfterTheTrainerAndStartingFromATrainedModelBothProduceLoadableSmallerModels()
    {
        var ml = new MLContext(1);
        var trainSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 1024);
        var testSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 256);
        var train = Cifar10.ToDataView(ml, trainSet);
        var test = Cifar10.ToDataView(ml, testSet);
        var vit = TrainedModelFixture.SmallOptions();
        vit.Epochs = 2;
        vit.ImageColumnName = "Pixels";
        var prefix = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false));

        // 1) one chain: trainer then GOHSP
        var chain = prefix.Append(ml.MulticlassClassification.Trainers.ViTClassification(vit))
            .Append(ml.Transforms.GohspPrune(Small(0.4))).Fit(train);
        var pruned = chain.LastTransformer;
        var report = pruned.Model.PruningReport!;
        output.WriteLine(report.ToJson());
        report.AchievedSparsity.Should().BeApproximately(0.4, 0.01);
        pruned.Model.ParameterCount.Should().Be(report.ParametersAfter);
        var dense = chain.OfType<ITransformer>().OfType<MulticlassPredictionTransformer<ViTModelParameters>>().First();
        dense.Model.ParameterCount.Should().Be(report.ParametersBefore);

        var metrics = ml.MulticlassClassification.Evaluate(chain.Transform(test));
        metrics.MicroAccuracy.Should().BeGreaterThan(0.12, "a pruned, fine-tuned model is still a classifier");

        // save → load in a fresh context → identical scores; the file is smaller in proportion
        var dir = Directory.CreateTempSubdirectory("gohsp-est-").FullName;
        var prunedZip = Path.Combine(dir, "pruned.zip");
        var denseZip = Path.Combine(dir, "dense.zip");
        var deploy = new TransformerChain<ITransformer>(chain.Take(2).Append<ITransformer>(pruned).ToArray());
        ml.Model.SaveAtomically(deploy, train.Schema, prunedZip);
        ml.Model.SaveAtomically(new TransformerChain<ITransformer>(chain.Take(3).ToArray()), train.Schema, denseZip);
        double sizeRatio = (double)new FileInfo(prunedZip).Length / new FileInfo(denseZip).Length;
        output.WriteLine($"zip size ratio {sizeRatio:F3}, parameter ratio {(double)report.ParametersAfter / report.ParametersBefore:F3}");
        sizeRatio.Should().BeApproximately((double)report.ParametersAfter / report.ParametersBefore, 0.08);

        var fresh = new MLContext();
        var loaded = fresh.Model.Load(prunedZip, out _);
        var e1 = ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(deploy);
        var e2 = fresh.Model.CreatePredictionEngine<ImageRow, ScoreRow>(loaded);
        for (int i = 0; i < 5; i++)
        {
            var row = new ImageRow { Image = Cifar10.CreateImage(testSet.GetImage(i)), Label = "cat" };
            e2.Predict(row).Score.Should().Equal(e1.Predict(row).Score);
        }
        var otherProcess = NewProcess.Scores(prunedZip, 3);
        for (int i = 0; i < 3; i++)
            otherProcess[i].Should().Equal(e1.Predict(new ImageRow { Image = Cifar10.CreateImage(testSet.GetImage(i)), Label = "cat" }).Score);
        var loadedVit = ((IEnumerable<ITransformer>)loaded).OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single();
        loadedVit.Model.Architecture.Should().Be(pruned.Model.Architecture);
        loadedVit.Model.PruningReportJson.Should().Contain("\"ResidualHistory\"");

        // 2) starting from an already trained model (here: the dense part of the chain, passed explicitly)
        var denseChain = new TransformerChain<ITransformer>(chain.Take(3).ToArray());
        var explicitPruned = ml.Transforms.GohspPrune(Small(0.5), denseChain).Fit(denseChain.Transform(train));
        explicitPruned.Model.PruningReport!.AchievedSparsity.Should().BeApproximately(0.5, 0.01);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void AModelThatIsNotAViTFromThisLibraryIsRejected()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(new[] { new { X = 1f } }.Select(a => new Row { X = a.X }));
        var notVit = ml.Transforms.CopyColumns("Y", "X").Fit(data);
        var act = () => ml.Transforms.GohspPrune(0.4, notVit);
        act.Should().Throw<ArgumentException>().WithMessage("*not a ViT from Microsoft.ML.Gohsp*");
        var bad = () => ml.Transforms.GohspPrune(1.5);
        bad.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Sparsity*");
    }

    private sealed class Row { public float X { get; set; } }
}
