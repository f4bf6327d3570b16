using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The projection Π onto the structured-sparse set, shared by GOHSP soft pruning, SOMP and SGMP: measure structure
/// importance (<see cref="Magnitude"/>), allocate a global parameter budget across blocks and structure kinds (heads, q/k
/// dims, v dims, MLP neurons) with per-block floors (<see cref="Allocate"/>), and zero everything outside the resulting
/// <see cref="StructurePlan"/> (<see cref="Masks"/>, <see cref="Apply(VisionTransformerModel, StructurePlan)"/>).
/// </summary>
public static class StructuredProjection
{
    /// <summary>
    /// ℓ2 importance of every structure. <paramref name="weightOf"/> maps a parameter to the tensor to measure
    /// (default: the parameter itself; ADMM passes W + U).
    /// </summary>
    public static BlockImportance[] Magnitude(VisionTransformerModel model, Func<TorchSharp.Modules.Parameter, Tensor>? weightOf = null) =>
        MagnitudeImportance.Measure(model, weightOf);

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
        IBlockCost? costModel = null) =>
        BudgetAllocator.Allocate(arch, importance, sparsity, options, fixedHeads, within, costModel);

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
