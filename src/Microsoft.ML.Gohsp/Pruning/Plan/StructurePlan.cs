using System.Collections.Immutable;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// What one block keeps: head indices, and for every kept head the kept query/key and value dimension indices
/// (the same count for all kept heads of the block, chosen per head), plus the kept MLP neurons.
/// </summary>
/// <param name="Heads">Kept head indices (ascending).</param>
/// <param name="QkDims">Per kept head (same order as <paramref name="Heads"/>): kept q/k dimension indices (ascending).</param>
/// <param name="VDims">Per kept head: kept value dimension indices (ascending).</param>
/// <param name="MlpNeurons">Kept MLP hidden neurons (ascending).</param>
public sealed record BlockPlan(
    ImmutableArray<int> Heads,
    ImmutableArray<ImmutableArray<int>> QkDims,
    ImmutableArray<ImmutableArray<int>> VDims,
    ImmutableArray<int> MlpNeurons)
{
    /// <summary>The block shape after pruning.</summary>
    public ViTBlockSpec ToSpec() => new(Heads.Length, QkDims[0].Length, VDims[0].Length, MlpNeurons.Length);

    /// <summary>A plan that keeps everything of <paramref name="spec"/>.</summary>
    public static BlockPlan KeepAll(ViTBlockSpec spec) => new(
        Enumerable.Range(0, spec.Heads).ToImmutableArray(),
        Enumerable.Repeat(Enumerable.Range(0, spec.QkDim).ToImmutableArray(), spec.Heads).ToImmutableArray(),
        Enumerable.Repeat(Enumerable.Range(0, spec.VDim).ToImmutableArray(), spec.Heads).ToImmutableArray(),
        Enumerable.Range(0, spec.MlpHidden).ToImmutableArray());

    /// <summary>Checks the plan against the block it prunes; throws <see cref="ArgumentException"/> when inconsistent.</summary>
    public void Validate(ViTBlockSpec spec, int block)
    {
        string where = $"Block {block}";
        if (Heads.IsDefaultOrEmpty) throw new ArgumentException($"{where}: a plan must keep at least one head.");
        if (QkDims.Length != Heads.Length || VDims.Length != Heads.Length)
            throw new ArgumentException($"{where}: QkDims and VDims need one entry per kept head.");
        if (MlpNeurons.IsDefaultOrEmpty) throw new ArgumentException($"{where}: a plan must keep at least one MLP neuron.");
        CheckIndices(Heads, spec.Heads, where + " heads");
        CheckIndices(MlpNeurons, spec.MlpHidden, where + " MLP neurons");
        int dq = QkDims[0].Length, dv = VDims[0].Length;
        if (dq == 0 || dv == 0) throw new ArgumentException($"{where}: every kept head keeps at least one q/k and one v dimension.");
        for (int i = 0; i < Heads.Length; i++)
        {
            if (QkDims[i].Length != dq || VDims[i].Length != dv)
                throw new ArgumentException($"{where}: all kept heads must keep the same number of q/k dims and of v dims.");
            CheckIndices(QkDims[i], spec.QkDim, where + " q/k dims");
            CheckIndices(VDims[i], spec.VDim, where + " v dims");
        }
    }

    private static void CheckIndices(ImmutableArray<int> idx, int count, string what)
    {
        for (int i = 0; i < idx.Length; i++)
        {
            if (idx[i] < 0 || idx[i] >= count) throw new ArgumentException($"{what}: index {idx[i]} out of range [0, {count}).");
            if (i > 0 && idx[i] <= idx[i - 1]) throw new ArgumentException($"{what}: indices must be strictly ascending.");
        }
    }
}

/// <summary>A structured-sparsity plan for a whole model: one <see cref="BlockPlan"/> per block.</summary>
/// <param name="Blocks">Per-block plans.</param>
public sealed record StructurePlan(ImmutableArray<BlockPlan> Blocks)
{
    /// <summary>The architecture the pruned model will have.</summary>
    public ViTArchitecture PrunedArchitecture(ViTArchitecture dense) => dense.WithBlocks(Blocks.Select(b => b.ToSpec()));

    /// <summary>Keeps everything.</summary>
    public static StructurePlan KeepAll(ViTArchitecture a) => new(a.Blocks.Select(BlockPlan.KeepAll).ToImmutableArray());

    /// <summary>Writes the plan (index lists only) for checkpoints.</summary>
    internal void Write(BinaryWriter w)
    {
        static void Ints(BinaryWriter w, ImmutableArray<int> xs) { w.Write(xs.Length); foreach (int x in xs) w.Write(x); }
        w.Write(Blocks.Length);
        foreach (var b in Blocks)
        {
            Ints(w, b.Heads);
            foreach (var d in b.QkDims) Ints(w, d);
            foreach (var d in b.VDims) Ints(w, d);
            Ints(w, b.MlpNeurons);
        }
    }

    /// <summary>Reads what <see cref="Write"/> wrote.</summary>
    internal static StructurePlan Read(BinaryReader r)
    {
        static ImmutableArray<int> Ints(BinaryReader r)
        {
            int n = r.ReadInt32();
            if (n < 0 || n > 1 << 24) throw new InvalidDataException($"Corrupted structure plan (list length {n}).");
            var xs = new int[n];
            for (int i = 0; i < n; i++) xs[i] = r.ReadInt32();
            return xs.ToImmutableArray();
        }
        int depth = r.ReadInt32();
        if (depth < 0 || depth > 1 << 16) throw new InvalidDataException($"Corrupted structure plan (depth {depth}).");
        var blocks = new BlockPlan[depth];
        for (int b = 0; b < depth; b++)
        {
            var heads = Ints(r);
            var qk = heads.Select(_ => Ints(r)).ToImmutableArray();
            var v = heads.Select(_ => Ints(r)).ToImmutableArray();
            blocks[b] = new BlockPlan(heads, qk, v, Ints(r));
        }
        return new StructurePlan(blocks.ToImmutableArray());
    }

    /// <summary>
    /// Fraction of the prunable parameters this plan keeps (q/k rows with their biases, v rows with their biases and
    /// output-projection columns, MLP neurons) that <paramref name="other"/> keeps too; 1 when the two keep the same
    /// structures. Both plans must be for <paramref name="a"/>.
    /// </summary>
    public double Overlap(StructurePlan other, ViTArchitecture a)
    {
        ArgumentNullException.ThrowIfNull(other);
        Validate(a);
        other.Validate(a);
        long d = a.EmbedDim, kept = 0, shared = 0;
        for (int b = 0; b < Blocks.Length; b++)
        {
            BlockPlan p = Blocks[b], q = other.Blocks[b];
            for (int i = 0; i < p.Heads.Length; i++)
            {
                kept += p.QkDims[i].Length * 2 * (d + 1) + p.VDims[i].Length * (2 * d + 1);
                int j = q.Heads.IndexOf(p.Heads[i]);
                if (j < 0) continue;
                shared += p.QkDims[i].Intersect(q.QkDims[j]).Count() * 2 * (d + 1) + p.VDims[i].Intersect(q.VDims[j]).Count() * (2 * d + 1);
            }
            kept += p.MlpNeurons.Length * (2 * d + 1);
            shared += p.MlpNeurons.Intersect(q.MlpNeurons).Count() * (2 * d + 1);
        }
        return kept == 0 ? 1 : (double)shared / kept;
    }

    /// <summary>Validates every block plan against <paramref name="a"/>.</summary>
    public void Validate(ViTArchitecture a)
    {
        if (Blocks.Length != a.Depth) throw new ArgumentException($"The plan has {Blocks.Length} blocks; the model has {a.Depth}.");
        for (int b = 0; b < Blocks.Length; b++) Blocks[b].Validate(a.Blocks[b], b);
    }
}
