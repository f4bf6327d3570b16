using FluentAssertions;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

public class HeadGraphRankingTests
{
    [Fact]
    public void UndirectedGraphWithoutTeleportHasStationaryDistributionProportionalToDegree()
    {
        var w = new double[,] { { 0, 1, 2, 0 }, { 1, 0, 1, 1 }, { 2, 1, 0, 3 }, { 0, 1, 3, 0 } };
        var (pi, _) = HeadGraphRanking.StationaryDistribution(w, damping: 0.999999, tolerance: 1e-14);
        var degree = new[] { 3.0, 3.0, 6.0, 4.0 };
        for (int i = 0; i < 4; i++) pi[i].Should().BeApproximately(degree[i] / 16.0, 1e-5);
    }

    [Fact]
    public void DampedChainMatchesTheLinearSolve()
    {
        var w = new double[,] { { 0, 1, 0 }, { 1, 0, 1 }, { 0, 1, 0 } };
        double d = 0.5;
        var (pi, it) = HeadGraphRanking.StationaryDistribution(w, d, 1e-13);
        // P = d·rownorm(W) + (1−d)/3 ; solve πP = π, Σπ = 1 by hand: by symmetry π0 = π2 = a, π1 = 1 − 2a,
        // π1 = a·(d + (1−d)/3)·2 + (1−2a)(1−d)/3  ⇒ with d = 1/2: π1 = a·(4/3) + (1−2a)/6
        double a = (1 - 1.0 / 6) / (2 + 4.0 / 3 - 2.0 / 6);
        pi[0].Should().BeApproximately(a, 1e-10);
        pi[2].Should().BeApproximately(a, 1e-10);
        pi[1].Should().BeApproximately(1 - 2 * a, 1e-10);
        it.Should().BeGreaterThan(1);
    }

    [Fact]
    public void InvalidChainsAreRejected()
    {
        ((Action)(() => HeadGraphRanking.StationaryDistribution(new double[,] { { 0, -1 }, { 1, 0 } }))).Should().Throw<ArgumentException>().WithMessage("*non-negative*");
        ((Action)(() => HeadGraphRanking.StationaryDistribution(new double[,] { { 0, 1 }, { 1, 0 } }, damping: 1))).Should().Throw<ArgumentOutOfRangeException>();
        // a graph with no edges (all heads dissimilar) still has a distribution: uniform
        HeadGraphRanking.StationaryDistribution(new double[3, 3]).Pi.Should().OnlyContain(p => Math.Abs(p - 1.0 / 3) < 1e-12);
    }

    [Fact]
    public void SelectHeadsRemovesTheLeastImportantAndNeverEmptiesABlock()
    {
        var imp = new[] { new[] { 0.1, 0.2, 3.0 }, new[] { 0.05, 0.01 }, new[] { 2.0, 1.5 } };
        var kept = HeadGraphRanking.SelectHeads(imp, 3.0 / 7);   // remove 3 of 7
        kept[0].Should().Equal(2);        // 0.1 and 0.2 removed
        kept[1].Should().Equal(0);        // 0.01 removed, 0.05 must stay (last head of the block)
        kept[2].Should().Equal(0, 1);
        ((Action)(() => HeadGraphRanking.SelectHeads(imp, 0.9))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*would empty a block*");
    }

    [Fact]
    public void DuplicatedHeadsAreMaximallySimilarOnRealActivations()
    {
        var arch = ViTArchitecture.CifarMicro();
        using var model = new VisionTransformerModel(arch, seed: 3);
        int h = arch.Blocks[0].Heads, dq = arch.Blocks[0].QkDim, dv = arch.Blocks[0].VDim, d = arch.EmbedDim;
        using (no_grad())
        {
            var blk = model.Blocks[0];
            var w = blk.attn.qkv.weight; var bias = blk.attn.qkv.bias;
            // head 1 := head 0 for q, k and v, and the same output-projection columns
            foreach (int off in new[] { 0, h * dq }) w.narrow(0, off + dq, dq).copy_(w.narrow(0, off, dq));
            w.narrow(0, 2 * h * dq + dv, dv).copy_(w.narrow(0, 2 * h * dq, dv));
            bias.zero_();
            blk.attn.proj.weight.narrow(1, dv, dv).copy_(blk.attn.proj.weight.narrow(1, 0, dv));
        }
        var data = RandomImages(16);
        var ranking = HeadGraphRanking.Rank(model, data, new ViTTrainingOptions());
        ranking.Should().HaveCount(arch.Depth);
        foreach (var r in ranking) r.Stationary.Sum().Should().BeApproximately(1, 1e-9);
        ranking[0].Similarity[0, 1].Should().BeApproximately(1, 1e-4);
        ranking[0].Similarity[0, 2].Should().BeLessThan(0.99);
        var js = HeadGraphRanking.Rank(model, data, new ViTTrainingOptions(), HeadSimilarity.AttentionMapJensenShannon);
        js[0].Similarity[0, 1].Should().BeApproximately(1, 1e-4);
        ((Action)(() => HeadGraphRanking.Rank(model, RandomImages(0), new ViTTrainingOptions()))).Should().Throw<ArgumentException>().WithMessage("*calibration set has no rows*");
    }

    internal static ImageTensorData RandomImages(int n, int seed = 0)
    {
        var rng = new Random(seed);
        var px = new float[n * 3072];
        for (int i = 0; i < px.Length; i++) px[i] = rng.Next(256);
        return new ImageTensorData(px, Enumerable.Range(0, n).Select(i => i % 10).ToArray(), 3, 32);
    }
}
