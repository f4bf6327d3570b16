using FluentAssertions;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>AdamW's state carried across the surgery (<see cref="PruningOptions.CarryOptimizerMoments"/>).</summary>
public class OptimizerMomentsTests
{
    /// <summary>
    /// The surgery slices the moments as it slices the weights: with the dense weights as first moment and their squares
    /// as second, the sliced moments are the pruned weights (and their squares), except the query rows, whose fold √(d′/d)
    /// divides the moments where it multiplies the weights.
    /// </summary>
    [Fact]
    public void TheSurgerySlicesTheMomentsAsTheWeights()
    {
        var arch = ViTArchitecture.CifarMicro();
        using var model = new VisionTransformerModel(arch, seed: 4);
        using (no_grad()) foreach (var p in model.parameters()) p.add_(randn_like(p) * 0.05);
        var plan = StructuredProjection.Allocate(arch, StructuredProjection.Magnitude(model), 0.5, new BudgetOptions { Granularity = 1 });
        using var pruned = HardPruning.Prune(model, plan);
        using var dense = new OptimizerMoments(model.named_parameters().ToDictionary(np => np.name,
            np => new OptimizerMoments.Entry(7, np.parameter.detach().clone(), (np.parameter * np.parameter).detach())));
        using var sliced = HardPruning.SliceMoments(dense, arch, plan);

        var prunedWeights = pruned.named_parameters().ToDictionary(np => np.name, np => np.parameter);
        sliced.Entries.Keys.Should().BeEquivalentTo(prunedWeights.Keys);
        for (int b = 0; b < arch.Depth; b++)
        {
            int kept = plan.Blocks[b].QkDims[0].Length * plan.Blocks[b].Heads.Length;
            double s2 = (double)plan.Blocks[b].QkDims[0].Length / arch.Blocks[b].QkDim;   // the fold squared
            s2.Should().BeLessThan(1, "the test needs q/k dims removed in every block");
            string name = $"blocks.{b}.attn.qkv.weight";
            var w = prunedWeights[name]; var m = sliced.Entries[name].ExpAvg; var v = sliced.Entries[name].ExpAvgSq;
            m.shape.Should().Equal(w.shape);
            m.narrow(0, 0, kept).allclose(w.narrow(0, 0, kept) / s2, rtol: 1e-4, atol: 1e-6).Should().BeTrue("query rows: W·s in the weights, m/s in the moments");
            m.narrow(0, kept, w.shape[0] - kept).allclose(w.narrow(0, kept, w.shape[0] - kept)).Should().BeTrue("key and value rows are sliced alone");
            v.narrow(0, 0, kept).allclose((w.narrow(0, 0, kept) * w.narrow(0, 0, kept)) / (s2 * s2), rtol: 1e-4, atol: 1e-7).Should().BeTrue();
            foreach (string other in new[] { "attn.proj.weight", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight" })
                sliced.Entries[$"blocks.{b}.{other}"].ExpAvg.allclose(prunedWeights[$"blocks.{b}.{other}"]).Should().BeTrue(other);
        }
        sliced.Entries["head.weight"].ExpAvg.allclose(prunedWeights["head.weight"]).Should().BeTrue();
        sliced.Entries.Values.Should().OnlyContain(e => e.Step == 7);
    }

    /// <summary>A loop given carried moments starts from them: its step counts continue from theirs.</summary>
    [Fact]
    public void ALoopStartsFromTheCarriedMoments()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 5);
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 128);
        var first = new TrainingLoop(BaselinePrunerTests.Stage(), "first") { CaptureMoments = true };
        first.Train(model, train);
        using var after = first.FinalMoments!;
        after.Entries.Values.Should().OnlyContain(e => e.Step == 2, "two batches of 64");
        after.Entries["head.weight"].ExpAvgSq.abs().sum().item<float>().Should().BeGreaterThan(0);

        var second = new TrainingLoop(BaselinePrunerTests.Stage(), "second") { InitialMoments = after, CaptureMoments = true };
        second.Train(model, train);
        using var continued = second.FinalMoments!;
        continued.Entries.Values.Should().OnlyContain(e => e.Step == 4);
        var fresh = new TrainingLoop(BaselinePrunerTests.Stage(), "fresh") { CaptureMoments = true };
        fresh.Train(model, train);
        using var restarted = fresh.FinalMoments!;
        restarted.Entries.Values.Should().OnlyContain(e => e.Step == 2);
    }

    /// <summary>
    /// SGMP and GOHSP with <see cref="PruningOptions.CarryOptimizerMoments"/>: the fine-tuning starts from the stage before
    /// the cut (the log says from which step) and ends elsewhere than a fresh start from the same seed.
    /// </summary>
    [Theory]
    [InlineData(PruningMethod.Sgmp)]
    [InlineData(PruningMethod.Gohsp)]
    public void APruningRunCarriesTheMomentsAcrossTheCut(PruningMethod method)
    {
        using var dense = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 6);
        var train = GohspPrunerTests.Real(Cifar10Split.Train, 128);
        float[] Run(bool carry, List<string> log)
        {
            var o = PruningProtocol.ApplyEpochBudget(PruningOptions.Create(method), 2, BaselinePrunerTests.Stage());
            o.Sparsity = 0.5;
            o.CarryOptimizerMoments = carry;
            if (o is GohspOptions g) g.CalibrationImages = 32;
            var result = PruningProtocol.Run(new PruningContext(dense, train) { Log = log.Add }, o);
            using var model = result.Model;
            return model.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).ToArray();
        }
        var carriedLog = new List<string>();
        var carried = Run(true, carriedLog);
        var freshLog = new List<string>();
        var fresh = Run(false, freshLog);
        carriedLog.Should().ContainSingle(l => l.Contains("fine-tuning starts from the optimiser's moments of the") && l.Contains("(step 2)"));
        freshLog.Should().NotContain(l => l.Contains("optimiser's moments"));
        carried.Length.Should().Be(fresh.Length, "the same plan");
        carried.Zip(fresh).Max(p => Math.Abs(p.First - p.Second)).Should().BeGreaterThan(1e-6f, "the carried moments change the fine-tuning's steps");
    }
}
