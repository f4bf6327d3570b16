using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Transforms.Image;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>GOHSP one stage at a time: head ranking, soft pruning, hard pruning + fine-tuning as separate estimators.</summary>
public class GohspStageEstimatorTests(ITestOutputHelper output)
{
    private static GohspPruningEstimator.Options Options(IDataView? validation = null, HeadPruningMode heads = HeadPruningMode.Hard) => new()
    {
        HeadPruning = heads,
        // the graph's scores compete as they are, so that stage 1 removes heads at this light sparsity
        HeadGraphScoring = HeadGraphScoring.Scaled,
        Sparsity = 0.4,
        HeadPruningFraction = 0.25,
        CalibrationImages = 64,
        SoftPruning = new ViTTrainingOptions { Epochs = 2, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 1.5e-3, MinLearningRate = 1.5e-3, WarmupEpochs = 0 },
        FineTune = new ViTTrainingOptions { Epochs = 1, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 5e-4, WarmupEpochs = 0.5 },
        ValidationSet = validation,
    };

    /// <summary>The dense pipeline the stage tests prune: 512 training images, the small ViT trained 2 epochs on planar pixels.</summary>
    private static (IDataView Train, EstimatorChain<ImagePixelExtractingTransformer> Prefix, ViTClassificationTrainer.Options Vit,
        TransformerChain<MulticlassPredictionTransformer<ViTModelParameters>> Dense) TrainDense(MLContext ml)
    {
        var train = Cifar10.ToDataView(ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 512));
        var vit = TrainedModelFixture.SmallOptions();
        vit.Epochs = 2;
        vit.ImageColumnName = "Pixels";
        var prefix = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false));
        return (train, prefix, vit, prefix.Append(ml.MulticlassClassification.Trainers.ViTClassification(vit)).Fit(train));
    }

    [Fact]
    public void StagesOneAtATimeSurviveSaveLoadBetweenStagesAndEqualTheWholePipeline()
    {
        var ml = new MLContext(1);
        var (train, prefix, vit, dense) = TrainDense(ml);
        var testSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 128);
        var validation = dense.Transform(Cifar10.ToDataView(ml, testSet));
        var scored = dense.Transform(train);

        // stage 1 → a dense-shaped copy with a head mask and the stationary probabilities of the kept heads
        var ranked = ml.Transforms.GohspRankHeads(Options(validation), dense).Fit(scored);
        var r1 = ranked.Model.PruningReport!;
        r1.Stage.Should().Be(GohspPruner.HeadMaskedStage);
        r1.ParametersAfter.Should().Be(r1.ParametersBefore);
        ranked.Model.Model.KeptHeads.Should().NotBeNull();
        ranked.Model.Model.KeptHeads!.Select(k => k.ToArray()).Should().BeEquivalentTo(r1.Blocks.Select(b => b.KeptHeads), o => o.WithStrictOrdering());
        r1.Blocks.Sum(b => b.KeptHeads.Length).Should().BeLessThan(r1.Blocks.Sum(b => b.DenseHeads), "stage 1 masks heads");
        r1.Blocks.Should().OnlyContain(b => r1.Stationary(b).Length == b.KeptHeads.Length && r1.Stationary(b).All(p => p > 0));
        r1.ValidationAccuracy.Keys.Should().BeEquivalentTo("dense", "head-masked");
        dense.LastTransformer.Model.Model.KeptHeads.Should().BeNull("the input model is not modified");

        // save the head-masked model, load it in a fresh context: mask, report and scores survive
        var dir = Directory.CreateTempSubdirectory("gohsp-stages-").FullName;
        var zip = Path.Combine(dir, "head-masked.zip");
        var maskedChain = new TransformerChain<ITransformer>(dense.Take(2).Append<ITransformer>(ranked).ToArray());
        ml.Model.SaveAtomically(maskedChain, train.Schema, zip);
        var loaded = new MLContext(2).Model.Load(zip, out _);
        var loadedVit = ViTLocator.FindViT(loaded)!.Model;
        loadedVit.Model.KeptHeads.Should().BeEquivalentTo(ranked.Model.Model.KeptHeads, o => o.WithStrictOrdering());
        loadedVit.PruningReport!.Stage.Should().Be(GohspPruner.HeadMaskedStage);
        loadedVit.PruningReport.Gohsp().StationaryProbabilities.Should().BeEquivalentTo(r1.Gohsp().StationaryProbabilities);
        var e1 = ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(maskedChain);
        var e2 = ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(loaded);
        var row = new ImageRow { Image = Cifar10.CreateImage(testSet.GetImage(0)), Label = "cat" };
        e2.Predict(row).Score.Should().Equal(e1.Predict(row).Score);

        // stages 2 and 3 continue from the LOADED model (explicitly); distillation itself is tested in GohspConvergenceTests
        var options = Options(validation);
        var soft = ml.Transforms.GohspSoftPrune(options, loaded).Fit(loaded.Transform(train));
        var r2 = soft.Model.PruningReport!;
        r2.Stage.Should().Be(GohspPruner.SoftPrunedStage);
        r2.Gohsp().ResidualHistory.Should().HaveCount(2);
        r2.Blocks.Select(b => b.KeptHeads).Should().BeEquivalentTo(r1.Blocks.Select(b => b.KeptHeads), o => o.WithStrictOrdering());
        soft.Model.Model.KeptHeads.Should().NotBeNull();
        var final = ml.Transforms.GohspHardPrune(options, soft, teacher: dense).Fit(soft.Transform(loaded.Transform(train)));
        var r3 = final.Model.PruningReport!;
        output.WriteLine(r3.ToJson());
        r3.Stage.Should().Be(PruningReport.FinalStage);
        r3.AchievedSparsity.Should().BeApproximately(0.4, 0.01);
        r3.ParametersBefore.Should().Be(r1.ParametersBefore);
        r3.Gohsp().ResidualHistory.Should().Equal(r2.Gohsp().ResidualHistory);
        r3.Blocks.Select(b => b.KeptHeads).Should().BeEquivalentTo(r1.Blocks.Select(b => b.KeptHeads), o => o.WithStrictOrdering());
        r3.Gohsp().StationaryProbabilities.Should().BeEquivalentTo(r1.Gohsp().StationaryProbabilities);
        r3.ValidationAccuracy.Keys.Should().BeEquivalentTo("dense", "head-masked", "soft-pruned", "hard-pruned", "fine-tuned");
        final.Model.Model.KeptHeads.Should().BeNull("masked heads are physically gone");
        final.Model.Architecture.Blocks.Select(b => b.Heads).Should().Equal(r1.Blocks.Select(b => b.KeptHeads.Length));

        // the three stages appended in one chain give the same model as GohspPrune with the same options
        var o3 = Options();
        var staged = prefix.Append(ml.MulticlassClassification.Trainers.ViTClassification(vit))
            .Append(ml.Transforms.GohspRankHeads(o3)).Append(ml.Transforms.GohspSoftPrune(o3)).Append(ml.Transforms.GohspHardPrune(o3)).Fit(train);
        var whole = ml.Transforms.GohspPrune(Options(), dense).Fit(scored);
        staged.LastTransformer.Model.Architecture.Should().Be(whole.Model.Architecture);
        using var x = randn(4, 3, 32, 32);
        using (no_grad())
        using (var a = staged.LastTransformer.Model.Model.forward(x))
        using (var b = whole.Model.Model.forward(x))
            TensorAssert.MaxAbsDiff(a, b).Should().BeLessThan(1e-4);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void GuidedStagesFixNoHeadCarryTheRankingThroughSaveLoadAndEqualTheWholePipeline()
    {
        var ml = new MLContext(1);
        var (train, _, _, dense) = TrainDense(ml);
        var scored = dense.Transform(train);
        var o = Options(heads: HeadPruningMode.Guided);

        var ranked = ml.Transforms.GohspRankHeads(o, dense).Fit(scored);
        ranked.Model.Model.KeptHeads.Should().BeNull("guided head pruning masks no head at stage 1");
        var r1 = ranked.Model.PruningReport!;
        r1.Blocks.Should().OnlyContain(b => b.KeptHeads.Length == b.DenseHeads && r1.Stationary(b).All(p => p > 0),
            "the stage-1 report ranks every head");

        // the ranking travels in the saved model to stage 2
        var dir = Directory.CreateTempSubdirectory("gohsp-guided-").FullName;
        var zip = Path.Combine(dir, "ranked.zip");
        ml.Model.SaveAtomically(new TransformerChain<ITransformer>(dense.Take(2).Append<ITransformer>(ranked).ToArray()), train.Schema, zip);
        var loaded = new MLContext(2).Model.Load(zip, out _);
        ViTLocator.FindViT(loaded)!.Model.PruningReport!.Gohsp().StationaryProbabilities
            .Should().BeEquivalentTo(r1.Gohsp().StationaryProbabilities);
        var soft = ml.Transforms.GohspSoftPrune(o, loaded).Fit(loaded.Transform(train));
        var final = ml.Transforms.GohspHardPrune(o, soft, teacher: dense).Fit(soft.Transform(loaded.Transform(train)));
        final.Model.PruningReport!.AchievedSparsity.Should().BeApproximately(0.4, 0.01);

        var whole = ml.Transforms.GohspPrune(Options(heads: HeadPruningMode.Guided), dense).Fit(scored);
        final.Model.Architecture.Should().Be(whole.Model.Architecture, "the staged pipeline and GohspPrune make the same guided choices");
        using var x = randn(4, 3, 32, 32);
        using (no_grad())
        using (var a = final.Model.Model.forward(x))
        using (var b = whole.Model.Model.forward(x))
            TensorAssert.MaxAbsDiff(a, b).Should().BeLessThan(1e-4);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void StageEstimatorsRejectBadInputClearly()
    {
        var ml = new MLContext(1);
        var notVit = ml.Transforms.CopyColumns("Y", "X").Fit(ml.Data.LoadFromEnumerable(new[] { new Row { X = 1 } }));
        ml.Invoking(m => m.Transforms.GohspRankHeads(Options(), notVit)).Should().Throw<ArgumentException>().WithMessage("*not a ViT from Microsoft.ML.Gohsp*");
        ml.Invoking(m => m.Transforms.GohspHardPrune(Options(), null, teacher: notVit)).Should().Throw<ArgumentException>().WithMessage("*teacher*not a ViT*");
        var bad = Options();
        bad.HeadPruningFraction = 1;
        ml.Invoking(m => m.Transforms.GohspRankHeads(bad)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*HeadPruningFraction*");
    }

    private sealed class Row { public float X { get; set; } }
}
