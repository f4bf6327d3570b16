using System.Security.Cryptography;
using System.Text;
using FluentAssertions;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Pins the plans the global budget allocator produces, index by index, for architectures, importances, sparsities,
/// granularities, floors, fixed heads, previous plans and cost models: a change of the allocator that changes any kept
/// index (a tie broken another way, a step scored differently) fails here. Each case's digest is a SHA-256 of the plan's
/// index lists (<see cref="Digest"/>).
/// </summary>
public class BudgetAllocatorTests
{
    [Theory]
    [InlineData("tiny-40", "5a5d44534a32cb64")]
    [InlineData("tiny-80", "329452f6290711ab")]
    [InlineData("tiny-fine-60", "a206e0fc5f1ed204")]
    [InlineData("deit-small-50", "4875ba966a0d5875")]
    [InlineData("hetero-fixed-30", "44f68fc6e2c0f468")]
    [InlineData("hetero-fine-50", "1a6019f2d4d226d3")]
    [InlineData("tiny-fixed-granularity-4", "d325c3b96d6bf0eb")]
    [InlineData("tiny-floors-tight", "193f00e947fb55a5")]
    [InlineData("tiny-ties", "840049a536a2ff5c")]
    [InlineData("tiny-ties-fine", "9bf3f569a22246aa")]
    [InlineData("micro-zeros", "19c8541662cbf2c7")]
    [InlineData("micro-within", "690328bc2e9e59f4")]
    [InlineData("tiny-within-fine", "08f55749036483b5")]
    [InlineData("micro-latency-30", "32bba744b4162977")]
    [InlineData("tiny-latency-within", "6f5952caa2483ead")]
    public void AllocatedPlansAreUnchanged(string name, string digest) => Digest(Case(name)).Should().Be(digest, name);

    private static StructurePlan Case(string name)
    {
        var tiny = ViTArchitecture.CifarTiny();
        var micro = ViTArchitecture.CifarMicro();
        var hetero = ViTArchitectureTests.Heterogeneous();
        var fine = new BudgetOptions { Granularity = 1 };
        switch (name)
        {
            case "tiny-40": return StructuredProjection.Allocate(tiny, Random(tiny, 3), 0.4);
            case "tiny-80": return StructuredProjection.Allocate(tiny, Random(tiny, 3), 0.8);
            case "tiny-fine-60": return StructuredProjection.Allocate(tiny, Random(tiny, 4), 0.6, fine);
            case "deit-small-50":
                var deit = ViTArchitecture.FromPreset("deit-small", 1000);
                return StructuredProjection.Allocate(deit, Random(deit, 3), 0.5);
            case "hetero-fixed-30":
                var heads = new[] { new[] { 0, 2 }, new[] { 0 }, new[] { 1, 2 } };
                return StructuredProjection.Allocate(hetero, Random(hetero, 5), 0.3, fixedHeads: heads);
            case "hetero-fine-50": return StructuredProjection.Allocate(hetero, Random(hetero, 6), 0.5, fine);
            case "tiny-fixed-granularity-4":
                return StructuredProjection.Allocate(tiny, Random(tiny, 8), 0.5, new BudgetOptions { Granularity = 4 },
                    fixedHeads: new[] { new[] { 0, 1 }, new[] { 2 }, new[] { 0, 1, 2 }, new[] { 1 }, new[] { 0, 2 }, new[] { 1, 2 } });
            case "tiny-floors-tight":
                return StructuredProjection.Allocate(tiny, Random(tiny, 7), 0.7,
                    new BudgetOptions { MinHeads = 2, MinHeadDim = 16, MinMlpWidth = 128, Tolerance = 0.002, Granularity = 16 });
            case "tiny-ties": return StructuredProjection.Allocate(tiny, Quantised(tiny, 9), 0.5);
            case "tiny-ties-fine": return StructuredProjection.Allocate(tiny, Quantised(tiny, 9), 0.5, fine);
            case "micro-zeros": return StructuredProjection.Allocate(micro, Quantised(micro, 0, levels: 1), 0.6);
            case "micro-within":
                var first = StructuredProjection.Allocate(micro, Random(micro, 1), 0.3);
                return StructuredProjection.Allocate(micro, Random(micro, 2), 0.5, within: first);
            case "tiny-within-fine":
                var coarse = StructuredProjection.Allocate(tiny, Random(tiny, 10), 0.4);
                return StructuredProjection.Allocate(tiny, Random(tiny, 11), 0.65, fine, within: coarse);
            case "micro-latency-30":
                var table = LatencyBudgetTests.SyntheticFor(micro);
                return StructuredProjection.Allocate(micro, Random(micro, 6), 0.3, costModel: table.CostOf(micro));
            case "tiny-latency-within":
                var cost = LatencyBudgetTests.SyntheticFor(tiny).CostOf(tiny);
                var start = StructuredProjection.Allocate(tiny, Random(tiny, 12), 0.2, costModel: cost);
                return StructuredProjection.Allocate(tiny, Random(tiny, 13), 0.35, within: start, costModel: cost);
            default: throw new ArgumentException(name);
        }
    }

    private static BlockImportance[] Random(ViTArchitecture arch, int seed) => StructuredPruningTests.RandomImportance(arch, seed);

    // importances on a few levels, so that many structures tie (levels: 1 makes every importance 0)
    private static BlockImportance[] Quantised(ViTArchitecture arch, int seed, int levels = 4) =>
        Random(arch, seed).Select(b => new BlockImportance
        {
            Heads = Round(b.Heads, levels),
            QkDims = b.QkDims.Select(d => Round(d, levels)).ToArray(),
            VDims = b.VDims.Select(d => Round(d, levels)).ToArray(),
            Mlp = Round(b.Mlp, levels),
        }).ToArray();

    private static float[] Round(float[] xs, int levels) => xs.Select(x => MathF.Floor(x * levels) / levels).ToArray();

    /// <summary>The first 16 hex digits of the SHA-256 of every index list of the plan, in order.</summary>
    internal static string Digest(StructurePlan plan)
    {
        var text = new StringBuilder();
        foreach (var b in plan.Blocks)
        {
            text.Append("heads ").AppendJoin(',', b.Heads).Append('\n');
            foreach (var d in b.QkDims) text.Append("qk ").AppendJoin(',', d).Append('\n');
            foreach (var d in b.VDims) text.Append("v ").AppendJoin(',', d).Append('\n');
            text.Append("mlp ").AppendJoin(',', b.MlpNeurons).Append('\n');
        }
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..16].ToLowerInvariant();
    }
}
