using System.Text.Json;
using FluentAssertions;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit;

namespace Microsoft.ML.Gohsp.Tests;

public class LatencyBudgetTests
{
    /// <summary>
    /// A made-up latency table for cifar-tiny in which attention is expensive per head and the MLP cheap: unlike the
    /// parameter count (where the MLP holds two thirds of a block), so spending latency and spending parameters differ.
    /// </summary>
    private static LatencyModel Synthetic()
    {
        int[] dims = [8, 16, 24, 32, 40, 48, 56, 64];
        int[] mlp = Enumerable.Range(1, 12).Select(i => i * 64).ToArray();
        double[][] Attention(double scale) => Enumerable.Range(1, 3).Select(h => dims.Select(w => scale * h * (1.0 + 0.15 * w)).ToArray()).ToArray();
        return new LatencyModel
        {
            Device = "synthetic", Config = "cifar-tiny, batch 64", Batch = 64, HeadDims = dims,
            AttentionMs = Attention(1.0), LastAttentionMs = Attention(0.5),
            MlpWidths = mlp, MlpMs = mlp.Select(w => 0.1 + 0.001 * w).ToArray(), LastMlpMs = mlp.Select(w => 0.05 + 0.0002 * w).ToArray(),
            FixedMs = 0.8, LastFixedMs = 0.4, NonBlockMs = 1.5,
        };
    }

    /// <summary>
    /// A made-up latency table for any architecture with the same shape as <see cref="Synthetic"/>'s: per head, a fixed part
    /// and a part growing with its width; the MLP cheap per neuron; the parts outside the blocks, which no budget prunes,
    /// a large share (40 ms against ~70 ms of blocks for cifar-micro), so that a fraction of the latency and the same
    /// fraction of the parameters are far apart. Deterministic, so tests need not time anything.
    /// </summary>
    internal static LatencyModel SyntheticFor(ViTArchitecture arch, int batch = 64)
    {
        int maxDim = arch.Blocks.Max(b => Math.Max(b.QkDim, b.VDim)), maxMlp = arch.Blocks.Max(b => b.MlpHidden);
        int[] dims = Enumerable.Range(1, maxDim / 8).Select(i => i * 8).ToArray();
        int[] mlp = Enumerable.Range(1, maxMlp / 16).Select(i => i * 16).ToArray();
        double[][] Attention(double scale) => Enumerable.Range(1, arch.Blocks.Max(b => b.Heads))
            .Select(h => dims.Select(w => scale * h * (1.0 + 0.15 * w)).ToArray()).ToArray();
        return new LatencyModel
        {
            Device = "synthetic", Config = "synthetic", Batch = batch, HeadDims = dims,
            AttentionMs = Attention(1.0), LastAttentionMs = Attention(0.5),
            MlpWidths = mlp, MlpMs = mlp.Select(w => 0.1 + 0.004 * w).ToArray(), LastMlpMs = mlp.Select(w => 0.05 + 0.001 * w).ToArray(),
            FixedMs = 0.8, LastFixedMs = 0.4, NonBlockMs = 40,
        };
    }

    [Fact]
    public void LatencyTargetOptionsAreCheckedNamingTheOption()
    {
        void Throws<T>(PruningOptions o, string name, string message = "*") where T : ArgumentException =>
            FluentActions.Invoking(o.Validate).Should().Throw<T>().Where(e => e.ParamName == name).WithMessage(message);
        var table = SyntheticFor(ViTArchitecture.CifarMicro());
        Throws<ArgumentException>(new SompOptions { Sparsity = 0.5, TargetLatencyMs = 10 }, "Sparsity", "*set one of them*");
        Throws<ArgumentException>(new GohspOptions { TargetLatencyFraction = 0.5, Sparsity = 0.4 }, "Sparsity", "*TargetLatencyFraction*");
        Throws<ArgumentException>(new SgmpOptions { TargetLatencyMs = 10, TargetLatencyFraction = 0.5 }, "TargetLatencyFraction", "*not both*");
        foreach (double ms in new[] { 0, -1, double.NaN, double.PositiveInfinity })
            Throws<ArgumentOutOfRangeException>(new SompOptions { TargetLatencyMs = ms }, "TargetLatencyMs");
        foreach (double f in new[] { 0, 1, 1.5, double.NaN })
            Throws<ArgumentOutOfRangeException>(new SompOptions { TargetLatencyFraction = f }, "TargetLatencyFraction");
        Throws<ArgumentOutOfRangeException>(new SompOptions { TargetLatencyFraction = 0.5, LatencyBatchSize = 0 }, "LatencyBatchSize");
        Throws<ArgumentOutOfRangeException>(new SompOptions { TargetLatencyFraction = 0.5, LatencyTable = table, LatencyBatchSize = 32 }, "LatencyBatchSize", "*batches of 64*");
        Throws<ArgumentException>(new SompOptions { LatencyTable = table }, "LatencyTable", "*no latency target*");
        Throws<ArgumentOutOfRangeException>(new SgmpOptions { TargetLatencyFraction = 0.5, InitialSparsity = 1 }, "InitialSparsity");
        // valid: a latency target alone (Sparsity untouched), and Sparsity alone
        new SompOptions { TargetLatencyFraction = 0.5, LatencyTable = table }.Validate();
        new SgmpOptions { TargetLatencyMs = 3 }.Validate();
        new SompOptions { Sparsity = 0.5 }.Validate();
    }

    [Fact]
    public void LatencyTargetsAreCheckedAgainstTheDenseModelAndTheFloors()
    {
        var arch = ViTArchitecture.CifarMicro();
        var table = SyntheticFor(arch);
        double dense = table.ModelMs(arch);
        var budget = PruningBudget.Resolve(new SompOptions { TargetLatencyFraction = 0.5, LatencyTable = table }, arch);
        budget.Fraction.Should().BeApproximately(0.5, 1e-12);
        budget.TargetMs.Should().BeApproximately(dense / 2, 1e-9);
        PruningBudget.Resolve(new SompOptions { TargetLatencyMs = 0.7 * dense, LatencyTable = table }, arch).Fraction.Should().BeApproximately(0.3, 1e-12);
        PruningBudget.Resolve(new SompOptions { Sparsity = 0.3 }, arch).Cost.Should().BeNull();

        FluentActions.Invoking(() => PruningBudget.Resolve(new SompOptions { TargetLatencyMs = dense * 1.01, LatencyTable = table }, arch))
            .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "TargetLatencyMs").WithMessage("*dense model already takes*");
        FluentActions.Invoking(() => PruningBudget.Resolve(new SompOptions { TargetLatencyMs = 41, LatencyTable = table }, arch))
            .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "TargetLatencyMs").WithMessage("*smallest model the Budget floors allow*");
        FluentActions.Invoking(() => PruningBudget.Resolve(new SompOptions { TargetLatencyFraction = 0.5, LatencyTable = Synthetic() },
                ViTArchitecture.Uniform(32, 4, 192, 2, 6, 384, 10)))
            .Should().Throw<ArgumentException>().Where(e => e.ParamName == "LatencyTable").WithMessage("*up to 3 heads*");
    }

    private static BlockImportance[] Importance(ViTArchitecture arch, int seed)
    {
        var rng = new Random(seed);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() + 0.1f).ToArray();
        return arch.Blocks.Select(b => new BlockImportance
        {
            Heads = R(b.Heads),
            QkDims = Enumerable.Range(0, b.Heads).Select(_ => R(b.QkDim)).ToArray(),
            VDims = Enumerable.Range(0, b.Heads).Select(_ => R(b.VDim)).ToArray(),
            Mlp = R(b.MlpHidden),
        }).ToArray();
    }

    [Theory]
    [InlineData(0.5, 1)]
    [InlineData(0.7, 2)]
    [InlineData(0.3, 3)]
    public void TheLatencyAllocatorHitsTheBudgetOfASyntheticTable(double fraction, int seed)
    {
        var arch = ViTArchitecture.CifarTiny();
        var table = Synthetic();
        double dense = table.ModelMs(arch);
        dense.Should().BeApproximately(1.5 + 5 * (0.8 + 3 * 10.6 + 0.868) + 0.4 + 0.5 * 3 * 10.6 + 0.2036, 1e-9, "the table's sum for cifar-tiny");
        var importance = Importance(arch, seed);
        double target = fraction * dense;

        var plan = LatencyBudget.Allocate(arch, importance, target, table);
        var pruned = plan.PrunedArchitecture(arch);
        table.ModelMs(pruned).Should().BeApproximately(target, 0.02 * dense, "within the allocator's tolerance band and one step");
        pruned.Blocks.Should().OnlyContain(b => b.QkDim % 8 == 0 && b.VDim % 8 == 0 && b.MlpHidden % 8 == 0, "granularity 8 still applies");

        // the parameter allocator at the same fraction misses the latency: the two budgets differ
        var byParams = StructuredProjection.Allocate(arch, importance, 1 - fraction).PrunedArchitecture(arch);
        Math.Abs(table.ModelMs(byParams) - target).Should().BeGreaterThan(0.05 * dense);
    }

    [Fact]
    public void BadTargetsAreRejectedNamingTheTarget()
    {
        var arch = ViTArchitecture.CifarTiny();
        var table = Synthetic();
        foreach (double t in new[] { 0, -1, table.ModelMs(arch), 2 * table.ModelMs(arch) })
            FluentActions.Invoking(() => LatencyBudget.Allocate(arch, Importance(arch, 1), t, table))
                .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "targetMs");
    }

    [Fact]
    public void MeasuredOncePerDeviceAndCachedUnderItsIdentity()
    {
        using var dir = new TempDir();
        var arch = ViTArchitecture.CifarMicro();
        var first = LatencyModel.LoadOrMeasure(arch, batch: 4, dir.Path, reps: 1);
        first.Device.Should().Be(MachineInfo.Probe().ToString());
        first.Batch.Should().Be(4);
        first.AttentionMs.Should().HaveCount(arch.Blocks[0].Heads);
        foreach (var row in first.AttentionMs.Concat(first.LastAttentionMs).Append(first.MlpMs).Append(first.LastMlpMs))
        {
            row.Should().OnlyContain(ms => ms > 0);
            row.Should().BeInAscendingOrder("a narrower structure never costs more");
        }
        var files = Directory.GetFiles(dir.Path);
        files.Should().ContainSingle().Which.Should().Be(LatencyModel.CachePath(dir.Path, first.Device, first.Config));
        var written = File.GetLastWriteTimeUtc(files[0]);

        var second = LatencyModel.LoadOrMeasure(arch, batch: 4, dir.Path, reps: 1);
        JsonSerializer.Serialize(second).Should().Be(JsonSerializer.Serialize(first), "the second call reads the cache");
        File.GetLastWriteTimeUtc(files[0]).Should().Be(written);

        LatencyModel.CachePath(dir.Path, "another CPU", first.Config).Should().NotBe(files[0]);
        LatencyModel.CachePath(dir.Path, first.Device, first.Config + ", batch 8").Should().NotBe(files[0]);
        // a damaged cache is measured again
        File.WriteAllText(files[0], "{ not json");
        LatencyModel.LoadOrMeasure(arch, batch: 4, dir.Path, reps: 1).Config.Should().Be(first.Config);
        JsonSerializer.Deserialize<LatencyModel>(File.ReadAllText(files[0]))!.Device.Should().Be(first.Device);
    }
    /// <summary>
    /// The calibration's closed loop against a deterministic "machine" whose time is not the table's: executed FLOPs plus
    /// a fixed 20% of the dense time (the synthetic table believes attention dominates; on this machine the MLP does). The
    /// table's plan misses; the calibrated plan's timed share meets the target within the tolerance.
    /// </summary>
    [Theory]
    [InlineData(0.5, null)]
    [InlineData(null, 40.0)]
    public void CalibrationCorrectsThePlanUntilItsTimedShareMeetsTheTarget(double? targetFraction, double? targetMs)
    {
        var arch = ViTArchitecture.CifarTiny();
        var table = Synthetic();
        var importance = Importance(arch, 1);
        const double denseMs = 100;
        double fixedPart = 0.25 * arch.ExecutedForwardFlops;
        double Time(ViTArchitecture a) => (a.ExecutedForwardFlops + fixedPart) / (arch.ExecutedForwardFlops + fixedPart);
        int timed = 0;
        (double, double) Measure(ViTArchitecture a) { timed++; return (Time(a), denseMs); }
        double target = targetFraction ?? targetMs!.Value / denseMs;

        var c = LatencyCalibration.Run(arch, importance, table, d => targetFraction ?? targetMs!.Value / d, null, maxIterations: 6,
            tolerance: 0.03, Measure);

        c.TargetRatio.Should().Be(target);
        Math.Abs(c.TableOnlyRatio - target).Should().BeGreaterThan(0.1 * target, "the table alone misjudges this machine (the test's premise)");
        c.Iterations.Should().BeGreaterThan(1);
        timed.Should().Be(c.Iterations + 1, "the dense model once, then every plan");
        c.MeasuredRatio.Should().BeApproximately(target, 0.03 * target);
        Time(c.Plan.PrunedArchitecture(arch)).Should().Be(c.MeasuredRatio, "the plan returned is the one that was timed");
        c.TableLatencyFraction.Should().Be(1 - c.Fraction);
        table.ModelMs(c.Plan.PrunedArchitecture(arch)).Should().BeApproximately(c.TableLatencyFraction * table.ModelMs(arch), 0.02 * table.ModelMs(arch),
            "a run given TableLatencyFraction spends what the calibrated plan spends");
    }

    /// <summary>
    /// A plan timed far faster than the target (as timing noise on a small model can make it) asks the next plan to remove
    /// less than nothing; the calibration keeps a positive fraction instead of failing in the allocator.
    /// </summary>
    [Fact]
    public void APlanTimedFarBelowTheTargetKeepsAPositiveFraction()
    {
        var arch = ViTArchitecture.CifarTiny();
        (double, double) Measure(ViTArchitecture a) => (a == arch ? 1 : 0.1, 100);

        var c = LatencyCalibration.Run(arch, Importance(arch, 1), Synthetic(), _ => 0.6, null, maxIterations: 4, tolerance: 0.03, Measure);

        c.Iterations.Should().BeGreaterThan(1, "the first plan missed, so a second was tried");
        c.Fraction.Should().BeInRange(LatencyCalibration.MinimumFraction, 0.99);
        c.MeasuredRatio.Should().Be(0.1);
    }

    [Fact]
    public void CalibrationTargetsAreCheckedNamingTheArgument()
    {
        var arch = ViTArchitecture.CifarTiny();
        var importance = Importance(arch, 1);
        FluentActions.Invoking(() => LatencyBudget.Calibrate(arch, importance, Synthetic(), targetMs: 50, targetFraction: 0.5))
            .Should().Throw<ArgumentException>().Where(e => e.Message.Contains("exactly one of targetMs and targetFraction"));
        FluentActions.Invoking(() => LatencyBudget.Calibrate(arch, importance, Synthetic()))
            .Should().Throw<ArgumentException>().Where(e => e.Message.Contains("exactly one"));
        FluentActions.Invoking(() => LatencyBudget.Calibrate(arch, importance, Synthetic(), targetFraction: 1.2))
            .Should().Throw<ArgumentOutOfRangeException>().Which.ParamName.Should().Be("targetFraction");
    }
}
