namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// Where each head's rows lie in a block's fused query/key/value projection (<c>attn.qkv.weight</c> and its bias), and its
/// columns in the output projection (<c>attn.proj.weight</c>): rows <c>[q heads | k heads | v heads]</c>, head-major inside
/// each part, <see cref="QkDim"/> rows per q or k head and <see cref="VDim"/> per v head; the output projection's columns
/// are the v rows' order. It is timm's layout when the q/k dim equals the v dim. The attention module, the ONNX export,
/// the importance measures, the masks and the pruning surgery all index the projection through this type.
/// </summary>
/// <param name="Heads">Heads of the block.</param>
/// <param name="QkDim">Query/key dimension per head.</param>
/// <param name="VDim">Value dimension per head.</param>
internal readonly record struct QkvLayout(int Heads, int QkDim, int VDim)
{
    /// <summary>The layout of a block of this shape.</summary>
    public QkvLayout(ViTBlockSpec spec) : this(spec.Heads, spec.QkDim, spec.VDim) { }

    /// <summary>Rows of the q part (<c>Heads·QkDim</c>), which starts at row 0.</summary>
    public int QRows => Heads * QkDim;

    /// <summary>Rows of the k part (<c>Heads·QkDim</c>), which starts at <see cref="KStart"/>.</summary>
    public int KRows => Heads * QkDim;

    /// <summary>Rows of the v part (<c>Heads·VDim</c>), which starts at <see cref="VStart"/>; also the output projection's input width.</summary>
    public int VRows => Heads * VDim;

    /// <summary>First row of the k part.</summary>
    public int KStart => QRows;

    /// <summary>First row of the v part.</summary>
    public int VStart => QRows + KRows;

    /// <summary>All rows: <c>Heads·(2·QkDim + VDim)</c>.</summary>
    public int Rows => VStart + VRows;

    /// <summary>Row of query dimension <paramref name="dim"/> of head <paramref name="head"/>.</summary>
    public int QRow(int head, int dim) => head * QkDim + dim;

    /// <summary>Row of key dimension <paramref name="dim"/> of head <paramref name="head"/>.</summary>
    public int KRow(int head, int dim) => KStart + head * QkDim + dim;

    /// <summary>Row of value dimension <paramref name="dim"/> of head <paramref name="head"/>.</summary>
    public int VRow(int head, int dim) => VStart + head * VDim + dim;

    /// <summary>Column of the output projection that value dimension <paramref name="dim"/> of head <paramref name="head"/> feeds.</summary>
    public int ProjColumn(int head, int dim) => head * VDim + dim;
}
