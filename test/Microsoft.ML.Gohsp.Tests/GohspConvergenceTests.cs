using System.Collections.Immutable;
using FluentAssertions;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// GOHSP's soft pruning converges before the cut, the cut keeps ADMM's Z, heads follow the budget, distillation really
/// distils, and the fidelity metrics and the SGMP normalisation compute what they claim.
/// </summary>
public class GohspConvergenceTests(ITestOutputHelper output)
{
    private static ViTTrainingOptions Stage(int epochs, double lr, double minLr, double warmup = 0) => new()
    {
        Epochs = epochs, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = lr, MinLearningRate = minLr, WarmupEpochs = warmup, BatchSize = 32,
    };

    private static GohspOptions TinyOptions(double sparsity) => new()
    {
        Sparsity = sparsity,
        CalibrationImages = 32,
        SoftPruning = Stage(2, 5e-4, 5e-4),
        FineTune = Stage(1, 5e-4, 1e-5),
        Budget = new BudgetOptions { Granularity = 1 },
    };

    [Fact]
    public void SoftPruningWithTheDefaultAdmmReachesItsResidualBoundAndTheCutKeepsExactlyZsSupport()
    {
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 320);
        var valid = GohspPrunerTests.Real(Cifar10Split.Test, 64);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        new TrainingLoop(Stage(1, 1e-3, 1e-5, 0.25)).Train(dense, train);
        var o = TinyOptions(0.5);   // the default ADMM options: decoupled penalty, ρ 1 → 1000, Z/U every 10 steps, ramp over a quarter of the stage
        o.HeadPruning = HeadPruningMode.Soft;   // the stage-1 heads travel in the report and are zeroed by ADMM

        var masked = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, train, valid));
        using var stage1 = masked.Model;
        var soft = new GohspPruner(o).SoftPrune(new PruningContext(stage1, train, valid) { Previous = masked.Report });
        using var softModel = soft.Model;
        var r2 = soft.Report.Gohsp();
        output.WriteLine($"residuals {string.Join(", ", r2.ResidualHistory)}; start {r2.ResidualStart}; ratio {r2.ResidualRatio}; overlap {r2.CutPlanOverlap}");

        r2.ResidualRatio.Should().NotBeNull();
        r2.ResidualRatio!.Value.Should().BeLessThanOrEqualTo(0.05, "the ρ schedule brings ‖W − Z‖ to ≤ 5% of its start by the end of stage 2");
        r2.CutPlan.Should().NotBeNull();
        (1 - (double)r2.CutPlan!.PrunedArchitecture(dense.Architecture).ParameterCount / dense.Architecture.ParameterCount).Should().BeApproximately(0.5, 0.01);
        r2.CutPlanOverlap.Should().BeInRange(0.9, 1.0, "W has converged to Z, so a fresh projection of W keeps nearly the same structures");

        // Make a fresh projection of W disagree with Z: blow up one structure Z removed. The cut must still keep Z's support.
        var plan = r2.CutPlan;
        int block = 0;
        int dropped = Enumerable.Range(0, dense.Architecture.Blocks[block].MlpHidden).First(j => !plan.Blocks[block].MlpNeurons.Contains(j));
        using (no_grad()) softModel.Blocks[block].mlp.fc1.weight[dropped].fill_(10f);
        var hard = new GohspPruner(o).HardPruneAndFineTune(new PruningContext(softModel, train, valid) { Previous = soft.Report, Teacher = dense });
        using var pruned = hard.Model;
        hard.Report.Gohsp().CutPlan.Should().BeSameAs(plan);
        hard.Report.Blocks.Select(b => b.KeptHeads).Should().BeEquivalentTo(plan.Blocks.Select(b => b.Heads.ToArray()), c => c.WithStrictOrdering());
        pruned.Architecture.Should().Be(plan.PrunedArchitecture(dense.Architecture));
        // the surgery copied exactly Z's MLP neurons of block 0 (before fine-tuning they would equal W's rows; the blown-up row is absent)
        var keptRows = plan.Blocks[block].MlpNeurons.Length;
        pruned.Blocks[block].mlp.fc1.weight.shape[0].Should().Be(keptRows);
        var fresh = StructuredProjection.Allocate(dense.Architecture, StructuredProjection.Magnitude(softModel), 0.5, o.Budget, stage1.KeptHeads
            ?? masked.Report.Blocks.Select(b => (IReadOnlyList<int>)b.KeptHeads).ToArray());
        fresh.Blocks[block].MlpNeurons.Should().Contain(dropped, "the blown-up neuron is the most important one for a fresh plan from W");
        hard.Report.CutShockTop1.Should().NotBeNull();
        hard.Report.PreCutStage.Should().Be(GohspPruner.SoftPrunedStage);
        hard.Report.Gohsp().ResidualRatio.Should().Be(r2.ResidualRatio);
    }

    [Fact]
    public void GuidedHeadPruningFixesNoHeadAndItsProjectionsFollowTheHeadGraph()
    {
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 320);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        new TrainingLoop(Stage(1, 1e-3, 1e-5, 0.25)).Train(dense, train);
        var o = TinyOptions(0.6);
        o.HeadPruning = HeadPruningMode.Guided;
        // the Euclidean metric, so that the magnitude-only plan below is what the projections would keep without the graph
        // (the Fisher metric's weighting is tested on its own)
        o.Admm.Metric = ProjectionMetric.Euclidean;

        var stage1 = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, train));
        using var ranked = stage1.Model;
        ranked.KeptHeads.Should().BeNull("guided head pruning fixes no head at stage 1");
        stage1.Report.Blocks.Should().OnlyContain(b => b.KeptHeads.Length == b.DenseHeads && stage1.Report.Stationary(b).Length == b.DenseHeads,
            "the stage-1 report ranks every head for stage 2's projections");

        // a head graph that gives head 0 of every block (almost) no stationary mass: the guided projections remove it first
        var report = stage1.Report with
        {
            Details = stage1.Report.Gohsp() with
            {
                StationaryProbabilities = stage1.Report.Blocks.Select(b => b.KeptHeads.Select(h => h == 0 ? 1e-9 : (1 - 1e-9) / (b.DenseHeads - 1)).ToArray()).ToArray(),
            },
        };
        var magnitudeOnly = StructuredProjection.Allocate(dense.Architecture, StructuredProjection.Magnitude(dense), 0.6, o.Budget);
        magnitudeOnly.Blocks.Should().Contain(b => b.Heads.Contains(0), "without the graph, magnitude alone keeps head 0 somewhere (so the check below can fail)");

        var soft = new GohspPruner(o).SoftPrune(new PruningContext(ranked, train) { Previous = report });
        using var softModel = soft.Model;
        soft.Report.Gohsp().CutPlan!.Blocks.Should().OnlyContain(b => !b.Heads.Contains(0), "a head the graph ranks last is the first head the projection removes");
        (1 - (double)soft.Report.Gohsp().CutPlan!.PrunedArchitecture(dense.Architecture).ParameterCount / dense.Architecture.ParameterCount)
            .Should().BeApproximately(0.6, 0.01);
    }

    [Theory]
    [InlineData(0.2)]
    [InlineData(0.5)]
    [InlineData(0.9)]
    public void HeadsCoupledToTheBudgetStillHitTheParameterBudget(double sparsity)
    {
        var data = HeadGraphRankingTests.RandomImages(16);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarTiny(), seed: 5);
        var o = new GohspOptions { Sparsity = sparsity, CalibrationImages = 16, HeadPruning = HeadPruningMode.Hard };
        o.HeadBudget.Should().Be(HeadBudget.Global);
        var stage1 = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, data));
        var heads = stage1.Report.Blocks.Select(b => (IReadOnlyList<int>)b.KeptHeads).ToArray();
        stage1.Model.KeptHeads.Should().BeEquivalentTo(heads, c => c.WithStrictOrdering(), "hard head pruning masks the chosen heads");
        stage1.Model.Dispose();
        o.HeadPruning = HeadPruningMode.Soft;
        var soft = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, data));
        soft.Model.KeptHeads.Should().BeNull("soft head pruning leaves the outputs unmasked; ADMM drives the heads' weights to zero");
        soft.Model.Dispose();
        soft.Report.Blocks.Select(b => b.KeptHeads).Should().BeEquivalentTo(heads, c => c.WithStrictOrdering());
        var plan = StructuredProjection.Allocate(dense.Architecture, StructuredProjection.Magnitude(dense), sparsity, o.Budget, heads);
        double achieved = 1 - (double)plan.PrunedArchitecture(dense.Architecture).ParameterCount / dense.Architecture.ParameterCount;
        achieved.Should().BeApproximately(sparsity, 0.01);
        output.WriteLine($"{sparsity:P0}: {heads.Sum(h => h.Count)} of 18 heads kept");
    }

    [Fact]
    public void MoreSparsityRemovesMoreHeadsWhenHeadsCompeteInTheBudget()
    {
        var data = HeadGraphRankingTests.RandomImages(16);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarTiny(), seed: 5);
        int Kept(double s)
        {
            var r = new GohspPruner(new GohspOptions { Sparsity = s, CalibrationImages = 16, HeadPruning = HeadPruningMode.Soft }).RankAndMaskHeads(new PruningContext(dense, data));
            r.Model.Dispose();
            return r.Report.Blocks.Sum(b => b.KeptHeads.Length);
        }
        int light = Kept(0.2), heavy = Kept(0.9);
        heavy.Should().BeLessThan(light);
        heavy.Should().BeLessThan(18);
    }

    [Fact]
    public void HeadGraphWeightIsTheExponentOfTheGraphImportanceInEachHeadsScore()
    {
        const double sparsity = 0.6;
        var data = HeadGraphRankingTests.RandomImages(16);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarTiny(), seed: 5);
        var o = new GohspOptions { Sparsity = sparsity, CalibrationImages = 16, HeadPruning = HeadPruningMode.Soft, HeadGraphScoring = HeadGraphScoring.Scaled };
        var graph = GohspPruner.RankHeads(dense, data, o).Select(r => r.Importance(o.Direction)).ToArray();
        graph.SelectMany(g => g).Distinct().Count().Should().BeGreaterThan(1, "the graph must rank the heads unequally for the exponent to matter");
        var magnitude = StructuredProjection.Magnitude(dense);
        int[][] Expected(double gamma) => StructuredProjection.Allocate(dense.Architecture, magnitude.Select((b, i) => new BlockImportance
        {
            Heads = b.Heads.Select((v, h) => (float)(v * Math.Pow(graph[i][h], gamma))).ToArray(), QkDims = b.QkDims, VDims = b.VDims, Mlp = b.Mlp,
        }).ToArray(), sparsity, o.Budget).Blocks.Select(b => b.Heads.ToArray()).ToArray();
        int[][] Chosen(double gamma)
        {
            o.HeadGraphWeight = gamma;
            var r = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, data));
            r.Model.Dispose();
            return r.Report.Blocks.Select(b => b.KeptHeads.ToArray()).ToArray();
        }
        var magnitudeOnly = StructuredProjection.Allocate(dense.Architecture, magnitude, sparsity, o.Budget).Blocks.Select(b => b.Heads.ToArray()).ToArray();
        Chosen(0).Should().BeEquivalentTo(magnitudeOnly, c => c.WithStrictOrdering(), "γ = 0 scores heads by magnitude alone");
        foreach (double gamma in new[] { 0.5, 1.0, 3.0 })
            Chosen(gamma).Should().BeEquivalentTo(Expected(gamma), c => c.WithStrictOrdering(), $"γ = {gamma} scores a head by magnitude × importance^γ");
        Expected(3).Should().NotBeEquivalentTo(magnitudeOnly, c => c.WithStrictOrdering(), "a strong graph weight must change which heads are kept here");
    }

    [Fact]
    public void RankWithinBlockKeepsAsManyHeadsPerBlockAsMagnitudeAndTheGraphsBestOfEach()
    {
        const double sparsity = 0.6;
        var data = HeadGraphRankingTests.RandomImages(16);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarTiny(), seed: 5);
        var o = new GohspOptions
        {
            Sparsity = sparsity, CalibrationImages = 16, HeadPruning = HeadPruningMode.Soft, HeadGraphWeight = 3,
            HeadGraphScoring = HeadGraphScoring.RankWithinBlock,
        };
        var graph = GohspPruner.RankHeads(dense, data, o).Select(r => r.Importance(o.Direction)).ToArray();
        var magnitude = StructuredProjection.Magnitude(dense);
        var magnitudeOnly = StructuredProjection.Allocate(dense.Architecture, magnitude, sparsity, o.Budget).Blocks.Select(b => b.Heads.ToArray()).ToArray();
        var r = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, data));
        r.Model.Dispose();
        var kept = r.Report.Blocks.Select(b => b.KeptHeads.ToArray()).ToArray();
        for (int b = 0; b < kept.Length; b++)
        {
            kept[b].Length.Should().Be(magnitudeOnly[b].Length, $"block {b} keeps as many heads as magnitude alone would");
            var byGraph = Enumerable.Range(0, graph[b].Length).OrderByDescending(h => magnitude[b].Heads[h] * Math.Pow(graph[b][h], 3)).ThenBy(h => h)
                .Take(kept[b].Length).Order().ToArray();
            kept[b].Should().Equal(byGraph, $"block {b} keeps its best heads by magnitude × importance³");
        }
        kept.Should().NotBeEquivalentTo(magnitudeOnly, c => c.WithStrictOrdering(), "the graph must change which heads are kept here, or the test shows nothing");
        o.HeadGraphScoring = HeadGraphScoring.Scaled;
        var scaled = new GohspPruner(o).RankAndMaskHeads(new PruningContext(dense, data));
        scaled.Model.Dispose();
        scaled.Report.Blocks.Sum(b => b.KeptHeads.Length).Should().NotBe(kept.Sum(k => k.Length),
            "scaled scores let the graph change how many heads are kept as well, which RankWithinBlock does not");
    }

    [Theory]
    [InlineData(-0.5)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void AHeadGraphWeightThatIsNotAFiniteNonNegativeNumberIsRejectedNamingTheOption(double gamma)
    {
        var o = new GohspOptions { HeadGraphWeight = gamma };
        o.Invoking(x => x.Validate()).Should().Throw<ArgumentOutOfRangeException>().Where(e => e.ParamName == nameof(GohspOptions.HeadGraphWeight));
    }

    [Fact]
    public void DistillationAddsTheHandComputedKlAndChangesTheGradients()
    {
        using var student = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 1);
        using var teacher = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 2);
        using var scope = NewDisposeScope();
        var x = randn(4, 3, 32, 32, generator: new Generator(7));
        var y = tensor(new long[] { 0, 1, 2, 3 });
        double t = 3, alpha = 0.5;
        var kd = new Distillation(teacher, t, alpha);
        var logits = student.forward(x);
        var extra = ((ITrainingHook)kd).ExtraLoss(student, x, logits, y);
        extra.Should().NotBeNull();

        // by hand: α·T²·mean_i Σ_c p_t(c)·(log p_t(c) − log p_s(c)) at temperature T
        teacher.eval();
        using var tl = teacher.forward(x).detach();
        var pt = (tl / t).softmax(1).data<float>().ToArray(); var lpt = (tl / t).log_softmax(1).data<float>().ToArray();
        var lps = (logits.detach() / t).log_softmax(1).data<float>().ToArray();
        double kl = 0;
        for (int i = 0; i < pt.Length; i++) kl += pt[i] * (lpt[i] - lps[i]);
        double expected = alpha * t * t * kl / 4;
        extra!.ToDouble().Should().BeApproximately(expected, 1e-4 * Math.Max(1, expected));
        expected.Should().BeGreaterThan(1e-3, "two differently initialised models disagree");
        DistillationLoss.KL((logits / t).log_softmax(1), (logits.detach() / t).log_softmax(1)).ToDouble().Should().BeApproximately(0, 1e-6);

        // the KD term changes the gradients of the student
        student.zero_grad();
        nn.functional.cross_entropy(student.forward(x), y).backward();
        var plain = student.Head.weight.grad!.clone();
        student.zero_grad();
        var l2 = student.forward(x);
        (nn.functional.cross_entropy(l2, y) + ((ITrainingHook)kd).ExtraLoss(student, x, l2, y)!).backward();
        var withKd = student.Head.weight.grad!.clone();
        (withKd - plain).abs().max().ToDouble().Should().BeGreaterThan(1e-4);
    }

    /// <summary>
    /// DistillEveryStage: GOHSP's soft pruning distils from the dense model (not from the copy it trains in place, whose KL
    /// term would be zero), distillation in fine-tuning alone leaves soft pruning as it was, and the option needs Distillation.
    /// </summary>
    [Fact]
    public void DistillEveryStageDistilsSoftPruningFromTheDenseModelAndNeedsDistillation()
    {
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 96);
        var valid = GohspPrunerTests.Real(Cifar10Split.Test, 32);
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        new TrainingLoop(Stage(1, 1e-3, 1e-5)).Train(dense, train);
        double SoftPrunedNll(bool distil, bool everyStage)
        {
            var o = TinyOptions(0.5);
            o.SoftPruning = Stage(1, 2e-3, 2e-3);
            (o.Distillation, o.DistillEveryStage) = (distil, everyStage);
            var result = new GohspPruner(o).Run(new PruningContext(dense, train, valid));
            result.Model.Dispose();
            return result.Report.ValidationNll[GohspPruner.SoftPrunedStage];
        }

        double none = SoftPrunedNll(false, false), fineTuneOnly = SoftPrunedNll(true, false), everyStage = SoftPrunedNll(true, true);
        fineTuneOnly.Should().Be(none, "distillation in fine-tuning alone does not touch soft pruning");
        Math.Abs(everyStage - none).Should().BeGreaterThan(1e-5, "soft pruning distils from the dense model, which its copy leaves after the first step");
        new GohspOptions { DistillEveryStage = true }.Invoking(o => o.Validate()).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == nameof(PruningOptions.DistillEveryStage)).WithMessage("*Distillation is off*");
    }

    [Fact]
    public void FidelityMetricsEqualHandComputedValues()
    {
        // 3 images, 3 classes; labels 0, 1, 2
        double[][] p = [[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.5, 0.25, 0.25]];      // the pruned model
        double[][] q = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.1, 0.8]];        // the dense model
        float[] Log(double[][] a) => a.SelectMany(r => r.Select(v => (float)Math.Log(v))).ToArray();
        var m = Fidelity.Compute(Log(p), Log(q), new[] { 0, 1, 2 }, 3);
        m.Top1.Should().BeApproximately(2 / 3.0, 1e-9);                                        // argmax 0, 1, 0
        m.Nll.Should().BeApproximately(-(Math.Log(0.7) + Math.Log(0.4) + Math.Log(0.25)) / 3, 1e-6);
        m.Agreement.Should().BeApproximately(1 / 3.0, 1e-9);                                   // dense argmax 0, 2, 2
        double kl = 0;
        for (int i = 0; i < 3; i++) for (int c = 0; c < 3; c++) kl += q[i][c] * (Math.Log(q[i][c]) - Math.Log(p[i][c]));
        m.KlFromDense.Should().BeApproximately(kl / 3, 1e-6);
        var alone = Fidelity.Compute(Log(p), ReadOnlySpan<float>.Empty, new[] { 0, 1, 2 }, 3);
        double.IsNaN(alone.Agreement).Should().BeTrue();
        ((Action)(() => Fidelity.Compute(Log(p), Log(q), new[] { 0, 1 }, 3))).Should().Throw<ArgumentException>().WithMessage("*logProbabilities*");
    }

    [Fact]
    public void KindMeansForTheNormalisationIgnoreStructuresAPreviousPlanRemoved()
    {
        // one block, D = 8, one head of q/k 8 and v 8, MLP 8; a previous plan (SGMP) removed MLP neurons 4–7 (now zero)
        var arch = ViTArchitecture.Uniform(8, 4, 8, 1, 1, 8, 2);
        var imp = new[]
        {
            new BlockImportance
            {
                Heads = [1f],
                QkDims = [[0.5f, 1.5f, 0.5f, 1.5f, 0.5f, 1.5f, 0.5f, 1.5f]],
                VDims = [[1f, 1f, 1f, 1f, 1f, 1f, 1f, 1f]],
                Mlp = [0.2f, 0.2f, 1.0f, 1.0f, 0f, 0f, 0f, 0f],
            },
        };
        var within = new StructurePlan(ImmutableArray.Create(BlockPlan.KeepAll(arch.Blocks[0]) with { MlpNeurons = ImmutableArray.Create(0, 1, 2, 3) }));
        var means = BudgetAllocator.KindMeans(imp, within);
        means.Mlp.Should().BeApproximately(0.6, 1e-6, "the mean of the 4 kept neurons, not of all 8");
        BudgetAllocator.KindMeans(imp, null).Mlp.Should().BeApproximately(0.3, 1e-6);

        // The next removal: kept MLP neuron 0.2 normalises to 0.33 (vs 0.67 if the zeros counted); the lowest q/k dim to 0.5.
        long current = within.PrunedArchitecture(arch).ParameterCount;
        double sparsity = 1 - (current - 1.0) / arch.ParameterCount;
        var next = StructuredProjection.Allocate(arch, imp, sparsity, new BudgetOptions { Granularity = 1, Tolerance = 0 }, within: within);
        next.Blocks[0].MlpNeurons.Should().HaveCount(3, "an MLP neuron, the least important kept structure once zeros are ignored, goes next");
        next.Blocks[0].QkDims[0].Should().HaveCount(8);
    }

    /// <summary>
    /// The plans of 10 Z updates along a ramp to 60% over 90% of the steps, the weights reshuffled at random between
    /// updates so that a projection from all structures keeps different ones each time.
    /// </summary>
    private static List<StructurePlan> RampPlans(VisionTransformerModel model, IReadOnlyList<IReadOnlyList<int>>? fixedHeads, bool monotone)
    {
        var hook = new AdmmSoftPruning(0.6, fixedHeads, new AdmmOptions { MonotoneSupport = monotone, UpdateEverySteps = 1, SparsityRampFraction = 0.9 },
            new BudgetOptions { Granularity = 1 }, epochs: 1);
        const int steps = 10;
        hook.OnTrainingStart(model, 0, steps);
        var plans = new List<StructurePlan>();
        using var generator = new Generator(11);   // its own generator: tests running beside it draw from the global one
        for (int step = 0; step < steps; step++)
        {
            using (no_grad())
                foreach (var p in StructuredProjection.Prunable(model))
                    p.mul_(torch.rand(p.shape, generator: generator).add_(0.5));
            hook.AfterStep(model, step);
            plans.Add(hook.Plan!);
        }
        return plans;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AMonotoneSupportOnlyShrinksAlongTheRamp(bool monotone)
    {
        // Between Z updates the weights are reshuffled at random, so a projection from all structures keeps different
        // ones each time; a monotone support may only drop structures.
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var arch = model.Architecture;
        var plans = RampPlans(model, null, monotone);
        var removed = plans.Select(p => 1 - (double)p.PrunedArchitecture(arch).ParameterCount / arch.ParameterCount).ToArray();
        // the target grows to 60% by update 9 and stays there; each plan lands within the allocator's ±1% band of it
        removed.Zip(removed.Skip(1)).Should().OnlyContain(t => t.Second >= t.First - 0.01, "the ramp's target never shrinks");
        removed[^1].Should().BeApproximately(0.6, 0.01);
        removed[0].Should().BeLessThan(0.3, "the ramp starts low");
        var overlaps = plans.Zip(plans.Skip(1), (before, after) => after.Overlap(before, arch)).ToArray();
        output.WriteLine($"monotone {monotone}: removed {string.Join(", ", removed.Select(r => r.ToString("F3")))}; overlaps {string.Join(", ", overlaps.Select(o => o.ToString("F3")))}");
        if (monotone)
            overlaps.Should().AllSatisfy(o => o.Should().Be(1, "every kept structure was kept by the previous Z"));
        else
            overlaps.Should().Contain(o => o < 1, "a projection from all structures brings back some the previous Z removed");
    }

    [Fact]
    public void AMonotoneSupportWithHeadsFixedAtStageOneKeepsThoseHeadsAndOnlyShrinksTheRest()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var arch = model.Architecture;
        var fixedHeads = arch.Blocks.Select(b => (IReadOnlyList<int>)Enumerable.Range(1, b.Heads - 1).ToArray()).ToArray();
        var plans = RampPlans(model, fixedHeads, monotone: true);
        plans.Should().AllSatisfy(p => p.Blocks.Select(b => b.Heads.ToArray()).Should().BeEquivalentTo(fixedHeads, c => c.WithStrictOrdering(),
            "the heads stage 1 fixed are kept in every projection"));
        plans.Zip(plans.Skip(1), (before, after) => after.Overlap(before, arch)).Should().AllSatisfy(o => o.Should().Be(1, "every kept structure was kept by the previous Z"));
        var removed = plans.Select(p => 1 - (double)p.PrunedArchitecture(arch).ParameterCount / arch.ParameterCount).ToArray();
        removed[^1].Should().BeGreaterThan(removed[0] + 0.1, "the ramp removes more structures as it goes");
    }

    [Theory]
    [InlineData(0.25, 10)]   // ρ_max after a quarter of the 40 steps, while the sparsity ramp runs to step 30
    [InlineData(0.0, 30)]    // tied to the end of the ramp
    public void RhoReachesItsMaximumAtTheRhoRampWhateverTheSparsityRamp(double rhoRamp, int maxAt)
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var admm = new AdmmOptions { UpdateEverySteps = 1, SparsityRampFraction = 0.75, RhoRampFraction = rhoRamp };
        var hook = new AdmmSoftPruning(0.5, null, admm, new BudgetOptions { Granularity = 1 }, epochs: 1);
        hook.OnTrainingStart(model, 0, 40);
        var rho = new List<double>();
        for (int step = 0; step < 40; step++)
        {
            hook.AfterStep(model, step);
            rho.Add(hook.Rho);
        }
        rho[maxAt - 2].Should().BeLessThan(admm.RhoMax * 0.9, "ρ is still growing one update before");
        rho[maxAt - 1].Should().BeApproximately(admm.RhoMax, admm.RhoMax * 1e-9, $"ρ reaches ρ_max at update {maxAt}");
        rho.Skip(maxAt).Should().AllSatisfy(r => r.Should().Be(admm.RhoMax));
        hook.TargetSparsityAt(29).Should().BeLessThan(0.5, "the sparsity ramp is independent of ρ's");
        hook.TargetSparsityAt(30).Should().Be(0.5);
    }

    [Theory]
    [InlineData(ProjectionMetric.Fisher)]
    [InlineData(ProjectionMetric.Euclidean)]
    public void TheFisherMetricWeightsEachStructureByItsRunningMeanSquaredGradient(ProjectionMetric metric)
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var hook = new AdmmSoftPruning(0.5, null, new AdmmOptions { Metric = metric }, new BudgetOptions { Granularity = 1 }, epochs: 1);
        hook.OnTrainingStart(model, 0, 10);
        var magnitude = StructuredProjection.Magnitude(model);
        hook.Importance(model, p => p).Should().BeEquivalentTo(magnitude, "before the first gradient every metric is the Euclidean one");

        // one backward pass whose gradient is 1 on MLP neuron 2 of block 0 (its fc1 row, bias and fc2 column) and 0 elsewhere
        const int neuron = 2;
        var mlp = model.Blocks[0].mlp;
        model.zero_grad();
        (mlp.fc1.weight[neuron].sum() + mlp.fc1.bias[neuron] + mlp.fc2.weight.select(1, neuron).sum()).backward();
        ((ITrainingHook)hook).AfterBackward(model, 0);
        model.zero_grad();

        var weighted = hook.Importance(model, p => p);
        if (metric == ProjectionMetric.Euclidean)
            weighted.Should().BeEquivalentTo(magnitude, "the Euclidean metric ignores the gradients");
        else
        {
            // F = (1 − 0.95)·1² on that neuron, 0 elsewhere: its importance is 0.05 × its magnitude, every other structure's is 0
            weighted[0].Mlp[neuron].Should().BeApproximately(0.05f * magnitude[0].Mlp[neuron], 1e-6f * magnitude[0].Mlp[neuron]);
            weighted[0].Mlp.Where((_, j) => j != neuron).Should().OnlyContain(v => v == 0);
            weighted.Skip(1).SelectMany(b => b.Mlp.Concat(b.Heads)).Should().OnlyContain(v => v == 0);
            weighted[0].Heads.Should().OnlyContain(v => v == 0, "no gradient reached the attention");

            // the next projection keeps that neuron, the only structure of its kind with a non-zero importance
            hook.AfterStep(model, 9);
            hook.Plan!.Blocks[0].MlpNeurons.Should().Contain(neuron);
        }
    }

    [Fact]
    public void ADisposedAdmmHookRefusesFurtherUse()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var hook = new AdmmSoftPruning(0.5, null, new AdmmOptions(), new BudgetOptions { Granularity = 1 }, epochs: 1);
        hook.OnTrainingStart(model, 0, 10);
        hook.FinalPlan(model).Blocks.Should().HaveCount(model.Architecture.Depth);
        hook.Dispose();
        hook.Invoking(h => h.FinalPlan(model)).Should().Throw<ObjectDisposedException>("Z and U are released");
        hook.Invoking(h => h.OnTrainingStart(model, 0, 10)).Should().Throw<ObjectDisposedException>();
        hook.Invoking(h => h.Dispose()).Should().NotThrow("disposing twice is harmless");
    }

    [Fact]
    public void AnAdmmStateThatFailsPartWayLeavesTheHookAsItWas()
    {
        var hook = new AdmmSoftPruning(0.5, null, new AdmmOptions());
        var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) { w.Write(123.0); w.Write(1); }   // ρ, one matrix, then nothing
        ms.Position = 0;
        using var r = new BinaryReader(ms);
        ((Action)(() => ((ITrainingHook)hook).LoadState(r))).Should().Throw<Exception>();
        hook.Rho.Should().Be(new AdmmOptions().Rho, "nothing of a checkpoint that could not be read is applied");
        hook.ResidualHistory.Should().BeEmpty();
    }

    [Fact]
    public void ValidationSplitIsSeededStratifiedAndDisjoint()
    {
        var labels = Enumerable.Range(0, 200).Select(i => i % 4).ToArray();
        var a = ImageTensorData.ValidationIndices(labels, 0.1, 7);
        var b = ImageTensorData.ValidationIndices(labels, 0.1, 7);
        var c = ImageTensorData.ValidationIndices(labels, 0.1, 8);
        a.Should().Equal(b);
        a.Should().NotEqual(c);
        a.Should().HaveCount(20);
        a.GroupBy(i => labels[i]).Select(g => g.Count()).Should().AllBeEquivalentTo(5);
        ImageTensorData.Complement(a, 200).Intersect(a).Should().BeEmpty();
        ImageTensorData.Complement(a, 200).Length.Should().Be(180);
    }
}
