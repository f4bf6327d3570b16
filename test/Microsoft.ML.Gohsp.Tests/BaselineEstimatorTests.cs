using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>One small dense ViT (cifar-micro, 1 epoch on 256 real CIFAR-10 images) trained through ML.NET, shared by the estimator tests.</summary>
public sealed class SmallDenseViTFixture
{
    public MLContext Ml { get; } = new(seed: 1);
    public Cifar10Dataset TestSet { get; } = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 64);
    public IDataView Train { get; }
    public TransformerChain<ITransformer> Dense { get; }

    public SmallDenseViTFixture()
    {
        Train = Cifar10.ToDataView(Ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 256));
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 1;
        o.ImageColumnName = "Pixels";
        Dense = new TransformerChain<ITransformer>(Prefix(Ml).Append(Ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(Train).ToArray());
    }

    public static EstimatorChain<ITransformer> Prefix(MLContext ml) => ml.Transforms.Conversion.MapValueToKey("Label")
        .Append<ITransformer>(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false));
}

/// <summary>GOHSP, SOMP and SGMP through their ML.NET estimators: pruned models save, load in a fresh context and predict identically.</summary>
public class BaselineEstimatorTests(SmallDenseViTFixture f, ITestOutputHelper output) : IClassFixture<SmallDenseViTFixture>
{
    private static ViTTrainingOptions Stage() => BaselinePrunerTests.Stage();

    private IEstimator<MulticlassPredictionTransformer<ViTModelParameters>> Estimator(string method, double sparsity, ITransformer dense) => method switch
    {
        "gohsp" => f.Ml.Transforms.GohspPrune(new GohspPruningEstimator.Options
            { Sparsity = sparsity, CalibrationImages = 64, SoftPruning = BaselinePrunerTests.Stage(constantRate: true), FineTune = Stage() }, dense),
        "somp" => f.Ml.Transforms.SompPrune(new SompPruningEstimator.Options { Sparsity = sparsity, FineTune = Stage() }, dense),
        "sgmp" => f.Ml.Transforms.SgmpPrune(new SgmpPruningEstimator.Options
            { Sparsity = sparsity, Gradual = BaselinePrunerTests.Stage(constantRate: true), FineTune = Stage() }, dense),
        _ => throw new ArgumentOutOfRangeException(nameof(method)),
    };

    [Theory]
    [InlineData("gohsp")]
    [InlineData("somp")]
    [InlineData("sgmp")]
    public void PrunedModelSavesLoadsAndPredictsIdentically(string method)
    {
        var estimator = Estimator(method, 0.4, f.Dense);
        var pruned = estimator.Fit(f.Dense.Transform(f.Train));
        var report = pruned.Model.PruningReport!;
        output.WriteLine(report.ToJson());
        report.Method.Should().Be(method);
        report.AchievedSparsity.Should().BeApproximately(0.4, 0.01);
        var last = estimator switch
        {
            GohspPruningEstimator g => g.LastReport,
            SompPruningEstimator s => s.LastReport,
            SgmpPruningEstimator s => s.LastReport,
            _ => null,
        };
        last.Should().BeSameAs(report);
        pruned.Model.ParameterCount.Should().Be(report.ParametersAfter);

        var deploy = new TransformerChain<ITransformer>(f.Dense.Take(2).Append<ITransformer>(pruned).ToArray());
        var dir = Directory.CreateTempSubdirectory($"{method}-est-").FullName;
        try
        {
            var zip = Path.Combine(dir, "pruned.zip");
            f.Ml.Model.SaveAtomically(deploy, f.Train.Schema, zip);
            var fresh = new MLContext();
            var loaded = fresh.Model.Load(zip, out _);
            var loadedVit = ((IEnumerable<ITransformer>)loaded).OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single();
            loadedVit.Model.Architecture.Should().Be(pruned.Model.Architecture);
            loadedVit.Model.PruningReportJson.Should().Contain($"\"Method\": \"{method}\"");
            ModelChecks.SamePredictions(f.Ml, deploy, fresh, loaded, f.TestSet, 5);
            var metrics = f.Ml.MulticlassClassification.Evaluate(loaded.Transform(Cifar10.ToDataView(f.Ml, f.TestSet)));
            var before = f.Ml.MulticlassClassification.Evaluate(deploy.Transform(Cifar10.ToDataView(f.Ml, f.TestSet)));
            metrics.MicroAccuracy.Should().BeApproximately(before.MicroAccuracy, 1.0 / f.TestSet.Count + 1e-9,
                "the reloaded zip scores the test images as the in-memory model does (batched and row-by-row scoring may flip one tie)");
            metrics.LogLoss.Should().BeApproximately(before.LogLoss, 1e-4);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BaselinesAppendedAfterTheTrainerPruneTheModelTheChainJustTrained()
    {
        var vit = TrainedModelFixture.SmallOptions();
        vit.Epochs = 1;
        vit.ImageColumnName = "Pixels";
        var chain = SmallDenseViTFixture.Prefix(f.Ml).Append(f.Ml.MulticlassClassification.Trainers.ViTClassification(vit))
            .Append(f.Ml.Transforms.SompPrune(new SompPruningEstimator.Options { Sparsity = 0.5, FineTune = Stage() })).Fit(f.Train);
        var dense = chain.OfType<MulticlassPredictionTransformer<ViTModelParameters>>().First();
        chain.LastTransformer.Model.PruningReport!.ParametersBefore.Should().Be(dense.Model.ParameterCount);
        chain.LastTransformer.Model.PruningReport!.AchievedSparsity.Should().BeApproximately(0.5, 0.01);
    }

    [Fact]
    public void BadInputNamesTheOptionOrModel()
    {
        var ml = f.Ml;
        ((Action)(() => ml.Transforms.SompPrune(1.5))).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "Sparsity");
        ((Action)(() => ml.Transforms.SgmpPrune(0))).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "Sparsity");
        ((Action)(() => ml.Transforms.SgmpPrune(new SgmpPruningEstimator.Options { PruningFrequency = -2 }))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "PruningFrequency");
        ((Action)(() => ml.Transforms.SgmpPrune(new SgmpPruningEstimator.Options { RampFraction = 2 }))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "RampFraction");
        var notVit = ml.Transforms.CopyColumns("Label2", "Label").Fit(f.Train);
        ((Action)(() => ml.Transforms.SgmpPrune(0.4, notVit))).Should().Throw<ArgumentException>().WithMessage("The model passed to SGMP*not a ViT*");
        // no dense model and nothing upstream
        var scored = SmallDenseViTFixture.Prefix(ml).Fit(f.Train).Transform(f.Train);
        ((Action)(() => ml.Transforms.SompPrune(0.4).Fit(scored))).Should().Throw<InvalidOperationException>().WithMessage("SOMP could not find the dense ViT*");
        // wrong label column, named
        ((Action)(() => ml.Transforms.SgmpPrune(0.4, f.Dense, labelColumnName: "Missing").Fit(f.Dense.Transform(f.Train))))
            .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "LabelColumnName").WithMessage("*'Missing'*");
        // a schedule that does not fit the data is rejected before training, naming the option
        ((Action)(() => ml.Transforms.SgmpPrune(new SgmpPruningEstimator.Options { StartStep = 1000, Gradual = Stage(), FineTune = Stage() }, f.Dense)
            .Fit(f.Dense.Transform(f.Train)))).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "StartStep");
    }
}
