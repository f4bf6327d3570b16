using CustomPruningMethod;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// A pruning method the library does not know (<see cref="RandomStructuredPruning"/>, compiled outside the library in samples/CustomPruningMethod) runs through
/// <see cref="PruningProtocol"/> and the generic ML.NET estimator unchanged: the budget is met and the report names it.
/// </summary>
public class RandomStructuredPruningTests(SmallDenseViTFixture f, ITestOutputHelper output) : IClassFixture<SmallDenseViTFixture>
{
    [Fact]
    public void TheProtocolSplitsTheEpochBudgetOverTheMethodsStages()
    {
        var o = PruningProtocol.ApplyEpochBudget(new RandomPruningOptions { Sparsity = 0.3 }, 3, new ViTTrainingOptions { CheckpointFolder = "ckpt" });
        (o.FineTune.Epochs, o.TotalTrainingEpochs).Should().Be((3, 3));
        o.FineTune.CheckpointFolder.Should().Be(Path.Combine("ckpt", "random-fine-tune"));
        ((Action)(() => PruningProtocol.ApplyEpochBudget(new RandomPruningOptions(), 0))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "totalEpochs").WithMessage("*≥ 1 for random*");
        o.Method.Should().BeNull("the library's list of method names does not know this method");
    }

    [Fact]
    public void TheProtocolRunsAMethodItDoesNotKnow()
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 128);
        var options = PruningProtocol.ApplyEpochBudget(new RandomPruningOptions { Sparsity = 0.5 }, 1, BaselinePrunerTests.Stage());
        var log = new List<string>();
        var result = PruningProtocol.Run(new PruningContext(dense, train, train.Take(64)) { Log = log.Add }, options);
        using var pruned = result.Model;
        var r = result.Report;
        output.WriteLine(string.Join("\n", log));

        r.Method.Should().Be("random");
        r.AchievedSparsity.Should().BeApproximately(0.5, 0.01);
        r.ParametersAfter.Should().Be(pruned.Architecture.ParameterCount).And.BeLessThanOrEqualTo((long)(0.51 * dense.Architecture.ParameterCount));
        r.Blocks.Select(b => b.KeptHeads.Length).Should().Equal(pruned.Architecture.Blocks.Select(b => b.Heads));
        r.ValidationAccuracy.Keys.Should().BeEquivalentTo(["dense", "hard-pruned", "fine-tuned"]);
        log.Should().Contain(l => l.StartsWith("[random] kept heads per block", StringComparison.Ordinal)).And.Contain(l => l.StartsWith("[random-fine-tune]", StringComparison.Ordinal));
    }

    [Fact]
    public void TheGenericEstimatorRunsAMethodItDoesNotKnow()
    {
        var options = new RandomPruningOptions { Sparsity = 0.4, FineTune = BaselinePrunerTests.Stage(), ValidationSet = f.Dense.Transform(f.Train) };
        var estimator = f.Ml.Transforms.Prune(options, f.Dense);
        var scored = f.Dense.Transform(f.Train);
        var pruned = estimator.Fit(scored);
        var report = pruned.Model.PruningReport!;
        output.WriteLine(report.ToJson());

        estimator.LastReport.Should().BeSameAs(report);
        report.Method.Should().Be("random");
        report.AchievedSparsity.Should().BeApproximately(0.4, 0.01);
        pruned.Model.ParameterCount.Should().Be(report.ParametersAfter).And.BeLessThan(report.ParametersBefore);
        report.ValidationAccuracy.Keys.Should().Contain("fine-tuned");
        var metrics = f.Ml.MulticlassClassification.Evaluate(pruned.Transform(scored));
        double.IsFinite(metrics.LogLoss).Should().BeTrue();
    }
}
