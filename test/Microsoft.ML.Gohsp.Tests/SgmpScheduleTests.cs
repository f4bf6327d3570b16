using FluentAssertions;
using Microsoft.ML.Gohsp.Pruning;

namespace Microsoft.ML.Gohsp.Tests;

public class SgmpScheduleTests
{
    [Fact]
    public void CubicScheduleMatchesHandComputedValues()
    {
        // s_i = 0.1, s_f = 0.5, t0 = 10, dt = 5, n = 4: the ramp spans steps 10..30
        var s = new SgmpSchedule(0.1, 0.5, startStep: 10, frequency: 5, pruningSteps: 4);
        s.EndStep.Should().Be(30);
        s.SparsityAt(0).Should().Be(0.1, "before t0 the target is s_i");
        s.SparsityAt(9).Should().Be(0.1);
        s.SparsityAt(10).Should().BeApproximately(0.1, 1e-12, "at t0: 0.5 + (0.1 - 0.5)·1³");
        s.SparsityAt(15).Should().BeApproximately(0.33125, 1e-12, "0.5 − 0.4·0.75³ = 0.5 − 0.16875");
        s.SparsityAt(20).Should().BeApproximately(0.45, 1e-12, "mid-ramp: 0.5 − 0.4·0.5³ = 0.45");
        s.SparsityAt(25).Should().BeApproximately(0.49375, 1e-12, "0.5 − 0.4·0.25³");
        s.SparsityAt(30).Should().Be(0.5, "the end of the ramp is s_f");
        s.SparsityAt(1000).Should().Be(0.5, "after the ramp the target stays s_f");
        Enumerable.Range(0, 40).Where(t => s.IsPruningStep(t)).Should().Equal(10, 15, 20, 25, 30);
    }

    [Fact]
    public void OptionsDeriveTheNumberOfPruningStepsFromTheRampFraction()
    {
        // 100 steps, ramp over the first 75%: automatic dt = ⌈75/10⌉ = 8, n = ⌊75/8⌋ = 9, the ramp ends at step 72
        var auto = SgmpSchedule.For(new SgmpOptions { Sparsity = 0.6 }, 100);
        (auto.StartStep, auto.Frequency, auto.PruningSteps, auto.EndStep).Should().Be((0L, 8L, 9, 72L));
        auto.InitialSparsity.Should().Be(0);
        auto.FinalSparsity.Should().Be(0.6);

        var manual = SgmpSchedule.For(new SgmpOptions { Sparsity = 0.6, InitialSparsity = 0.1, StartStep = 20, PruningFrequency = 10, RampFraction = 0.5 }, 100);
        (manual.StartStep, manual.Frequency, manual.PruningSteps, manual.EndStep).Should().Be((20L, 10L, 3, 50L));
        manual.SparsityAt(20).Should().Be(0.1);

        // RampFraction 1 still ends before the last step of the phase (a pruning step there would never happen)
        SgmpSchedule.For(new SgmpOptions { RampFraction = 1, PruningFrequency = 1 }, 10).EndStep.Should().Be(9);
    }

    [Fact]
    public void BadScheduleOptionsNameTheOption()
    {
        Action For(SgmpOptions o, long steps = 100) => () => SgmpSchedule.For(o, steps);
        For(new SgmpOptions { StartStep = 75 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "StartStep").WithMessage("*StartStep (75)*step 75*");
        For(new SgmpOptions { PruningFrequency = 80 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "PruningFrequency").WithMessage("*PruningFrequency (80 steps)*longer than the ramp (75 steps*");
        For(new SgmpOptions { PruningFrequency = -1 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "PruningFrequency");
        For(new SgmpOptions { Sparsity = 0.4, InitialSparsity = 0.4 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "InitialSparsity").WithMessage("*[0, Sparsity = 0.4)*");
        For(new SgmpOptions { InitialSparsity = -0.1 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "InitialSparsity");
        For(new SgmpOptions { RampFraction = 0 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "RampFraction");
        For(new SgmpOptions { RampFraction = 1.5 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "RampFraction");
        For(new SgmpOptions { StartStep = -3 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "StartStep");
        For(new SgmpOptions { Sparsity = 1 }).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "Sparsity").WithMessage("*(0, 1)*");
        For(new SgmpOptions { Gradual = null }).Should().Throw<ArgumentNullException>().Where(e => e.ParamName == "Gradual");
        ((Action)(() => new SgmpSchedule(0, 0.5, 0, frequency: 0, pruningSteps: 3))).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "frequency");
    }
}
