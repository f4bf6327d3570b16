using System.Collections.Immutable;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The global budget allocation behind <see cref="StructuredProjection.Allocate"/>: a greedy that takes, step after step,
/// the removal of least normalised importance until the budget is spent. A step removes a block's least important head,
/// or shrinks one width of a block (q/k dims of every kept head, v dims of every kept head, MLP neurons) by its least
/// important entries. Each step is the cheapest of two passes: <see cref="AlignedSteps"/> (heads, and widths shrunk to
/// the next multiple of the granularity) and, only when none of those lands inside the tolerance band,
/// <see cref="SingleSteps"/> (widths shrunk by one structure): the budget is a hard constraint, alignment a preference.
/// </summary>
internal sealed class BudgetAllocator
{
    /// <summary>
    /// Added to the score of a step that would take the total below the tolerance band. Normalised importances are about
    /// 1 (each kind's mean is 1), so such a step is taken only when no step lands in the band, and then the least
    /// important of them.
    /// </summary>
    private const double OvershootPenalty = 1e9;

    private readonly IReadOnlyList<BlockImportance> _importance;
    private readonly IBlockCost? _costModel;
    private readonly int _embedDim, _minHeads, _minDim, _minMlp, _granularity;
    private readonly (double Heads, double Qk, double V, double Mlp) _means;
    private readonly BlockState[] _blocks;
    private readonly long _total, _target, _tolerance;
    private long _current;

    /// <summary>See <see cref="StructuredProjection.Allocate"/>, which documents every parameter.</summary>
    public static StructurePlan Allocate(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, double sparsity,
        BudgetOptions? options = null, IReadOnlyList<IReadOnlyList<int>>? fixedHeads = null, StructurePlan? within = null,
        IBlockCost? costModel = null)
    {
        options ??= new BudgetOptions();
        if (!(sparsity > 0 && sparsity < 1))
            throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity,
                "Sparsity (fraction of parameters removed) must be in (0, 1).");
        if (importance.Count != arch.Depth)
            throw new ArgumentException($"Importance has {importance.Count} blocks; the model has {arch.Depth}.", nameof(importance));
        if (fixedHeads is not null && fixedHeads.Count != arch.Depth)
            throw new ArgumentException("fixedHeads needs one entry per block.", nameof(fixedHeads));
        if (within is not null)
        {
            within.Validate(arch);
            if (fixedHeads is not null)
                for (int b = 0; b < arch.Depth; b++)
                    if (!within.Blocks[b].Heads.Order().SequenceEqual(fixedHeads[b].Distinct().Order()))
                        throw new ArgumentException($"Block {b}: within keeps heads {string.Join(",", within.Blocks[b].Heads.Order())}, but the fixed heads are " +
                            $"{string.Join(",", fixedHeads[b].Distinct().Order())}; with both, within must keep exactly the fixed heads.", nameof(within));
        }
        return new BudgetAllocator(arch, importance, sparsity, options, fixedHeads, within, costModel).Run(sparsity);
    }

    private BudgetAllocator(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, double sparsity, BudgetOptions options,
        IReadOnlyList<IReadOnlyList<int>>? fixedHeads, StructurePlan? within, IBlockCost? costModel)
    {
        _importance = importance;
        _costModel = costModel;
        _embedDim = arch.EmbedDim;
        _minHeads = Math.Max(1, options.MinHeads);
        _minDim = Math.Max(1, options.MinHeadDim);
        _minMlp = Math.Max(1, options.MinMlpWidth);
        _granularity = Math.Max(1, options.Granularity);
        long nonBlock = costModel?.NonBlock ?? arch.NonBlockParameterCount;
        _total = nonBlock + Enumerable.Range(0, arch.Depth).Sum(b =>
            BlockCost(b, arch.Blocks[b].Heads, arch.Blocks[b].QkDim, arch.Blocks[b].VDim, arch.Blocks[b].MlpHidden));
        _target = (long)Math.Round(_total * (1 - sparsity));
        _tolerance = (long)(_total * options.Tolerance);
        // Means per kind for the normalisation, over the structures still kept: a structure a previous plan removed
        // (SGMP's monotone masks) is zero, and counting it would lower its kind's mean and make the kind's survivors look
        // more important than those of a less pruned kind.
        _means = KindMeans(importance, within);
        _blocks = Enumerable.Range(0, arch.Depth)
            .Select(b => BlockState.Start(b, arch.Blocks[b], importance[b], fixedHeads?[b], within?.Blocks[b])).ToArray();
        _current = nonBlock + _blocks.Select((s, b) => BlockCost(b, s.Heads.Count, s.Qk, s.V, s.Mlp)).Sum();
    }

    // takes the next step until the total is inside the tolerance band around the target
    private StructurePlan Run(double sparsity)
    {
        while (_current > _target + _tolerance / 2)
            Take(NextStep() ?? throw Unreachable(sparsity));
        return Plan();
    }

    /// <summary>What a removal step is of: a head, or one of the three widths of a block.</summary>
    private enum Kind { Head, Qk, V, Mlp }

    /// <summary>Removing <paramref name="Count"/> structures of one kind from one block (one head, or the width's last entries).</summary>
    /// <param name="Block">The block.</param>
    /// <param name="Kind">What goes.</param>
    /// <param name="Count">How many: 1 head, or the width's last <paramref name="Count"/> entries by importance.</param>
    /// <param name="Score">Mean normalised importance of what goes, plus <see cref="OvershootPenalty"/> when the step overshoots.</param>
    /// <param name="Cost">Budget units the step frees.</param>
    private readonly record struct Step(int Block, Kind Kind, int Count, double Score, long Cost);

    /// <summary>
    /// The step to take: the cheapest aligned step, or a cheaper single-structure one when every aligned step overshoots
    /// the tolerance band; null when the floors leave none. Ties keep the first step found (blocks in order; within a
    /// block heads, q/k, v, MLP; aligned before single).
    /// </summary>
    private Step? NextStep()
    {
        var best = Cheapest(AlignedSteps(), null);
        // with granularity 1 the aligned steps are the single ones
        if (_granularity > 1 && !(best?.Score < OvershootPenalty)) best = Cheapest(SingleSteps(), best);
        return best;
    }

    private static Step? Cheapest(IEnumerable<Step> steps, Step? best)
    {
        foreach (var step in steps)
            if (step.Score < (best?.Score ?? double.PositiveInfinity)) best = step;
        return best;
    }

    /// <summary>First pass: every block's least important head, and each width shrunk to the next multiple of the granularity.</summary>
    private IEnumerable<Step> AlignedSteps() => Enumerable.Range(0, _blocks.Length).SelectMany(b => StepsOf(b, aligned: true));

    /// <summary>Second pass: each width of every block shrunk by one structure.</summary>
    private IEnumerable<Step> SingleSteps() => Enumerable.Range(0, _blocks.Length).SelectMany(b => StepsOf(b, aligned: false));

    private IEnumerable<Step> StepsOf(int b, bool aligned)
    {
        var s = _blocks[b];
        var imp = _importance[b];
        int h = s.Heads.Count;
        if (aligned && s.CanDropHeads && h > _minHeads)
            yield return Scored(b, Kind.Head, 1, imp.Heads[s.Heads[^1]] / _means.Heads, BlockCost(b, h - 1, s.Qk, s.V, s.Mlp));
        int kq = aligned ? AlignedStep(s.Qk) : 1, kv = aligned ? AlignedStep(s.V) : 1, km = aligned ? AlignedStep(s.Mlp) : 1;
        if (s.Qk - kq >= _minDim)
        {
            float least = LeastKept(s, imp.QkDims, s.QkOrder, s.Qk, kq);
            yield return Scored(b, Kind.Qk, kq, least / _means.Qk, BlockCost(b, h, s.Qk - kq, s.V, s.Mlp));
        }
        if (s.V - kv >= _minDim)
        {
            float least = LeastKept(s, imp.VDims, s.VOrder, s.V, kv);
            yield return Scored(b, Kind.V, kv, least / _means.V, BlockCost(b, h, s.Qk, s.V - kv, s.Mlp));
        }
        if (s.Mlp - km >= _minMlp)
        {
            float least = Enumerable.Range(s.Mlp - km, km).Average(j => imp.Mlp[s.MlpOrder[j]]);
            yield return Scored(b, Kind.Mlp, km, least / _means.Mlp, BlockCost(b, h, s.Qk, s.V, s.Mlp - km));
        }
    }

    // widths shrink in steps that keep them multiples of the granularity (the first step trims to one)
    private int AlignedStep(int width) => width % _granularity == 0 ? _granularity : width % _granularity;

    // mean over the kept heads of the mean importance of the k least important kept dims of each
    private static float LeastKept(BlockState s, float[][] importance, int[][] order, int width, int k) =>
        s.Heads.Average(hh => Enumerable.Range(width - k, k).Average(j => importance[hh][order[hh][j]]));

    // a step's cost is what the block costs now minus what it costs after the step
    private Step Scored(int b, Kind kind, int count, double score, long costAfter)
    {
        var s = _blocks[b];
        long cost = BlockCost(b, s.Heads.Count, s.Qk, s.V, s.Mlp) - costAfter;
        bool overshoots = _current - cost < _target - _tolerance / 2;
        return new Step(b, kind, count, overshoots ? score + OvershootPenalty : score, cost);
    }

    private void Take(Step step)
    {
        var s = _blocks[step.Block];
        switch (step.Kind)
        {
            case Kind.Head: s.Heads.RemoveAt(s.Heads.Count - 1); break;
            case Kind.Qk: s.Qk -= step.Count; break;
            case Kind.V: s.V -= step.Count; break;
            default: s.Mlp -= step.Count; break;
        }
        _current -= step.Cost;
    }

    private long BlockCost(int block, int heads, int qk, int v, int mlp) => _costModel?.Block(block, heads, qk, v, mlp)
        ?? ViTArchitecture.BlockParameterCount(_embedDim, new ViTBlockSpec(heads, qk, v, mlp));

    private ArgumentOutOfRangeException Unreachable(double sparsity) => new(nameof(sparsity), sparsity,
        $"Cannot remove {sparsity:P1} of the {(_costModel is null ? "parameters" : "cost (latency)")}: the floors (≥{_minHeads} head(s), " +
        $"≥{_minDim} dim(s) per head, ≥{_minMlp} MLP neuron(s) per block) and the parts that are never pruned (embeddings, norms, head) " +
        $"leave at least {_current:N0} of {_total:N0}{(_costModel is null ? "" : " (ns)")}.");

    private StructurePlan Plan() => new(_blocks.Select(s =>
    {
        var heads = s.Heads.OrderBy(i => i).ToImmutableArray();
        return new BlockPlan(heads,
            heads.Select(hh => s.QkOrder[hh].Take(s.Qk).OrderBy(j => j).ToImmutableArray()).ToImmutableArray(),
            heads.Select(hh => s.VOrder[hh].Take(s.V).OrderBy(j => j).ToImmutableArray()).ToImmutableArray(),
            s.MlpOrder.Take(s.Mlp).OrderBy(j => j).ToImmutableArray());
    }).ToImmutableArray());

    /// <summary>
    /// Mean importance of each structure kind (heads, q/k dims, v dims, MLP neurons) over the structures that
    /// <paramref name="within"/> keeps (all of them when it is null).
    /// </summary>
    internal static (double Heads, double Qk, double V, double Mlp) KindMeans(IReadOnlyList<BlockImportance> importance,
        StructurePlan? within)
    {
        if (within is null)
            return (Mean(importance.SelectMany(b => b.Heads)), Mean(importance.SelectMany(b => b.QkDims.SelectMany(x => x))),
                Mean(importance.SelectMany(b => b.VDims.SelectMany(x => x))), Mean(importance.SelectMany(b => b.Mlp)));
        var blocks = importance.Zip(within.Blocks);
        return (
            Mean(blocks.SelectMany(t => t.Second.Heads.Select(h => t.First.Heads[h]))),
            Mean(blocks.SelectMany(t => t.Second.Heads.SelectMany((h, i) => t.Second.QkDims[i].Select(j => t.First.QkDims[h][j])))),
            Mean(blocks.SelectMany(t => t.Second.Heads.SelectMany((h, i) => t.Second.VDims[i].Select(j => t.First.VDims[h][j])))),
            Mean(blocks.SelectMany(t => t.Second.MlpNeurons.Select(j => t.First.Mlp[j]))));
    }

    // mean of the kind's importances; 1 for an empty kind, and a tiny positive number for an all-zero one (scores divide by it)
    private static double Mean(IEnumerable<float> values)
    {
        double s = 0; long n = 0;
        foreach (var v in values) { s += v; n++; }
        double m = n == 0 ? 1 : s / n;
        return m > 0 ? m : 1e-30;
    }

    /// <summary>
    /// What a block keeps during the allocation: its heads by descending importance (the last one goes next), and per
    /// head its q/k and v dims, and its MLP neurons, by descending importance, of which the first <see cref="Qk"/>,
    /// <see cref="V"/> and <see cref="Mlp"/> are kept.
    /// </summary>
    private sealed class BlockState
    {
        public required List<int> Heads;
        public required int Qk, V, Mlp;
        public required int[][] QkOrder, VOrder;
        public required int[] MlpOrder;
        public required bool CanDropHeads;

        /// <summary>
        /// The block before the first step: every structure of <paramref name="spec"/>, or the heads
        /// <paramref name="fixedHeads"/> fixes, or what <paramref name="start"/> (a previous plan) keeps.
        /// </summary>
        public static BlockState Start(int b, ViTBlockSpec spec, BlockImportance imp, IReadOnlyList<int>? fixedHeads, BlockPlan? start)
        {
            List<int> heads;
            if (fixedHeads is not null)
            {
                heads = fixedHeads.Distinct().OrderBy(i => i).ToList();
                if (heads.Count == 0)
                    throw new ArgumentOutOfRangeException(nameof(fixedHeads), $"Block {b} would keep no head; every block needs at least one.");
                if (heads.Any(i => i < 0 || i >= spec.Heads))
                    throw new ArgumentOutOfRangeException(nameof(fixedHeads), $"Block {b}: head index out of range [0, {spec.Heads}).");
            }
            else heads = start is null ? Enumerable.Range(0, spec.Heads).ToList() : start.Heads.ToList();
            ImmutableArray<int>? KeptOf(ImmutableArray<ImmutableArray<int>> dims, int head)
            {
                int i = start!.Heads.IndexOf(head);
                return i < 0 ? null : dims[i];
            }
            return new BlockState
            {
                Heads = heads.OrderByDescending(i => imp.Heads[i]).ThenBy(i => i).ToList(),
                Qk = start?.QkDims[0].Length ?? spec.QkDim,
                V = start?.VDims[0].Length ?? spec.VDim,
                // per head: dims sorted by descending importance (kept = first Qk/V entries; a start plan's kept ones first)
                QkOrder = imp.QkDims.Select((r, hh) => Order(r, start is null ? null : KeptOf(start.QkDims, hh))).ToArray(),
                VOrder = imp.VDims.Select((r, hh) => Order(r, start is null ? null : KeptOf(start.VDims, hh))).ToArray(),
                MlpOrder = Order(imp.Mlp, start?.MlpNeurons),
                Mlp = start?.MlpNeurons.Length ?? spec.MlpHidden,
                CanDropHeads = fixedHeads is null,
            };
        }

        // indices by descending importance (ties: lower index first); with a start plan, its kept indices come first
        private static int[] Order(float[] importance, ImmutableArray<int>? kept) => Enumerable.Range(0, importance.Length)
            .OrderByDescending(j => kept is null || kept.Value.Contains(j)).ThenByDescending(j => importance[j]).ThenBy(j => j).ToArray();
    }
}
