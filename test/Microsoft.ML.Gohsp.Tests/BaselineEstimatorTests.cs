using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
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

    [Theory]
    [InlineData("gohsp", 0.5, false)]
    [InlineData("gohsp-head-fraction", 0.6, false)]
    [InlineData("somp", 0.6, true)]
    [InlineData("sgmp", 0.5, false)]
    public void ALatencyTargetGivesAModelThatMeetsItByTheLatencyTable(string method, double fraction, bool inMilliseconds)
    {
        var arch = f.Dense.OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single().Model.Architecture;
        var table = LatencyBudgetTests.SyntheticFor(arch);
        double dense = table.ModelMs(arch), target = fraction * dense;
        PruningOptions options = method switch
        {
            // heads in the global allocation (stage 1 spends the latency too), or a fixed fraction of them (the rest of the
            // latency comes from ADMM's projections and cut alone)
            "gohsp" or "gohsp-head-fraction" => new GohspPruningEstimator.Options
            {
                CalibrationImages = 64, SoftPruning = BaselinePrunerTests.Stage(constantRate: true), FineTune = Stage(),
                HeadBudget = method == "gohsp" ? HeadBudget.Global : HeadBudget.Fraction, HeadPruningFraction = 0.25,
                // a fixed fraction of heads is cut at stage 1, which Hard (or Soft) head pruning does; Guided refuses it
                HeadPruning = method == "gohsp" ? HeadPruningMode.Guided : HeadPruningMode.Hard,
            },
            "somp" => new SompPruningEstimator.Options { FineTune = Stage() },
            _ => new SgmpPruningEstimator.Options { Gradual = BaselinePrunerTests.Stage(constantRate: true), FineTune = Stage() },
        };
        if (inMilliseconds) options.TargetLatencyMs = target; else options.TargetLatencyFraction = fraction;
        options.LatencyTable = table;
        var estimator = options switch
        {
            GohspPruningEstimator.Options g => (IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>)f.Ml.Transforms.GohspPrune(g, f.Dense),
            SompPruningEstimator.Options s => f.Ml.Transforms.SompPrune(s, f.Dense),
            _ => f.Ml.Transforms.SgmpPrune((SgmpPruningEstimator.Options)options, f.Dense),
        };
        var pruned = estimator.Fit(f.Dense.Transform(f.Train));
        var report = pruned.Model.PruningReport!;
        output.WriteLine(report.ToJson());
        report.Method.Should().Be(method.Split('-')[0]);

        double achieved = table.ModelMs(pruned.Model.Architecture);
        achieved.Should().BeInRange(0.9 * target, 1.1 * target, "the pruned model meets the latency target by the table within ±10%");
        report.EstimatedLatencyMs.Should().BeApproximately(achieved, 1e-9);
        report.TargetLatencyMs.Should().BeApproximately(target, 1e-9);
        report.DenseLatencyMs.Should().BeApproximately(dense, 1e-9);
        (report.LatencyBatchSize, report.LatencyDevice, report.RequestedSparsity).Should().Be(((int?)64, "synthetic", (double?)null));
        // the latency budget is not the parameter budget: on this table, removing the same fraction of parameters misses it
        var denseVit = f.Dense.OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single().Model.Model;
        var byParams = StructuredProjection.Allocate(arch, StructuredProjection.Magnitude(denseVit), 1 - fraction).PrunedArchitecture(arch);
        Math.Abs(table.ModelMs(byParams) - target).Should().BeGreaterThan(0.1 * target, "a parameter budget at the same fraction would not meet the latency target");
    }

    [Fact]
    public void ALatencyTargetIsCheckedAtFitAgainstTheDenseModel()
    {
        var arch = f.Dense.OfType<MulticlassPredictionTransformer<ViTModelParameters>>().Single().Model.Architecture;
        var table = LatencyBudgetTests.SyntheticFor(arch);
        var options = new SompPruningEstimator.Options { TargetLatencyFraction = 0.5, LatencyTable = table, FineTune = Stage() };
        var estimator = f.Ml.Transforms.SompPrune(options, f.Dense);
        // options are mutable: a conflict set after the estimator was created is reported at Fit, naming the option
        options.Sparsity = 0.5;
        FluentActions.Invoking(() => estimator.Fit(f.Dense.Transform(f.Train))).Should().Throw<ArgumentException>().Where(e => e.ParamName == "Sparsity");
        var tooSlow = new SompPruningEstimator.Options { TargetLatencyMs = 2 * table.ModelMs(arch), LatencyTable = table, FineTune = Stage() };
        FluentActions.Invoking(() => f.Ml.Transforms.SompPrune(tooSlow, f.Dense).Fit(f.Dense.Transform(f.Train)))
            .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "TargetLatencyMs").WithMessage("*dense model already takes*");
        FluentActions.Invoking(() => f.Ml.Transforms.GohspPrune(new GohspPruningEstimator.Options { Sparsity = 0.4, TargetLatencyMs = 5 }, f.Dense))
            .Should().Throw<ArgumentException>().Where(e => e.ParamName == "Sparsity", "the estimator's creation checks the options too");
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
