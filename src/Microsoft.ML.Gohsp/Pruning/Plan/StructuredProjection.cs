using System.Collections.Immutable;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Importance of every prunable structure of one block (mean squared magnitude per parameter of the structure).</summary>
public sealed class BlockImportance
{
    /// <summary>Per head: q, k, v rows (with biases) and the head's output-projection columns.</summary>
    public required float[] Heads { get; init; }
    /// <summary>Per head, per q/k dimension: the q and k rows (with biases) of that dimension.</summary>
    public required float[][] QkDims { get; init; }
    /// <summary>Per head, per v dimension: the v row (with bias) and the matching output-projection column.</summary>
    public required float[][] VDims { get; init; }
    /// <summary>Per MLP neuron: fc1 row (with bias) and fc2 column.</summary>
    public required float[] Mlp { get; init; }
}

/// <summary>Floors and tolerance of the global budget allocation.</summary>
public sealed class BudgetOptions
{
    /// <summary>Smallest number of heads a block keeps (at least 1). Default 1.</summary>
    public int MinHeads { get; set; } = 1;
    /// <summary>Smallest q/k and v dimension per head (at least 1). Default 1.</summary>
    public int MinHeadDim { get; set; } = 1;
    /// <summary>Smallest MLP width per block (at least 1). Default 1.</summary>
    public int MinMlpWidth { get; set; } = 1;
    /// <summary>Allowed deviation of the removed fraction from the requested one (absolute). Default 0.01 (±1%).</summary>
    public double Tolerance { get; set; } = 0.01;
    /// <summary>
    /// Kept q/k dims, v dims and MLP widths are multiples of this (a dense width that is not is first trimmed to one):
    /// CPU and GPU matrix kernels run markedly slower on odd widths, so a pruned model with widths like 373 gains less
    /// speed than its FLOPs promise. 1 prunes one structure at a time. Default 8.
    /// </summary>
    public int Granularity { get; set; } = 8;
}

/// <summary>
/// The projection Π onto the structured-sparse set, shared by GOHSP soft pruning, SOMP and SGMP: measure structure
/// importance, allocate a global parameter budget across blocks and structure kinds (heads, q/k dims, v dims, MLP
/// neurons) with per-block floors, and zero everything outside the resulting <see cref="StructurePlan"/>.
/// </summary>
public static class StructuredProjection
{
    /// <summary>
    /// ℓ2 importance of every structure. <paramref name="weightOf"/> maps a parameter to the tensor to measure
    /// (default: the parameter itself; ADMM passes W + U).
    /// </summary>
    public static BlockImportance[] Magnitude(VisionTransformerModel model, Func<TorchSharp.Modules.Parameter, Tensor>? weightOf = null)
    {
        weightOf ??= p => p;
        var a = model.Architecture;
        var result = new BlockImportance[a.Depth];
        using var _ = no_grad();
        for (int bi = 0; bi < a.Depth; bi++)
        {
            var spec = a.Blocks[bi];
            var blk = model.Blocks[bi];
            int h = spec.Heads, dq = spec.QkDim, dv = spec.VDim, m = spec.MlpHidden;
            using var scope = NewDisposeScope();
            // rows of qkv: squared norms over inputs + bias²
            var qkvRows = Rows(weightOf(blk.attn.qkv.weight), weightOf(blk.attn.qkv.bias));       // [h(2dq+dv)]
            var projCols = Cols(weightOf(blk.attn.proj.weight));                                     // [h dv]
            var fc1Rows = Rows(weightOf(blk.mlp.fc1.weight), weightOf(blk.mlp.fc1.bias));            // [m]
            var fc2Cols = Cols(weightOf(blk.mlp.fc2.weight));                                        // [m]
            int d = a.EmbedDim;
            var layout = spec.Qkv;
            var heads = new float[h]; var qkd = new float[h][]; var vd = new float[h][];
            for (int i = 0; i < h; i++)
            {
                qkd[i] = new float[dq]; vd[i] = new float[dv];
                double sum = 0;
                for (int j = 0; j < dq; j++)
                {
                    float s = qkvRows[layout.QRow(i, j)] + qkvRows[layout.KRow(i, j)];
                    qkd[i][j] = s / (2 * (d + 1));
                    sum += s;
                }
                for (int j = 0; j < dv; j++)
                {
                    float s = qkvRows[layout.VRow(i, j)] + projCols[layout.ProjColumn(i, j)];
                    vd[i][j] = s / (2 * d + 1);
                    sum += s;
                }
                heads[i] = (float)(sum / ((2 * dq + dv) * (d + 1) + dv * d));
            }
            var mlp = new float[m];
            for (int j = 0; j < m; j++) mlp[j] = (fc1Rows[j] + fc2Cols[j]) / (2 * d + 1);
            result[bi] = new BlockImportance { Heads = heads, QkDims = qkd, VDims = vd, Mlp = mlp };
        }
        return result;
    }

    private static float[] Rows(Tensor w, Tensor b)
    {
        using var s = w.square().sum(1).add_(b.square());
        return s.to(ScalarType.Float32).cpu().data<float>().ToArray();
    }

    private static float[] Cols(Tensor w)
    {
        using var s = w.square().sum(new long[] { 0 }); // not sum(0): a literal 0 converts to the ScalarType overload
        return s.to(ScalarType.Float32).cpu().data<float>().ToArray();
    }

    private static long BlockParams(int embedDim, int heads, int qk, int v, int mlp) =>
        ViTArchitecture.BlockParameterCount(embedDim, new ViTBlockSpec(heads, qk, v, mlp));

    /// <summary>
    /// Allocates a global budget: removes the least important structures (importance normalised by the mean of their
    /// kind, so kinds are comparable) until the model has lost <paramref name="sparsity"/> of its total parameters,
    /// within <see cref="BudgetOptions.Tolerance"/>. Within a block, all kept heads keep the same number of q/k and of
    /// v dims (the indices are chosen per head). <paramref name="fixedHeads"/>, when given, fixes the kept heads per
    /// block (GOHSP stage 1) and only dims and neurons are allocated. <paramref name="within"/>, when given, is a previous
    /// plan whose removed structures stay removed (SGMP's monotone masks): the allocation starts from it and only removes
    /// more; if it already removes enough, it is returned unchanged.
    /// </summary>
    /// <param name="arch">The dense (or partly pruned) architecture the plan applies to.</param>
    /// <param name="importance">Importance of every prunable structure, one entry per block of <paramref name="arch"/>.</param>
    /// <param name="sparsity">Fraction of the total budget (parameters, or <paramref name="costModel"/>'s cost) to remove.</param>
    /// <param name="options">Floors, tolerance and step sizes of the allocation; defaults when null.</param>
    /// <param name="fixedHeads">Kept head indices per block, or null to allocate heads in the global budget too.</param>
    /// <param name="within">A plan whose removed structures stay removed, or null to start from the full model.</param>
    /// <param name="costModel">
    /// What the budget counts (default: parameters). With a cost, <paramref name="sparsity"/> is the fraction of that
    /// cost removed, e.g. of the measured latency (<see cref="LatencyModel"/>, <see cref="LatencyBudget"/>).
    /// </param>
    /// <exception cref="ArgumentOutOfRangeException">sparsity outside (0, 1), or unreachable under the floors.</exception>
    public static StructurePlan Allocate(ViTArchitecture arch, IReadOnlyList<BlockImportance> importance, double sparsity,
        BudgetOptions? options = null, IReadOnlyList<IReadOnlyList<int>>? fixedHeads = null, StructurePlan? within = null,
        IBlockCost? costModel = null)
    {
        options ??= new BudgetOptions();
        if (!(sparsity > 0 && sparsity < 1))
            throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, "Sparsity (fraction of parameters removed) must be in (0, 1).");
        if (importance.Count != arch.Depth) throw new ArgumentException($"Importance has {importance.Count} blocks; the model has {arch.Depth}.", nameof(importance));
        if (fixedHeads is not null && fixedHeads.Count != arch.Depth) throw new ArgumentException("fixedHeads needs one entry per block.", nameof(fixedHeads));
        if (within is not null)
        {
            if (fixedHeads is not null) throw new ArgumentException("Pass either fixedHeads or within, not both.", nameof(within));
            within.Validate(arch);
        }
        int minHeads = Math.Max(1, options.MinHeads), minDim = Math.Max(1, options.MinHeadDim), minMlp = Math.Max(1, options.MinMlpWidth);
        int granularity = Math.Max(1, options.Granularity);
        // widths shrink in steps that keep them multiples of the granularity (the first step trims to one)
        int Step(int width) => width % granularity == 0 ? granularity : width % granularity;
        int d = arch.EmbedDim;
        long BlockParams(int block, int heads, int qk, int v, int mlp) =>
            costModel?.Block(block, heads, qk, v, mlp) ?? StructuredProjection.BlockParams(d, heads, qk, v, mlp);
        long nonBlock = costModel?.NonBlock ?? arch.NonBlockParameterCount;
        long total = nonBlock + Enumerable.Range(0, arch.Depth).Sum(b => BlockParams(b, arch.Blocks[b].Heads, arch.Blocks[b].QkDim, arch.Blocks[b].VDim, arch.Blocks[b].MlpHidden));
        long target = (long)Math.Round(total * (1 - sparsity));
        long tol = (long)(total * options.Tolerance);

        // Means per kind for the normalisation, over the structures still kept: a structure a previous plan removed
        // (SGMP's monotone masks) is zero, and counting it would lower its kind's mean and make the kind's survivors look
        // more important than those of a less pruned kind.
        var (headMean, qkMean, vMean, mlpMean) = KindMeans(importance, within);

        var st = new BlockState[arch.Depth];
        for (int b = 0; b < arch.Depth; b++)
        {
            var spec = arch.Blocks[b];
            var imp = importance[b];
            List<int> heads;
            if (fixedHeads is not null)
            {
                heads = fixedHeads[b].Distinct().OrderBy(i => i).ToList();
                if (heads.Count == 0) throw new ArgumentOutOfRangeException(nameof(fixedHeads), $"Block {b} would keep no head; every block needs at least one.");
                if (heads.Any(i => i < 0 || i >= spec.Heads)) throw new ArgumentOutOfRangeException(nameof(fixedHeads), $"Block {b}: head index out of range [0, {spec.Heads}).");
            }
            else heads = within is null ? Enumerable.Range(0, spec.Heads).ToList() : within.Blocks[b].Heads.ToList();
            var start = within?.Blocks[b];
            ImmutableArray<int>? KeptOf(ImmutableArray<ImmutableArray<int>> dims, int head)
            {
                int i = start is null ? -1 : start.Heads.IndexOf(head);
                return i < 0 ? null : dims[i];
            }
            st[b] = new BlockState
            {
                Heads = heads.OrderByDescending(i => imp.Heads[i]).ThenBy(i => i).ToList(),
                Qk = start?.QkDims[0].Length ?? spec.QkDim, V = start?.VDims[0].Length ?? spec.VDim,
                // per head: dims sorted by descending importance (kept = first Qk/V entries; a start plan's kept ones first)
                QkOrder = imp.QkDims.Select((r, hh) => Order(r, start is null ? null : KeptOf(start.QkDims, hh))).ToArray(),
                VOrder = imp.VDims.Select((r, hh) => Order(r, start is null ? null : KeptOf(start.VDims, hh))).ToArray(),
                MlpOrder = Order(imp.Mlp, start?.MlpNeurons),
                Mlp = start?.MlpNeurons.Length ?? spec.MlpHidden,
                CanDropHeads = fixedHeads is null,
            };
        }
        long current = nonBlock + st.Select((s, b) => BlockParams(b, s.Heads.Count, s.Qk, s.V, s.Mlp)).Sum();

        while (current > target + tol / 2)
        {
            // candidates: (score, cost, apply); steps of the granularity first, single structures only when every aligned
            // step would overshoot the tolerance band (the budget is a hard constraint, alignment a preference)
            double best = double.PositiveInfinity; long bestCost = 0; Action? bestApply = null;
            foreach (bool fine in granularity == 1 ? [true] : new[] { false, true })
            {
                if (bestApply is not null && best < Overshoot) break;
                for (int b = 0; b < arch.Depth; b++)
                {
                    var s = st[b]; var imp = importance[b];
                    int h = s.Heads.Count;
                    void Consider(double score, long cost, Action apply)
                    {
                        // prefer not to overshoot below the tolerance band when a cheaper structure can still be removed
                        if (current - cost < target - tol / 2) score += Overshoot;
                        if (score < best) { best = score; bestCost = cost; bestApply = apply; }
                    }
                    if (s.CanDropHeads && h > minHeads && (!fine || granularity == 1))   // with granularity 1 the one pass is the fine one
                    {
                        int victim = s.Heads[^1];
                        long cost = BlockParams(b, h, s.Qk, s.V, s.Mlp) - BlockParams(b, h - 1, s.Qk, s.V, s.Mlp);
                        Consider(imp.Heads[victim] / headMean, cost, () => s.Heads.RemoveAt(s.Heads.Count - 1));
                    }
                    int kq = fine ? 1 : Step(s.Qk), kv = fine ? 1 : Step(s.V), km = fine ? 1 : Step(s.Mlp);
                    if (s.Qk - kq >= minDim)
                    {
                        double score = s.Heads.Average(hh => Enumerable.Range(s.Qk - kq, kq).Average(j => imp.QkDims[hh][s.QkOrder[hh][j]])) / qkMean;
                        long cost = BlockParams(b, h, s.Qk, s.V, s.Mlp) - BlockParams(b, h, s.Qk - kq, s.V, s.Mlp);
                        Consider(score, cost, () => s.Qk -= kq);
                    }
                    if (s.V - kv >= minDim)
                    {
                        double score = s.Heads.Average(hh => Enumerable.Range(s.V - kv, kv).Average(j => imp.VDims[hh][s.VOrder[hh][j]])) / vMean;
                        long cost = BlockParams(b, h, s.Qk, s.V, s.Mlp) - BlockParams(b, h, s.Qk, s.V - kv, s.Mlp);
                        Consider(score, cost, () => s.V -= kv);
                    }
                    if (s.Mlp - km >= minMlp)
                    {
                        double score = Enumerable.Range(s.Mlp - km, km).Average(j => imp.Mlp[s.MlpOrder[j]]) / mlpMean;
                        Consider(score, BlockParams(b, h, s.Qk, s.V, s.Mlp) - BlockParams(b, h, s.Qk, s.V, s.Mlp - km), () => s.Mlp -= km);
                    }
                }
            }
            if (bestApply is null)
                throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity,
                    $"Cannot remove {sparsity:P1} of the {(costModel is null ? "parameters" : "cost (latency)")}: the floors (≥{minHeads} head(s), ≥{minDim} dim(s) per head, ≥{minMlp} MLP neuron(s) per block) and the parts that are never pruned (embeddings, norms, head) leave at least {current:N0} of {total:N0}{(costModel is null ? "" : " (ns)")}.");
            bestApply();
            current -= bestCost;
        }

        var blocks = st.Select(s =>
        {
            var heads = s.Heads.OrderBy(i => i).ToImmutableArray();
            return new BlockPlan(heads,
                heads.Select(hh => s.QkOrder[hh].Take(s.Qk).OrderBy(j => j).ToImmutableArray()).ToImmutableArray(),
                heads.Select(hh => s.VOrder[hh].Take(s.V).OrderBy(j => j).ToImmutableArray()).ToImmutableArray(),
                s.MlpOrder.Take(s.Mlp).OrderBy(j => j).ToImmutableArray());
        }).ToImmutableArray();
        return new StructurePlan(blocks);
    }

    /// <summary>
    /// Fraction of <paramref name="dense"/>'s cost that <paramref name="pruned"/> (the same depth) removes: of the parameters,
    /// or of <paramref name="costModel"/>'s units when given.
    /// </summary>
    public static double RemovedFraction(ViTArchitecture dense, ViTArchitecture pruned, IBlockCost? costModel = null)
    {
        ArgumentNullException.ThrowIfNull(dense);
        ArgumentNullException.ThrowIfNull(pruned);
        if (costModel is null) return 1.0 - (double)pruned.ParameterCount / dense.ParameterCount;
        double Total(ViTArchitecture a) => costModel.NonBlock + a.Blocks.Select((s, b) => (double)costModel.Block(b, s.Heads, s.QkDim, s.VDim, s.MlpHidden)).Sum();
        return 1.0 - Total(pruned) / Total(dense);
    }

    /// <summary>
    /// Mean importance of each structure kind (heads, q/k dims, v dims, MLP neurons) over the structures that
    /// <paramref name="within"/> keeps (all of them when it is null).
    /// </summary>
    internal static (double Heads, double Qk, double V, double Mlp) KindMeans(IReadOnlyList<BlockImportance> importance, StructurePlan? within)
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

    // indices by descending importance (ties: lower index first); with a start plan, its kept indices come first
    private static int[] Order(float[] importance, ImmutableArray<int>? kept) => Enumerable.Range(0, importance.Length)
        .OrderByDescending(j => kept is null || kept.Value.Contains(j)).ThenByDescending(j => importance[j]).ThenBy(j => j).ToArray();

    // score penalty of a step that would overshoot the tolerance band
    private const double Overshoot = 1e9;

    private static double Mean(IEnumerable<float> values)
    {
        double s = 0; long n = 0;
        foreach (var v in values) { s += v; n++; }
        double m = n == 0 ? 1 : s / n;
        return m > 0 ? m : 1e-30;
    }

    private sealed class BlockState
    {
        public required List<int> Heads;
        public required int Qk, V, Mlp;
        public required int[][] QkOrder, VOrder;
        public required int[] MlpOrder;
        public required bool CanDropHeads;
    }

    // ---- masks -----------------------------------------------------------------------------------------------

    /// <summary>0/1 masks of one block, in the shapes of its prunable parameters.</summary>
    public sealed class BlockMasks : IDisposable
    {
        /// <summary>[qkv width]: rows of qkv.weight and entries of qkv.bias.</summary>
        public required Tensor QkvRows { get; init; }
        /// <summary>[heads·vDim]: columns of proj.weight.</summary>
        public required Tensor ProjCols { get; init; }
        /// <summary>[mlp]: rows of fc1 (and its bias) and columns of fc2.</summary>
        public required Tensor Mlp { get; init; }

        /// <inheritdoc />
        public void Dispose() { QkvRows.Dispose(); ProjCols.Dispose(); Mlp.Dispose(); }
    }

    /// <summary>Builds 0/1 masks for <paramref name="plan"/> on <paramref name="device"/> (float32).</summary>
    public static BlockMasks[] Masks(ViTArchitecture arch, StructurePlan plan, Device? device = null)
    {
        plan.Validate(arch);
        var masks = new BlockMasks[arch.Depth];
        for (int b = 0; b < arch.Depth; b++)
        {
            var spec = arch.Blocks[b]; var p = plan.Blocks[b];
            var layout = spec.Qkv;
            var qkv = new float[layout.Rows]; var proj = new float[layout.VRows]; var mlp = new float[spec.MlpHidden];
            for (int i = 0; i < p.Heads.Length; i++)
            {
                int head = p.Heads[i];
                foreach (int j in p.QkDims[i])
                {
                    qkv[layout.QRow(head, j)] = 1;
                    qkv[layout.KRow(head, j)] = 1;
                }
                foreach (int j in p.VDims[i])
                {
                    qkv[layout.VRow(head, j)] = 1;
                    proj[layout.ProjColumn(head, j)] = 1;
                }
            }
            foreach (int j in p.MlpNeurons) mlp[j] = 1;
            masks[b] = new BlockMasks
            {
                QkvRows = tensor(qkv, device: device), ProjCols = tensor(proj, device: device), Mlp = tensor(mlp, device: device),
            };
        }
        return masks;
    }

    /// <summary>
    /// The prunable parameters of every block, in a fixed order: qkv.weight, qkv.bias, proj.weight, fc1.weight,
    /// fc1.bias, fc2.weight (embeddings, norms, the proj/fc2 biases and the head are never pruned).
    /// </summary>
    internal static IEnumerable<TorchSharp.Modules.Parameter> Prunable(VisionTransformerModel model)
    {
        foreach (var blk in model.Blocks)
        {
            yield return blk.attn.qkv.weight; yield return blk.attn.qkv.bias; yield return blk.attn.proj.weight;
            yield return blk.mlp.fc1.weight; yield return blk.mlp.fc1.bias; yield return blk.mlp.fc2.weight;
        }
    }

    /// <summary>Each prunable parameter (<see cref="Prunable"/> order) with its mask broadcast to the parameter's shape.</summary>
    internal static IEnumerable<(TorchSharp.Modules.Parameter Parameter, Tensor Mask)> PrunableWithMasks(
        VisionTransformerModel model, IReadOnlyList<BlockMasks> masks) => Prunable(model).Zip(MaskViews(masks));

    private static IEnumerable<Tensor> MaskViews(IReadOnlyList<BlockMasks> masks)
    {
        foreach (var m in masks)
        {
            yield return m.QkvRows.unsqueeze(1); yield return m.QkvRows; yield return m.ProjCols.unsqueeze(0);   // qkv rows, qkv bias, proj columns
            yield return m.Mlp.unsqueeze(1); yield return m.Mlp; yield return m.Mlp.unsqueeze(0);                // fc1 rows, fc1 bias, fc2 columns
        }
    }

    /// <summary>Multiplies every prunable parameter of <paramref name="model"/> by its mask, in place (Π applied to W).</summary>
    public static void Apply(VisionTransformerModel model, IReadOnlyList<BlockMasks> masks)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        foreach (var (p, mask) in PrunableWithMasks(model, masks)) p.mul_(mask);
    }

    /// <summary>Zeroes everything outside <paramref name="plan"/> in place.</summary>
    public static void Apply(VisionTransformerModel model, StructurePlan plan)
    {
        var masks = Masks(model.Architecture, plan, model.parameters().First().device);
        try { Apply(model, masks); }
        finally { foreach (var m in masks) m.Dispose(); }
    }
}
