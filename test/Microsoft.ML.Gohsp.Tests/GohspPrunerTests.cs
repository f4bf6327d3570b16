using FluentAssertions;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

public class GohspPrunerTests(ITestOutputHelper output)
{
    internal static ImageTensorData Real(Cifar10Split split, int n)
    {
        var d = Cifar10.Read(Cifar10Tests.SubsetDir, split, n);
        return d.ToTensorData();
    }

    [Fact]
    public void ThreeStagesProduceASmallerHeterogeneousModelOnBudgetWithShrinkingResidual()
    {
        // 1,536 images = 24 steps per ADMM iteration: the W-subproblem needs real progress between Z/U updates
        // (with 8 steps per iteration the dual variable outruns W and the residual oscillates — see docs/gohsp.md).
        var train = Real(Cifar10Split.Train, 1536);
        var valid = Real(Cifar10Split.Test, 256);
        var o = new ViTTrainingOptions { Epochs = 2, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 2e-3, WarmupEpochs = 0.5 };
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 1);
        new TrainingLoop(o).Train(dense, train);
        var before = ModelChecks.Snapshot(dense);

        var g = new GohspOptions
        {
            Sparsity = 0.4,
            // the fixed-fraction head budget with hard head masks (the defaults couple heads to the budget and prune them
            // softly: GohspConvergenceTests)
            HeadBudget = HeadBudget.Fraction,
            HeadPruning = HeadPruningMode.Hard,
            HeadPruningFraction = 0.25,
            CalibrationImages = 64,
            SoftPruning = new ViTTrainingOptions { Epochs = 4, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 1.5e-3, MinLearningRate = 1.5e-3, WarmupEpochs = 0 },
            Admm = new AdmmOptions(),
            FineTune = new ViTTrainingOptions { Epochs = 1, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 5e-4, WarmupEpochs = 0 },
            // cifar-micro's heads are 24 wide: steps of 8 leave too few shapes for blocks to differ; prune single structures
            Budget = new BudgetOptions { Granularity = 1 },
        };
        var log = new List<string>();
        var result = new GohspPruner(g).Run(new PruningContext(dense, train, valid) { Log = log.Add });
        using var pruned = result.Model;
        var r = result.Report;
        output.WriteLine(string.Join("\n", log));
        output.WriteLine(r.ToJson());

        r.AchievedSparsity.Should().BeApproximately(0.4, 0.01);
        pruned.Architecture.ParameterCount.Should().Be(r.ParametersAfter);
        r.FlopsAfter.Should().BeLessThan(r.FlopsBefore);
        pruned.Architecture.IsHomogeneous.Should().BeFalse();
        r.Blocks.Sum(b => b.KeptHeads.Length).Should().Be(16 - 4, "25% of the 16 heads are removed in stage 1");
        r.Blocks.Should().OnlyContain(b => b.KeptHeads.Length >= 1 && r.Stationary(b).Length == b.KeptHeads.Length);
        r.Gohsp().ResidualHistory.Should().HaveCount(4);
        r.Gohsp().ResidualHistory[^1].Should().BeLessThan(0.8 * r.Gohsp().ResidualHistory[0], "the ADMM penalty pulls W toward the sparse set");
        r.ValidationAccuracy.Keys.Should().BeEquivalentTo("dense", "head-masked", "soft-pruned", "hard-pruned", "fine-tuned");
        r.ToJson().Should().Contain("\"KeptHeads\"").And.Contain("\"ResidualHistory\"");
        ModelChecks.DenseUntouchedAndPrunedRuns(dense, before, pruned);
    }

    [Fact]
    public void AnInterruptedSoftPruningStageResumesFromItsCheckpointWithTheAdmmState()
    {
        var data = Real(Cifar10Split.Train, 128);
        var kept = ViTArchitecture.CifarMicro().Blocks.Select((b, i) => (IReadOnlyList<int>)new[] { i % b.Heads }).ToArray();
        var admm = new AdmmOptions { UpdateEverySteps = 3 };   // 4 steps per epoch: Z/U updates straddle the epoch boundary
        var dir = Directory.CreateTempSubdirectory("admm-resume-").FullName;
        try
        {
            ViTTrainingOptions Options(string? folder) => new()
            {
                Epochs = 2, BatchSize = 32, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 1e-3, MinLearningRate = 1e-3,
                WarmupEpochs = 0, CheckpointFolder = folder,
            };
            VisionTransformerModel Masked() { var m = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 4); m.SetHeadMasks(kept); return m; }
            using var straight = Masked();
            var straightHook = new AdmmSoftPruning(0.4, kept, admm);
            new TrainingLoop(Options(null), "gohsp-soft-pruning") { Hook = straightHook }.Train(straight, data);

            // cancelled after the first epoch (its checkpoint is written before the epoch is reported) …
            using var cts = new CancellationTokenSource();
            using var first = Masked();
            var stop = new SyncProgress<ViTTrainingProgress>(p => { if (p.EpochCompleted) cts.Cancel(); });
            var cut = () => new TrainingLoop(Options(dir), "gohsp-soft-pruning", null, stop) { Hook = new AdmmSoftPruning(0.4, kept, admm) }.Train(first, data, null, cts.Token);
            cut.Should().Throw<OperationCanceledException>();

            // … and resumed by a new loop and a new hook: same ρ, residuals and weights as the uninterrupted run
            using var resumed = Masked();
            var resumedHook = new AdmmSoftPruning(0.4, kept, admm);
            var loop = new TrainingLoop(Options(dir), "gohsp-soft-pruning") { Hook = resumedHook };
            loop.Train(resumed, data);
            loop.StartEpoch.Should().Be(1, "training continues after the finished epoch");
            resumedHook.Rho.Should().Be(straightHook.Rho);
            resumedHook.ResidualHistory.Should().HaveCount(2);
            resumedHook.ResidualHistory.Zip(straightHook.ResidualHistory).Should().OnlyContain(t => Math.Abs(t.First - t.Second) < 1e-4 * (1 + t.Second));
            TensorAssert.CloseWeights(resumed, straight);
        }
        finally { Directory.Delete(dir, true); }
    }

    public static TheoryData<string, Action<AdmmOptions>, string> BadAdmmOptions => new()
    {
        { "metric out of range", a => a.Metric = (ProjectionMetric)7, "*Admm.Metric*Euclidean or Fisher*" },
        { "penalty out of range", a => a.Penalty = (AdmmPenalty)5, "*Admm.Penalty*Decoupled or Gradient*" },
        { "ramp 1", a => a.SparsityRampFraction = 1, "*Admm.SparsityRampFraction*[0, 1)*" },
        { "rho 0", a => a.Rho = 0, "*Admm.Rho*positive finite*" },
    };

    [Theory]
    [MemberData(nameof(BadAdmmOptions))]
    public void BadAdmmOptionsAreRejectedBeforeAnyWorkNamingTheOption(string name, Action<AdmmOptions> spoil, string message)
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 1);
        var o = new GohspOptions();
        spoil(o.Admm);
        ((Action)(() => new GohspPruner(o).Run(new PruningContext(dense, HeadGraphRankingTests.RandomImages(8)))))
            .Should().Throw<ArgumentOutOfRangeException>(name).WithMessage(message);
    }

    [Fact]
    public void BadOptionsAreRejectedBeforeAnyWork()
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 1);
        var data = HeadGraphRankingTests.RandomImages(8);
        ((Action)(() => new GohspPruner(new GohspOptions { Sparsity = 1.2 }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Sparsity*(0, 1)*");
        ((Action)(() => new GohspPruner(new GohspOptions { HeadBudget = HeadBudget.Fraction, HeadPruningFraction = 0.95, HeadPruning = HeadPruningMode.Hard }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*would empty a block*");
        ((Action)(() => new GohspPruner(new GohspOptions { HeadBudget = HeadBudget.Fraction }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentException>().WithMessage("*HeadBudget.Fraction*HeadPruning*Hard or Soft*");
        ((Action)(() => new GohspPruner(new GohspOptions()).Run(new PruningContext(dense, HeadGraphRankingTests.RandomImages(0))))).Should().Throw<ArgumentException>().WithMessage("*no rows*");
    }
}
