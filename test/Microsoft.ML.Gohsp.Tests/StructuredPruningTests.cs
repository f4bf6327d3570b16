using FluentAssertions;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

public class StructuredPruningTests
{
    [Theory]
    [InlineData("cifar-tiny", 0.2)]
    [InlineData("cifar-tiny", 0.4)]
    [InlineData("cifar-tiny", 0.6)]
    [InlineData("cifar-tiny", 0.8)]
    [InlineData("cifar-micro", 0.5)]
    [InlineData("deit-small", 0.4)]
    [InlineData("deit-small", 0.5)]
    public void BudgetIsHitWithinOnePercent(string preset, double sparsity)
    {
        var arch = ViTArchitecture.FromPreset(preset, preset.StartsWith("deit") ? 1000 : 10);
        var imp = RandomImportance(arch, seed: 3);
        var plan = StructuredProjection.Allocate(arch, imp, sparsity);
        var pruned = plan.PrunedArchitecture(arch);
        double removed = 1.0 - (double)pruned.ParameterCount / arch.ParameterCount;
        removed.Should().BeApproximately(sparsity, 0.01);
        pruned.IsHomogeneous.Should().BeFalse("the allocation is global, so blocks end up different");
    }

    [Fact]
    public void BudgetIsHitForAHeterogeneousArchitectureWithFixedHeads()
    {
        var arch = ViTArchitectureTests.Heterogeneous();
        var imp = RandomImportance(arch, seed: 5);
        var fixedHeads = new[] { new[] { 0, 2 }, new[] { 0 }, new[] { 1, 2 } };
        var plan = StructuredProjection.Allocate(arch, imp, 0.3, fixedHeads: fixedHeads);
        plan.Blocks.Select(b => b.Heads.ToArray()).Should().BeEquivalentTo(fixedHeads, o => o.WithStrictOrdering());
        double removed = 1.0 - (double)plan.PrunedArchitecture(arch).ParameterCount / arch.ParameterCount;
        removed.Should().BeApproximately(0.3, 0.01);
    }

    [Fact]
    public void AllocationKeepsExactlyTheMostImportantStructures()
    {
        // one block, hand-made importance: MLP neuron j has importance j, heads 0..3 importance {3, 0.1, 2, 1}
        var arch = new ViTArchitecture(32, 8, 3, 16, 2, new[] { new ViTBlockSpec(4, 4, 4, 32) });
        var imp = new[]
        {
            new BlockImportance
            {
                Heads = new[] { 3f, 0.1f, 2f, 1f },
                QkDims = Enumerable.Range(0, 4).Select(h => new[] { 4f, 3f, 2f, 1f }).ToArray(),
                VDims = Enumerable.Range(0, 4).Select(h => new[] { 1f, 2f, 3f, 4f }).ToArray(),
                Mlp = Enumerable.Range(0, 32).Select(j => (float)j).ToArray(),
            },
        };
        var plan = StructuredProjection.Allocate(arch, imp, 0.3);
        var b = plan.Blocks[0];
        // whatever counts the budget chose, the kept items are the top ones of each kind
        b.MlpNeurons.Should().Equal(Enumerable.Range(32 - b.MlpNeurons.Length, b.MlpNeurons.Length));
        var headRank = new[] { 0, 2, 3, 1 };
        b.Heads.Should().BeEquivalentTo(headRank.Take(b.Heads.Length));
        foreach (var qk in b.QkDims) qk.Should().Equal(Enumerable.Range(0, qk.Length));
        foreach (var v in b.VDims) v.Should().Equal(Enumerable.Range(4 - v.Length, v.Length));
    }

    [Theory]
    [InlineData("cifar-tiny", 0.4)]
    [InlineData("cifar-tiny", 0.6)]
    [InlineData("deit-small", 0.5)]
    public void DefaultGranularityKeepsWidthsMultiplesOfEightOnBudget(string preset, double sparsity)
    {
        var arch = ViTArchitecture.FromPreset(preset, preset.StartsWith("deit") ? 1000 : 10);
        var imp = RandomImportance(arch, seed: 3);
        var plan = StructuredProjection.Allocate(arch, imp, sparsity);
        var pruned = plan.PrunedArchitecture(arch);
        (1.0 - (double)pruned.ParameterCount / arch.ParameterCount).Should().BeApproximately(sparsity, 0.01);
        pruned.Blocks.Should().OnlyContain(b => b.QkDim % 8 == 0 && b.VDim % 8 == 0 && b.MlpHidden % 8 == 0);
        var fine = StructuredProjection.Allocate(arch, imp, sparsity, new BudgetOptions { Granularity = 1 }).PrunedArchitecture(arch);
        fine.Blocks.Should().Contain(b => b.QkDim % 8 != 0 || b.VDim % 8 != 0 || b.MlpHidden % 8 != 0, "granularity 1 prunes single structures");
    }

    [Fact]
    public void ProjectionIsIdempotentAndZeroesExactlyTheDroppedStructures()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 2);
        var plan = StructuredProjection.Allocate(model.Architecture, StructuredProjection.Magnitude(model), 0.5);
        StructuredProjection.Apply(model, plan);
        var once = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        StructuredProjection.Apply(model, plan);
        foreach (var (k, v) in model.state_dict()) TensorAssert.Same(v, once[k]).Should().BeTrue(k);
        // count of non-zero fc1 rows equals the kept neurons
        for (int b = 0; b < model.Architecture.Depth; b++)
        {
            using var rows = model.Blocks[b].mlp.fc1.weight.abs().sum(1).gt(0).sum();
            rows.item<long>().Should().Be(plan.Blocks[b].MlpNeurons.Length);
        }
        // re-measuring the projected model gives back the same plan (projection onto the set is a fixed point). With
        // structures removed one at a time: coarse steps may end a little inside the tolerance band, and re-allocation
        // stops as soon as it enters the band.
        var fine = new BudgetOptions { Granularity = 1 };
        using var model1 = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 2);
        var plan1 = StructuredProjection.Allocate(model1.Architecture, StructuredProjection.Magnitude(model1), 0.5, fine);
        StructuredProjection.Apply(model1, plan1);
        var again = StructuredProjection.Allocate(model1.Architecture, StructuredProjection.Magnitude(model1), 0.5, fine);
        again.PrunedArchitecture(model1.Architecture).Should().Be(plan1.PrunedArchitecture(model1.Architecture));
    }

    [Fact]
    public void MaskedAndPhysicallyPrunedModelsGiveTheSameLogits()
    {
        using var model = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 4);
        // make weights less uniform so that the ranking matters
        using (no_grad()) foreach (var p in model.parameters()) p.add_(randn_like(p) * 0.05);
        var plan = StructuredProjection.Allocate(model.Architecture, StructuredProjection.Magnitude(model), 0.5);
        StructuredProjection.Apply(model, plan);
        model.eval();
        using var pruned = HardPruning.Prune(model, plan);
        pruned.Architecture.Should().Be(plan.PrunedArchitecture(model.Architecture));
        pruned.CountParameters().Should().Be(pruned.Architecture.ParameterCount);
        pruned.Architecture.ParameterCount.Should().BeLessThan(model.Architecture.ParameterCount * 6 / 10);
        using var x = randn(8, 3, 32, 32);
        using var _ = no_grad();
        using var a = model.forward(x);
        using var b = pruned.forward(x);
        TensorAssert.MaxAbsDiff(a, b).Should().BeLessThan(1e-4);
        // the q/k dims really were reduced somewhere, so the scale fold is exercised
        pruned.Architecture.Blocks.Should().Contain(s => s.QkDim < model.Architecture.Blocks[0].QkDim);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.0)]
    [InlineData(-0.1)]
    [InlineData(double.NaN)]
    public void SparsityOutsideOpenUnitIntervalIsRejected(double s)
    {
        var arch = ViTArchitecture.CifarMicro();
        var act = () => StructuredProjection.Allocate(arch, RandomImportance(arch, 1), s);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Sparsity*(0, 1)*");
    }

    [Fact]
    public void AHeadBudgetThatEmptiesABlockIsRejected()
    {
        var arch = ViTArchitecture.CifarMicro();
        var heads = Enumerable.Range(0, arch.Depth).Select(b => b == 2 ? Array.Empty<int>() : new[] { 0 }).ToArray();
        var act = () => StructuredProjection.Allocate(arch, RandomImportance(arch, 1), 0.3, fixedHeads: heads);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Block 2 would keep no head*");
    }

    [Fact]
    public void UnreachableSparsityUnderTheFloorsIsRejected()
    {
        var arch = ViTArchitecture.CifarMicro();
        var act = () => StructuredProjection.Allocate(arch, RandomImportance(arch, 1), 0.99);
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Cannot remove 99*");
    }

    [Theory]
    [InlineData("cifar-tiny")]
    [InlineData("cifar-micro")]
    public void AllocationWithinAPreviousPlanOnlyRemovesMore(string preset)
    {
        // SGMP's monotone masks: with new, unrelated importances, a plan allocated within the previous one keeps a subset
        var arch = ViTArchitecture.FromPreset(preset, 10);
        var first = StructuredProjection.Allocate(arch, RandomImportance(arch, seed: 1), 0.3);
        var second = StructuredProjection.Allocate(arch, RandomImportance(arch, seed: 2), 0.5, within: first);
        (1.0 - (double)second.PrunedArchitecture(arch).ParameterCount / arch.ParameterCount).Should().BeApproximately(0.5, 0.01);
        Kept(second).Should().BeSubsetOf(Kept(first));
        var fresh = StructuredProjection.Allocate(arch, RandomImportance(arch, seed: 2), 0.5);
        Kept(fresh).Should().NotBeSubsetOf(Kept(first), "without the previous plan the new importances would revive structures");
        // a target the previous plan already meets leaves it unchanged
        Kept(StructuredProjection.Allocate(arch, RandomImportance(arch, seed: 3), 0.2, within: first)).Should().BeEquivalentTo(Kept(first));
        // fixed heads and a previous plan together: the heads stay exactly the fixed ones, the rest only shrinks
        var fixedHeads = first.Blocks.Select(b => (IReadOnlyList<int>)b.Heads).ToArray();
        var both = StructuredProjection.Allocate(arch, RandomImportance(arch, 2), 0.5, fixedHeads: fixedHeads, within: first);
        both.Blocks.Select(b => b.Heads.ToArray()).Should().BeEquivalentTo(fixedHeads, c => c.WithStrictOrdering());
        Kept(both).Should().BeSubsetOf(Kept(first));
        var otherHeads = arch.Blocks.Select(b => (IReadOnlyList<int>)new[] { 0 }).ToArray();
        var mismatch = () => StructuredProjection.Allocate(arch, RandomImportance(arch, 1), 0.5, fixedHeads: otherHeads, within: first);
        first.Blocks.Should().Contain(b => b.Heads.Length > 1, "the previous plan keeps more than head 0 somewhere");
        mismatch.Should().Throw<ArgumentException>().WithMessage("*within must keep exactly the fixed heads*");
    }

    /// <summary>Every kept structure of a plan as a string (heads, per-head q/k and v dims, MLP neurons).</summary>
    internal static HashSet<string> Kept(StructurePlan plan) => plan.Blocks.SelectMany((b, bi) =>
        b.Heads.Select(h => $"b{bi} head {h}")
            .Concat(b.Heads.SelectMany((h, i) => b.QkDims[i].Select(j => $"b{bi} h{h} qk {j}")))
            .Concat(b.Heads.SelectMany((h, i) => b.VDims[i].Select(j => $"b{bi} h{h} v {j}")))
            .Concat(b.MlpNeurons.Select(j => $"b{bi} mlp {j}"))).ToHashSet();

    internal static BlockImportance[] RandomImportance(ViTArchitecture arch, int seed)
    {
        var rng = new Random(seed);
        float R() => (float)rng.NextDouble();
        return arch.Blocks.Select(s => new BlockImportance
        {
            Heads = Enumerable.Range(0, s.Heads).Select(_ => R()).ToArray(),
            QkDims = Enumerable.Range(0, s.Heads).Select(_ => Enumerable.Range(0, s.QkDim).Select(_ => R()).ToArray()).ToArray(),
            VDims = Enumerable.Range(0, s.Heads).Select(_ => Enumerable.Range(0, s.VDim).Select(_ => R()).ToArray()).ToArray(),
            Mlp = Enumerable.Range(0, s.MlpHidden).Select(_ => R()).ToArray(),
        }).ToArray();
    }
}
