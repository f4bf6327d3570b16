using System.Text.Json;
using FluentAssertions;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// A latency target's calibration inside a pruning run (<see cref="PruningOptions.LatencyCalibrationIterations"/>), against
/// a deterministic "machine" instead of timing: these tests never time anything.
/// </summary>
public class LatencyCalibrationTests(ITestOutputHelper output)
{
    /// <summary>The synthetic table of <paramref name="arch"/>, measured (as far as the run can tell) on this machine.</summary>
    private static LatencyModel HereTable(ViTArchitecture arch) =>
        LatencyBudgetTests.SyntheticFor(arch) with { Device = MachineInfo.Probe().ToString() };

    /// <summary>
    /// A machine on which every pruned model takes <paramref name="slowdown"/> × the share of the dense time that the
    /// table estimates (capped below the dense time), and the dense model 1.1 × the table's estimate: what the table
    /// misjudges, as on the measured runs (1.17 of the target with the table alone).
    /// </summary>
    private sealed class FakeMachine(LatencyModel table, double slowdown = 1.15)
    {
        public int Calls { get; private set; }
        public double Ratio(ViTArchitecture dense, ViTArchitecture pruned) =>
            Math.Min(1, slowdown * table.ModelMs(pruned) / table.ModelMs(dense));
        public (double Ratio, double DenseMs) Time(ViTArchitecture dense, ViTArchitecture pruned, int batch)
        {
            batch.Should().Be(table.Batch, "the calibration times batches of LatencyBatchSize");
            Calls++;
            return (Ratio(dense, pruned), 1.1 * table.ModelMs(dense));
        }
    }

    private static (double, double) NoTiming(ViTArchitecture d, ViTArchitecture p, int b) =>
        throw new InvalidOperationException("this budget must not time anything");

    [Theory]
    [InlineData(0.5, false)]
    [InlineData(0.5, true)]
    [InlineData(0.7, false)]
    public void ALatencyTargetIsCalibratedBeforeTrainingUntilTheTimedShareMeetsIt(double fraction, bool inMilliseconds)
    {
        var arch = ViTArchitecture.CifarMicro();
        using var model = new VisionTransformerModel(arch, seed: 2);
        var table = HereTable(arch);
        var machine = new FakeMachine(table);
        // single structures: cifar-micro's 24-wide heads leave steps of 8 too coarse for a 3% tolerance
        var options = new SompOptions { LatencyTable = table, Budget = new BudgetOptions { Granularity = 1 } };
        if (inMilliseconds) options.TargetLatencyMs = fraction * 1.1 * table.ModelMs(arch); else options.TargetLatencyFraction = fraction;

        var tableOnly = PruningBudget.Resolve(options, arch);
        var budget = PruningBudget.Resolve(options, model, previous: null, machine.Time);

        var c = budget.Calibration!;
        c.Should().NotBeNull();
        c.TargetRatio.Should().BeApproximately(fraction, 1e-12, "a target in ms is a share of the dense time measured on this machine");
        if (!inMilliseconds)
            c.TableOnlyRatio.Should().Be(machine.Ratio(arch, tableOnly.Allocate(arch, StructuredProjection.Magnitude(model)).PrunedArchitecture(arch)),
                "the calibration starts from the plan the table alone gives");
        Math.Abs(c.TableOnlyRatio - fraction).Should().BeGreaterThan(0.1 * fraction, "the table alone misses on this machine (the test's premise)");
        budget.Fraction.Should().BeGreaterThan(tableOnly.Fraction + 0.03, "the calibrated run removes more of the table's latency than the table alone");
        budget.Fraction.Should().Be(1 - c.TableLatencyFraction);
        machine.Calls.Should().Be(c.Iterations + 1, "the dense model once, then every plan");
        (budget.TargetMs, budget.DenseMs, budget.Latency).Should().Be((tableOnly.TargetMs, tableOnly.DenseMs, table), "only the share spent changes");

        // what the run allocates with this budget (the same magnitude importance) meets the target on this machine
        var plan = budget.Allocate(arch, StructuredProjection.Magnitude(model));
        machine.Ratio(arch, plan.PrunedArchitecture(arch)).Should().BeApproximately(fraction, PruningBudget.CalibrationTolerance * fraction);
        c.MeasuredRatio.Should().BeApproximately(fraction, PruningBudget.CalibrationTolerance * fraction);
        budget.CalibrationNote.Should().StartWith("latency calibration:").And.Contain($"TargetLatencyFraction = {c.TableLatencyFraction:R}");

        // reproducible without timing: the recorded share passed back with no calibration gives the same budget and plan
        var replay = PruningBudget.Resolve(new SompOptions
        {
            TargetLatencyFraction = c.TableLatencyFraction, LatencyCalibrationIterations = 0, LatencyTable = table, Budget = new BudgetOptions { Granularity = 1 },
        },
            model, previous: null, NoTiming);
        replay.Fraction.Should().Be(budget.Fraction);
        JsonSerializer.Serialize(replay.Allocate(arch, StructuredProjection.Magnitude(model))).Should().Be(JsonSerializer.Serialize(plan));
    }

    [Fact]
    public void NoCalibrationSpendsExactlyTheTablesBudgetAndTimesNothing()
    {
        var arch = ViTArchitecture.CifarMicro();
        using var model = new VisionTransformerModel(arch, seed: 2);
        var here = HereTable(arch);
        foreach (var options in new[]
                 {
                     new SompOptions { TargetLatencyFraction = 0.5, LatencyTable = here, LatencyCalibrationIterations = 0 },
                     new SompOptions { TargetLatencyMs = 0.6 * here.ModelMs(arch), LatencyTable = here, LatencyCalibrationIterations = 0 },
                     // a table of another machine is spent as it is: timing here says nothing about that machine
                     new SompOptions { TargetLatencyFraction = 0.5, LatencyTable = LatencyBudgetTests.SyntheticFor(arch) },
                 })
        {
            var budget = PruningBudget.Resolve(options, model, previous: null, NoTiming);
            var tableOnly = PruningBudget.Resolve(options, arch);
            budget.Fraction.Should().Be(tableOnly.Fraction);
            budget.Fraction.Should().BeApproximately(options.TargetLatencyFraction is double f ? 1 - f : 0.4, 1e-12);
            budget.Calibration.Should().BeNull();
            if (options.LatencyCalibrationIterations == 0) budget.CalibrationNote.Should().BeNull();
            else budget.CalibrationNote.Should().Contain("skipped").And.Contain("measured on synthetic");
        }
        // a parameter budget: no latency, no timing
        var sparsity = PruningBudget.Resolve(new SompOptions { Sparsity = 0.3 }, model, previous: null, NoTiming);
        (sparsity.Fraction, sparsity.Latency, sparsity.Calibration, sparsity.CalibrationNote).Should().Be((0.3, (LatencyModel?)null, (LatencyCalibrationSummary?)null, (string?)null));
    }

    [Fact]
    public void ANegativeCalibrationCountIsRejectedNamingTheOption()
    {
        foreach (var options in new PruningOptions[] { new SompOptions { TargetLatencyFraction = 0.5 }, new GohspOptions { Sparsity = 0.4 } })
        {
            options.LatencyCalibrationIterations = -1;
            FluentActions.Invoking(options.Validate).Should().Throw<ArgumentOutOfRangeException>()
                .Where(e => e.ParamName == "LatencyCalibrationIterations").WithMessage("*must be ≥ 0*");
        }
        new SompOptions { TargetLatencyFraction = 0.5, LatencyCalibrationIterations = 0 }.Validate();
    }

    /// <summary>
    /// A target in milliseconds below the table's dense estimate but not below the dense model's time measured by the
    /// calibration: rejected naming the option, not an internal argument.
    /// </summary>
    [Fact]
    public void ATargetInMillisecondsAboveTheTimedDenseModelIsRejectedNamingTheOption()
    {
        var arch = ViTArchitecture.CifarMicro();
        using var model = new VisionTransformerModel(arch, seed: 2);
        var table = HereTable(arch);
        // below the table's dense estimate, but above this (fast) machine's dense time
        var options = new SompOptions { TargetLatencyMs = 0.9 * table.ModelMs(arch), LatencyTable = table };
        FluentActions.Invoking(() => PruningBudget.Resolve(options, model, previous: null, (d, p, b) => (0.5, 0.5 * table.ModelMs(arch))))
            .Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == "TargetLatencyMs").WithMessage("*LatencyCalibrationIterations = 0*");
    }

    /// <summary>
    /// A one-shot control ranked by Taylor importance calibrates with that ranking, not with the magnitude of the weights:
    /// its final shape is the plan the calibration timed. On a machine whose time is not proportional to the table's
    /// estimate (heads cost extra here), a calibration planned by magnitude would time a different shape than the one cut.
    /// </summary>
    [Fact]
    public void ATaylorRankedSompCalibratesWithItsOwnRanking()
    {
        var arch = ViTArchitecture.CifarMicro();
        using var dense = new VisionTransformerModel(arch, seed: 3);
        var table = HereTable(arch);
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 64);
        int denseHeads = arch.Blocks.Sum(b => b.Heads);
        double Ratio(ViTArchitecture pruned) =>
            Math.Min(1, 1.1 * table.ModelMs(pruned) / table.ModelMs(arch) + 0.1 * pruned.Blocks.Sum(b => b.Heads) / denseHeads);
        var timed = new List<ViTArchitecture>();
        (double, double) Time(ViTArchitecture d, ViTArchitecture p, int b) { timed.Add(p); return (Ratio(p), table.ModelMs(arch)); }
        var options = new SompOptions
        {
            TargetLatencyFraction = 0.5, LatencyTable = table, FineTune = BaselinePrunerTests.Stage(), Budget = new BudgetOptions { Granularity = 1 },
            Importance = SompImportance.Taylor, CalibrationImages = 32,
        };
        var log = new List<string>();
        var somp = new SompPruner(options).Run(new PruningContext(dense, train) { Log = log.Add, LatencyTimer = Time });
        using var pruned = somp.Model;
        var c = somp.Report.LatencyCalibration!;
        c.Should().NotBeNull();
        Ratio(pruned.Architecture).Should().Be(c.MeasuredRatio, "the shape cut is the shape the calibration timed");
        timed.Should().Contain(a => a == pruned.Architecture);
        // the premise: the magnitude ranking spends the same share of the table on another shape, which this machine times differently
        var byMagnitude = PruningBudget.Resolve(options, arch).Allocate(arch, StructuredProjection.Magnitude(dense), 1 - c.TableLatencyFraction);
        var magnitudeShape = byMagnitude.PrunedArchitecture(arch);
        magnitudeShape.Should().NotBe(pruned.Architecture);
        Ratio(magnitudeShape).Should().NotBe(c.MeasuredRatio);
        output.WriteLine(string.Join("\n", log));
    }

    /// <summary>
    /// A run's report records its calibration and the log says it; GOHSP's later stages (as the staged estimators run them,
    /// with the earlier stage's report read back from JSON as a model zip stores it) spend that calibration without timing.
    /// </summary>
    [Fact]
    public void TheReportRecordsTheCalibrationAndLaterStagesReuseItWithoutTiming()
    {
        var arch = ViTArchitecture.CifarMicro();
        using var dense = new VisionTransformerModel(arch, seed: 3);
        var table = HereTable(arch);
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 64);
        var machine = new FakeMachine(table);
        var log = new List<string>();

        // SOMP, one run
        var somp = new SompPruner(new SompOptions
        {
            TargetLatencyFraction = 0.5, LatencyTable = table, FineTune = BaselinePrunerTests.Stage(), Budget = new BudgetOptions { Granularity = 1 },
        })
            .Run(new PruningContext(dense, train) { Log = log.Add, LatencyTimer = machine.Time });
        somp.Model.Dispose();
        var c = somp.Report.LatencyCalibration;
        c.Should().NotBeNull();
        machine.Calls.Should().Be(c!.Iterations + 1);
        c.TargetRatio.Should().Be(0.5);
        c.TableOnlyRatio.Should().BeGreaterThan(0.54, "the table alone misses on this machine (the test's premise)");
        c.MeasuredRatio.Should().BeApproximately(0.5, 0.015);
        machine.Ratio(arch, somp.Model.Architecture).Should().Be(c.MeasuredRatio, "SOMP's plan is the calibrated plan: calibrated with its own ranking");
        somp.Report.EstimatedLatencyMs.Should().BeApproximately(c.TableLatencyFraction * somp.Report.DenseLatencyMs!.Value, 0.02 * somp.Report.DenseLatencyMs.Value);
        PruningReport.FromJson(somp.Report.ToJson()).LatencyCalibration.Should().Be(c);
        log.Should().ContainSingle(l => l.StartsWith("[somp] latency calibration:"));
        output.WriteLine(string.Join("\n", log));

        // GOHSP stage by stage: stage 1 calibrates, stages 2 and 3 read the earlier report and time nothing
        var g = new GohspOptions
        {
            TargetLatencyFraction = 0.5, LatencyTable = table, CalibrationImages = 32, HeadPruning = HeadPruningMode.Hard,
            SoftPruning = BaselinePrunerTests.Stage(), FineTune = BaselinePrunerTests.Stage(),
        };
        var pruner = new GohspPruner(g);
        var first = new FakeMachine(table);
        var masked = pruner.RankAndMaskHeads(new PruningContext(dense, train) { LatencyTimer = first.Time });
        using var maskedModel = masked.Model;
        var stage1 = masked.Report.LatencyCalibration;
        stage1.Should().NotBeNull();
        first.Calls.Should().Be(stage1!.Iterations + 1);
        var stageLog = new List<string>();
        var soft = pruner.SoftPrune(new PruningContext(maskedModel, train)
        { Previous = PruningReport.FromJson(masked.Report.ToJson()), LatencyTimer = NoTiming, Log = stageLog.Add });
        using var softModel = soft.Model;
        soft.Report.LatencyCalibration.Should().Be(stage1);
        var final = pruner.HardPruneAndFineTune(new PruningContext(softModel, train)
        { Previous = PruningReport.FromJson(soft.Report.ToJson()), Teacher = dense, LatencyTimer = NoTiming, Log = stageLog.Add });
        using var finalModel = final.Model;
        final.Report.LatencyCalibration.Should().Be(stage1);
        stageLog.Count(l => l.Contains("latency calibration of the")).Should().Be(2);
        output.WriteLine(string.Join("\n", stageLog));
    }
}
