using FluentAssertions;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Tests;

public class PruningProtocolTests
{
    [Theory]
    [InlineData(10)]
    [InlineData(7)]
    [InlineData(2)]
    public void EveryMethodGetsTheSameEpochsWithTheSameOptimiserAndSeed(int total)
    {
        var b = new ViTTrainingOptions { LearningRate = 3e-4, MinLearningRate = 1e-6, BatchSize = 48, Seed = 11, WeightDecay = 0.02, RandomCropPadding = 2, NumberOfThreads = 2 };
        var all = Enum.GetValues<PruningMethod>().Select(m => PruningProtocol.ForEpochBudget(m, 0.4, total, b)).ToArray();
        all.Select(o => o.TotalTrainingEpochs).Should().AllBeEquivalentTo(total);
        all.Select(o => o.Method).Should().Equal(PruningMethod.Gohsp, PruningMethod.Somp, PruningMethod.Sgmp);
        all.Should().OnlyContain(o => o.Sparsity == 0.4);

        var g = (GohspOptions)all[0]; var somp = (SompOptions)all[1]; var sgmp = (SgmpOptions)all[2];
        (g.SoftPruning.Epochs, g.FineTune.Epochs).Should().Be((total / 2, total - total / 2));
        (sgmp.Gradual.Epochs, sgmp.FineTune.Epochs).Should().Be((total / 2, total - total / 2));
        somp.FineTune.Epochs.Should().Be(total);
        var stages = new[] { g.SoftPruning, g.FineTune, sgmp.Gradual, sgmp.FineTune, somp.FineTune };
        stages.Should().OnlyContain(s => s.BatchSize == 48 && s.Seed == 11 && s.WeightDecay == 0.02
                                         && s.RandomCropPadding == 2 && s.NumberOfThreads == 2);
        // one schedule over the E epochs for every method: SOMP runs it whole; GOHSP and SGMP run its first half (down to
        // the rate at the boundary) before the cut and its second half (from that rate) after it
        double boundary = PruningProtocol.BoundaryRate(b, total / 2, total);
        boundary.Should().BeInRange(1e-6, 3e-4);
        somp.FineTune.Should().Match<ViTTrainingOptions>(s => s.LearningRate == 3e-4 && s.MinLearningRate == 1e-6
                                                              && s.WarmupEpochs == Math.Min(b.WarmupEpochs, total / 4.0));
        new[] { g.SoftPruning, sgmp.Gradual }.Should().OnlyContain(s => s.LearningRate == 3e-4 && s.MinLearningRate == boundary
                                                                      && s.WarmupEpochs == Math.Min(b.WarmupEpochs, total / 4.0));
        new[] { g.FineTune, sgmp.FineTune }.Should().OnlyContain(s => s.LearningRate == boundary && s.MinLearningRate == 1e-6
                                                                   && s.WarmupEpochs == Math.Min(b.WarmupEpochs, (total - total / 2) / 4.0));
        stages.Select(s => s.Mean).Append(b.Mean).Distinct(ReferenceEqualityComparer.Instance).Should().HaveCount(6, "every stage gets its own copy of the arrays");
    }

    [Fact]
    public void DefaultOptionsAlreadyGiveEveryMethodTenEpochs()
    {
        new PruningOptions[] { new GohspOptions(), new SompOptions(), new SgmpOptions() }.Select(o => o.TotalTrainingEpochs).Should().AllBeEquivalentTo(10);
    }

    [Fact]
    public void ApplyEpochBudgetConfiguresEstimatorOptionsAndSeparatesCheckpoints()
    {
        var o = PruningProtocol.ApplyEpochBudget(new SgmpPruningEstimator.Options { Sparsity = 0.3, LabelColumnName = "L" }, 6,
            new ViTTrainingOptions { CheckpointFolder = "ckpt" });
        (o.Sparsity, o.LabelColumnName, o.Gradual.Epochs, o.FineTune.Epochs).Should().Be((0.3, "L", 3, 3));
        o.Gradual.CheckpointFolder.Should().Be(Path.Combine("ckpt", "sgmp-gradual"));
        o.FineTune.CheckpointFolder.Should().Be(Path.Combine("ckpt", "sgmp-fine-tune"));
    }

    /// <summary>A longer first stage moves the boundary inside the one schedule; a one-stage method ignores it; a split that empties a stage is refused.</summary>
    [Fact]
    public void TheFirstStageCanTakeMoreOfTheEpochsOnTheSameSchedule()
    {
        var b = new ViTTrainingOptions { LearningRate = 3e-4, MinLearningRate = 1e-6, WarmupEpochs = 1 };
        var g = PruningProtocol.ApplyEpochBudget(new GohspOptions { Sparsity = 0.5 }, 4, b, firstStageEpochs: 3);
        (g.SoftPruning.Epochs, g.FineTune.Epochs).Should().Be((3, 1));
        double boundary = PruningProtocol.BoundaryRate(b, 3, 4);
        boundary.Should().BeLessThan(PruningProtocol.BoundaryRate(b, 2, 4), "three of four epochs reach further down the cosine");
        (g.SoftPruning.MinLearningRate, g.FineTune.LearningRate).Should().Be((boundary, boundary));
        var sgmp = PruningProtocol.ApplyEpochBudget(new SgmpOptions { Sparsity = 0.5 }, 4, b, firstStageEpochs: 1);
        (sgmp.Gradual.Epochs, sgmp.FineTune.Epochs).Should().Be((1, 3));
        PruningProtocol.ApplyEpochBudget(new SompOptions { Sparsity = 0.5 }, 4, b, firstStageEpochs: 3).FineTune.Epochs.Should().Be(4);
        foreach (int bad in new[] { 0, 4, -1 })
            FluentActions.Invoking(() => PruningProtocol.ApplyEpochBudget(new GohspOptions { Sparsity = 0.5 }, 4, b, bad))
                .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "firstStageEpochs").WithMessage("*between 1 and 3*");
    }

    [Fact]
    public void TooFewEpochsOrABadSparsityAreRejected()
    {
        ((Action)(() => PruningProtocol.ForEpochBudget(PruningMethod.Gohsp, 0.4, 1))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "totalEpochs").WithMessage("*≥ 2 for Gohsp*");
        ((Action)(() => PruningProtocol.ForEpochBudget(PruningMethod.Somp, 0.4, 0))).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "totalEpochs");
        PruningProtocol.ForEpochBudget(PruningMethod.Somp, 0.4, 1).TotalTrainingEpochs.Should().Be(1);
        ((Action)(() => PruningProtocol.ForEpochBudget(PruningMethod.Sgmp, 1.4, 4))).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "Sparsity");
    }
}
