using FluentAssertions;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>SOMP and SGMP (core): budget, monotone masks that stay zero, heads dropped by magnitude, bad options.</summary>
public class BaselinePrunerTests(ITestOutputHelper output)
{
    private static readonly Lazy<ImageTensorData> Train = new(() => GohspPrunerTests.Real(Cifar10Split.Train, 256));

    internal static ViTTrainingOptions Stage(bool constantRate = false) => new()
    {
        Epochs = 1, BatchSize = 64, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 1e-3,
        MinLearningRate = constantRate ? 1e-3 : 1e-5, WarmupEpochs = 0,
    };

    [Theory]
    [InlineData(PruningMethod.Somp, 0.3)]
    [InlineData(PruningMethod.Somp, 0.5)]
    [InlineData(PruningMethod.Somp, 0.7)]
    [InlineData(PruningMethod.Sgmp, 0.3)]
    [InlineData(PruningMethod.Sgmp, 0.5)]
    [InlineData(PruningMethod.Sgmp, 0.7)]
    public void BaselinesHitTheBudgetWithinOnePercent(PruningMethod method, double sparsity)
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        var before = ModelChecks.Snapshot(dense);
        var valid = Train.Value.Take(64);
        var log = new List<string>();
        var result = method == PruningMethod.Somp
            ? new SompPruner(new SompOptions { Sparsity = sparsity, FineTune = Stage() }).Run(new PruningContext(dense, Train.Value, valid) { Log = log.Add })
            : new SgmpPruner(new SgmpOptions { Sparsity = sparsity, Gradual = Stage(constantRate: true), FineTune = Stage() }).Run(new PruningContext(dense, Train.Value, valid) { Log = log.Add });
        using var pruned = result.Model;
        var r = result.Report;
        output.WriteLine(string.Join("\n", log));

        r.Method.Should().Be(method.ToString().ToLowerInvariant());
        r.RequestedSparsity.Should().Be(sparsity);
        r.AchievedSparsity.Should().BeApproximately(sparsity, 0.01);
        r.ParametersBefore.Should().Be(dense.Architecture.ParameterCount);
        r.ParametersAfter.Should().Be(pruned.Architecture.ParameterCount);
        r.FlopsAfter.Should().Be(pruned.Architecture.ForwardFlops).And.BeLessThan(r.FlopsBefore);
        r.Blocks.Should().OnlyContain(b => b.KeptHeads.Length >= 1);
        r.Details.Should().BeNull("the baselines have no head graph (no stationary probabilities) and no ADMM residuals");
        r.Blocks.Select(b => b.KeptHeads.Length).Should().Equal(pruned.Architecture.Blocks.Select(b => b.Heads));
        r.ValidationAccuracy.Keys.Should().BeEquivalentTo(method == PruningMethod.Sgmp
            ? ["dense", "gradually-pruned", "hard-pruned", "fine-tuned"] : ["dense", "hard-pruned", "fine-tuned"]);
        r.ValidationNll.Keys.Should().BeEquivalentTo(r.ValidationAccuracy.Keys);
        r.PreCutStage.Should().Be(method == PruningMethod.Sgmp ? "gradually-pruned" : "dense");
        r.CutShockTop1.Should().NotBeNull();
        ModelChecks.DenseUntouchedAndPrunedRuns(dense, before, pruned);
    }

    [Fact]
    public void SompRanksHeadsByMagnitudeAndCanDropWholeHeads()
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        var a = dense.Architecture;
        int h = a.Blocks[0].Heads, dq = a.Blocks[0].QkDim, dv = a.Blocks[0].VDim;
        using (no_grad())
        {
            // head 2 of block 0 and head 0 of block 3: q, k, v rows and output-projection columns shrunk 1000×
            foreach (var (block, head) in new[] { (0, 2), (3, 0) })
            {
                var attn = dense.Blocks[block].attn;
                foreach (int off in new[] { head * dq, h * dq + head * dq }) attn.qkv.weight.narrow(0, off, dq).mul_(1e-3);
                attn.qkv.weight.narrow(0, 2 * h * dq + head * dv, dv).mul_(1e-3);
                attn.proj.weight.narrow(1, head * dv, dv).mul_(1e-3);
            }
        }
        var fine = Stage(); fine.Epochs = 1;
        var result = new SompPruner(new SompOptions { Sparsity = 0.3, FineTune = fine }).Run(new PruningContext(dense, Train.Value.Take(64)));
        using var pruned = result.Model;
        result.Report.Blocks[0].KeptHeads.Should().NotContain(2);
        result.Report.Blocks[3].KeptHeads.Should().NotContain(0);
        result.Report.Blocks.Sum(b => b.KeptHeads.Length).Should().BeLessThan(a.Blocks.Sum(b => b.Heads));
    }

    [Fact]
    public void SgmpHookKeepsPrunedStructuresExactlyZeroAfterEveryStepAndNeverRevivesThem()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var arch = model.Architecture;
        var data = Train.Value.Take(128);                                  // batch 32 → 4 steps per epoch, 2 epochs → 8 steps
        var schedule = new SgmpSchedule(0.1, 0.5, startStep: 1, frequency: 1, pruningSteps: 4); // prune after steps 1..5
        using var sgmp = new GradualMagnitudePruning(schedule);
        var checker = new CheckingHook(sgmp);
        var o = Stage(constantRate: true); o.Epochs = 2; o.BatchSize = 32;
        new TrainingLoop(o, "sgmp-test") { Hook = checker }.Train(model, data);

        checker.Steps.Should().Be(8);
        checker.MaskedSteps.Should().Be(7, "the mask exists from step 1 on and is checked after every step");
        checker.Violations.Should().BeEmpty("pruned weights must be exactly zero after every optimiser step");
        sgmp.History.Select(e => e.Step).Should().Equal(1, 2, 3, 4, 5);
        sgmp.History.Select(e => e.TargetSparsity).Should().Equal(new[] { 1L, 2, 3, 4, 5 }.Select(schedule.SparsityAt));
        sgmp.History.Select(e => e.AchievedSparsity).Should().BeInAscendingOrder();
        sgmp.History[^1].AchievedSparsity.Should().BeApproximately(0.5, 0.01);
        checker.Revived.Should().BeEmpty("a structure, once pruned, stays pruned");

        // the plan and history survive a checkpoint round trip, and restoring it re-applies the mask
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) sgmp.SaveState(w);
        ms.Position = 0;
        using var restored = new GradualMagnitudePruning(schedule);
        using (var r = new BinaryReader(ms)) restored.LoadState(r);
        Describe(restored.Plan!).Should().Be(Describe(sgmp.Plan!));
        restored.History.Should().Equal(sgmp.History);
        using var fresh = new VisionTransformerModel(arch, seed: 9);
        restored.OnTrainingStart(fresh, 2, 4);
        CheckingHook.NonZeroOutside(fresh, restored.Plan!).Should().Be(0);
    }

    [Theory]
    [InlineData(ProjectionMetric.Euclidean)]
    [InlineData(ProjectionMetric.Fisher)]
    public void AnInterruptedGradualPhaseResumesFromItsCheckpointWithTheMask(ProjectionMetric metric)
    {
        var data = Train.Value.Take(128);
        // 4 steps per epoch; prune after steps 1 (20%) and 6 (50%): the resumed epoch starts with two steps under the restored mask
        var schedule = new SgmpSchedule(0.2, 0.5, startStep: 1, frequency: 5, pruningSteps: 1);
        var dir = Directory.CreateTempSubdirectory("sgmp-resume-").FullName;
        try
        {
            ViTTrainingOptions Options(string folder) { var o = Stage(constantRate: true); o.Epochs = 2; o.BatchSize = 32; o.CheckpointFolder = folder; return o; }
            using var straight = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 4);
            using var straightHook = new GradualMagnitudePruning(schedule, metric: metric);
            new TrainingLoop(Options(null), "sgmp-gradual") { Hook = straightHook }.Train(straight, data);

            // cancelled after the first epoch (its checkpoint is written before the epoch is reported) …
            using var cts = new CancellationTokenSource();
            using var first = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 4);
            using var firstHook = new GradualMagnitudePruning(schedule, metric: metric);
            var stop = new SyncProgress<ViTTrainingProgress>(p => { if (p.EpochCompleted) cts.Cancel(); });
            var cut = () => new TrainingLoop(Options(dir), "sgmp-gradual", null, stop) { Hook = firstHook }.Train(first, data, null, cts.Token);
            cut.Should().Throw<OperationCanceledException>();
            firstHook.History.Select(e => e.Step).Should().Equal(1);

            // … and resumed by a new loop and a new hook from the checkpoint: same mask history, same weights
            using var resumed = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 4);
            // (with the Fisher metric the second pruning step ranks by the estimate of all 6 steps, so the checkpoint must carry it)
            using var resumedHook = new GradualMagnitudePruning(schedule, metric: metric);
            var checker = new CheckingHook(resumedHook);
            var loop = new TrainingLoop(Options(dir), "sgmp-gradual") { Hook = checker };
            loop.Train(resumed, data);
            loop.StartEpoch.Should().Be(1);
            (checker.Steps, checker.MaskedSteps).Should().Be((4, 4), "the restored mask is in force from the first resumed step");
            checker.Violations.Should().BeEmpty();
            resumedHook.History.Select(e => e.Step).Should().Equal(straightHook.History.Select(e => e.Step));
            StructuredPruningTests.Kept(resumedHook.Plan!).Should().BeEquivalentTo(StructuredPruningTests.Kept(straightHook.Plan!));
            TensorAssert.CloseWeights(resumed, straight);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BadOptionsAreRejectedBeforeAnyWorkNamingTheOption()
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 1);
        var data = HeadGraphRankingTests.RandomImages(8);
        foreach (double s in new[] { 0, 1, -0.2, double.NaN })
        {
            ((Action)(() => new SompPruner(new SompOptions { Sparsity = s }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
                .Where(e => e.ParamName == "Sparsity").WithMessage("*Sparsity*(0, 1)*");
            ((Action)(() => new SgmpPruner(new SgmpOptions { Sparsity = s }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
                .Where(e => e.ParamName == "Sparsity");
        }
        var badFine = Stage(); badFine.Epochs = 0;
        ((Action)(() => new SompPruner(new SompOptions { FineTune = badFine }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "FineTune.Epochs").WithMessage("Invalid FineTune options: Epochs must be positive*");
        var badGradual = Stage(); badGradual.BatchSize = -1;
        ((Action)(() => new SgmpPruner(new SgmpOptions { Gradual = badGradual }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "Gradual.BatchSize");
        ((Action)(() => new SompPruner(new SompOptions { DistillationTemperature = 0 }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "DistillationTemperature");
        // 8 images, batch 64: one step, so a ramp fits nowhere
        ((Action)(() => new SgmpPruner(new SgmpOptions { Gradual = Stage() }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "StartStep").WithMessage("*give the Gradual phase more epochs*");
        ((Action)(() => new SompPruner(new SompOptions()).Run(new PruningContext(dense, HeadGraphRankingTests.RandomImages(0))))).Should().Throw<ArgumentException>().WithMessage("*no rows*");
        ((Action)(() => new SgmpPruner(new SgmpOptions { Metric = (ProjectionMetric)7 }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "Metric").WithMessage("*Metric must be Euclidean or Fisher*");
        ((Action)(() => new SompPruner(new SompOptions { Importance = (SompImportance)5 }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "Importance").WithMessage("*Importance must be Magnitude, Fisher or Taylor*");
        ((Action)(() => new SompPruner(new SompOptions { Importance = SompImportance.Taylor, CalibrationImages = 0 }).Run(new PruningContext(dense, data)))).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "CalibrationImages").WithMessage("*CalibrationImages*≥ 1*");
    }

    /// <summary>
    /// SOMP's Taylor criterion is Σ|w·∂L/∂w| per structure with the gradient of the mean loss over the calibration images,
    /// normalised per parameter as the magnitude is; its Fisher criterion is Σ F·w² with F the squared gradient of each
    /// training-size batch. Both are checked by hand for every MLP neuron of block 0, with the gradients taken here.
    /// </summary>
    [Fact]
    public void SompGradientCriteriaEqualTheirHandComputedSums()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 4);
        var calibration = Train.Value.Take(96);
        var o = Stage(); o.BatchSize = 64; o.EvaluationBatchSize = 32;
        var before = ModelChecks.Snapshot(model);
        var taylor = TaylorImportance.Structures(model, calibration, o)[0].Mlp;
        var fisher = FisherImportance.OneShot(model, calibration, o)[0].Mlp;
        foreach (var p in model.parameters())
            if (p.grad is { } g) g.abs().max().item<float>().Should().Be(0, "the gradients are cleared afterwards");
        foreach (var (k, v) in model.state_dict()) TensorAssert.Same(v, before[k]).Should().BeTrue($"the weights are not changed ({k})");

        var mlp = model.Blocks[0].mlp;
        int d = model.Architecture.EmbedDim;
        var all = Enumerable.Range(0, calibration.Count).ToArray();
        float[] Neurons(Func<Tensor, Tensor, Tensor> perElement, Func<Tensor, Tensor> w1, Func<Tensor, Tensor> b1, Func<Tensor, Tensor> w2)
        {
            using var _ = no_grad();
            var rows = perElement(mlp.fc1.weight, w1(mlp.fc1.weight)).sum(1) + perElement(mlp.fc1.bias, b1(mlp.fc1.bias));
            var cols = perElement(mlp.fc2.weight, w2(mlp.fc2.weight)).sum(new long[] { 0 });
            return ((rows + cols) / (2 * d + 1)).data<float>().ToArray();
        }
        Tensor Loss(int start, int count)
        {
            var (x, y) = TrainingLoop.MakeBatch(calibration, all.AsSpan(start, count), o, null, CPU);
            model.eval();
            return nn.functional.cross_entropy(model.forward(x), y);
        }

        // Taylor: one backward of the mean loss over all 96 images
        model.zero_grad();
        Loss(0, calibration.Count).backward();
        var expectedTaylor = Neurons((w, g) => (w * g).abs(), w => w.grad!, b => b.grad!, w => w.grad!);
        taylor.Should().Equal(expectedTaylor, (a, b) => Math.Abs(a - b) <= 1e-4f * Math.Max(1e-6f, Math.Abs(b)) + 1e-9f);

        // Fisher: F = running mean (decay 0.95) of the squared gradients of the batches [0, 64) and [64, 96)
        var f = new Dictionary<string, Tensor>();
        foreach (var (start, count) in new[] { (0, 64), (64, 32) })
        {
            model.zero_grad();
            Loss(start, count).backward();
            using var _ = no_grad();
            foreach (var (name, p) in new[] { ("w1", mlp.fc1.weight), ("b1", mlp.fc1.bias), ("w2", mlp.fc2.weight) })
                f[name] = (f.TryGetValue(name, out var prev) ? prev * FisherImportance.Decay : zeros_like(p)) + (1 - FisherImportance.Decay) * p.grad!.square();
        }
        model.zero_grad();
        var expectedFisher = Neurons((w, fw) => w.square() * fw, _ => f["w1"], _ => f["b1"], _ => f["w2"]);
        fisher.Should().Equal(expectedFisher, (a, b) => Math.Abs(a - b) <= 1e-4f * Math.Max(1e-6f, Math.Abs(b)) + 1e-12f);
        taylor.Should().NotEqual(StructuredProjection.Magnitude(model)[0].Mlp, "the criterion is not the magnitude");
    }

    /// <summary>SOMP cuts the plan of the criterion it is given: Taylor and Fisher plans differ from the magnitude plan at the same budget.</summary>
    [Fact]
    public void SompCutsThePlanOfItsCriterion()
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 3);
        var plans = new Dictionary<SompImportance, string>();
        foreach (var importance in new[] { SompImportance.Magnitude, SompImportance.Taylor, SompImportance.Fisher })
        {
            var log = new List<string>();
            var result = new SompPruner(new SompOptions { Sparsity = 0.5, FineTune = Stage(), Importance = importance, CalibrationImages = 128 })
                .Run(new PruningContext(dense, Train.Value) { Log = log.Add });
            using var pruned = result.Model;
            result.Report.AchievedSparsity.Should().BeApproximately(0.5, 0.01);
            plans[importance] = string.Join(" | ", result.Report.Blocks.Select(b => $"{string.Join(",", b.KeptHeads)} {b.QkDim}/{b.VDim}-{b.MlpWidth}"));
            if (importance != SompImportance.Magnitude)
                log.Should().Contain(l => l.Contains($"ranked by the {importance} criterion on 128 calibration images"));
        }
        var magnitudePlan = StructuredProjection.Allocate(dense.Architecture, StructuredProjection.Magnitude(dense), 0.5);
        var taylorPlan = StructuredProjection.Allocate(dense.Architecture, TaylorImportance.Structures(dense, Train.Value.Take(128), Stage()), 0.5);
        StructuredPruningTests.Kept(taylorPlan).Should().NotBeEquivalentTo(StructuredPruningTests.Kept(magnitudePlan), "Taylor importance ranks by the loss, not the weights");
        output.WriteLine(string.Join("\n", plans.Select(p => $"{p.Key}: {p.Value}")));
    }

    [Theory]
    [InlineData(ProjectionMetric.Euclidean)]
    [InlineData(ProjectionMetric.Fisher)]
    public void SgmpInTheFisherMetricRanksByTheRunningMeanSquaredGradient(ProjectionMetric metric)
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var schedule = new SgmpSchedule(0, 0.5, startStep: 0, frequency: 1, pruningSteps: 1);
        using var sgmp = new GradualMagnitudePruning(schedule, new BudgetOptions { Granularity = 1 }, metric: metric);
        sgmp.OnTrainingStart(model, 0, 10);

        // the MLP neuron of block 0 with the smallest magnitude, the first the magnitude ranking gives up
        var magnitude = StructuredProjection.Magnitude(model)[0].Mlp;
        int neuron = Array.IndexOf(magnitude, magnitude.Min());
        // one backward pass whose gradient is 1 on that neuron (its fc1 row, bias and fc2 column) and 0 elsewhere
        var mlp = model.Blocks[0].mlp;
        model.zero_grad();
        (mlp.fc1.weight[neuron].sum() + mlp.fc1.bias[neuron] + mlp.fc2.weight.select(1, neuron).sum()).backward();
        sgmp.AfterBackward(model, 0);
        model.zero_grad();

        sgmp.PruneTo(model, 0.5);
        if (metric == ProjectionMetric.Fisher)
            sgmp.Plan!.Blocks[0].MlpNeurons.Should().Contain(neuron, "in the Fisher metric it is the only MLP neuron with a loss cost");
        else
            sgmp.Plan!.Blocks[0].MlpNeurons.Should().NotContain(neuron, "the magnitude ranking ignores gradients");
    }

    /// <summary>A GOHSP stage-1 output (head-masked) is not a dense model: the baselines refuse it instead of dropping the mask.</summary>
    [Fact]
    public void BaselinesRefuseAHeadMaskedModel()
    {
        using var masked = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 1);
        masked.SetHeadMasks(Enumerable.Range(0, masked.Architecture.Depth).Select(_ => (IReadOnlyList<int>)[0, 1]).ToArray());
        var data = HeadGraphRankingTests.RandomImages(8);
        ((Action)(() => new SompPruner(new SompOptions { FineTune = Stage() }).Run(new PruningContext(masked, data)))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "dense").WithMessage("SOMP prunes a dense model, but this one carries a GOHSP head mask*ClearHeadMasks*");
        ((Action)(() => new SgmpPruner(new SgmpOptions { Gradual = Stage(), FineTune = Stage() }).Run(new PruningContext(masked, data)))).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "dense").WithMessage("SGMP prunes a dense model*");
        masked.ClearHeadMasks();
        masked.KeptHeads.Should().BeNull("after ClearHeadMasks the model is dense again and the baselines accept it");
    }

    private static string Describe(StructurePlan p) => string.Join(" | ", p.Blocks.Select(b =>
        $"{string.Join(",", b.Heads)}; {string.Join("/", b.QkDims.Select(d => string.Join(",", d)))}; {string.Join("/", b.VDims.Select(d => string.Join(",", d)))}; {string.Join(",", b.MlpNeurons)}"));

    /// <summary>Wraps the SGMP hook; after every step checks that everything outside its plan is exactly zero.</summary>
    private sealed class CheckingHook(GradualMagnitudePruning inner) : ITrainingHook
    {
        private HashSet<string> _kept;
        public int Steps, MaskedSteps;
        public List<string> Violations { get; } = new();
        public List<string> Revived { get; } = new();

        public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch) => inner.OnTrainingStart(model, startEpoch, stepsPerEpoch);

        public void AfterBackward(VisionTransformerModel model, long globalStep) => inner.AfterBackward(model, globalStep);

        public void AfterStep(VisionTransformerModel model, long globalStep)
        {
            inner.AfterStep(model, globalStep);
            Steps++;
            if (inner.Plan is null) return;
            MaskedSteps++;
            long nonZero = NonZeroOutside(model, inner.Plan);
            if (nonZero != 0) Violations.Add($"step {globalStep}: {nonZero} pruned weights are not zero");
            var kept = StructuredPruningTests.Kept(inner.Plan);
            if (_kept is not null) Revived.AddRange(kept.Except(_kept).Select(k => $"step {globalStep}: {k}"));
            _kept = kept;
        }

        public void OnEpochEnd(VisionTransformerModel model, int epoch, IDictionary<string, double> extra) => inner.OnEpochEnd(model, epoch, extra);
        public void SaveState(BinaryWriter writer) => inner.SaveState(writer);
        public void LoadState(BinaryReader reader) => inner.LoadState(reader);
        // the checker is transparent: a checkpoint of the inner hook's run is this run's
        public string Fingerprint => ((ITrainingHook)inner).Fingerprint;

        internal static long NonZeroOutside(VisionTransformerModel model, StructurePlan plan)
        {
            using var scope = NewDisposeScope();
            var masks = StructuredProjection.Masks(model.Architecture, plan, model.parameters().First().device);
            try
            {
                using var _ = no_grad();
                long n = 0;
                foreach (var (p, mask) in StructuredProjection.PrunableWithMasks(model, masks))
                {
                    n += p.mul(mask.neg().add(1)).ne(0).sum().ToInt64();
                }
                return n;
            }
            finally { foreach (var m in masks) m.Dispose(); }
        }

    }
}
