namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// What <see cref="StructuredProjection.Allocate"/> spends instead of parameters: the cost of the parts it never prunes,
/// and of one block at given widths, in integer units (parameters, nanoseconds, ...). Costs must not grow when a width
/// shrinks.
/// </summary>
public interface IBlockCost
{
    /// <summary>Cost of everything outside the blocks (embeddings, final norm, head).</summary>
    long NonBlock { get; }

    /// <summary>Cost of block <paramref name="block"/> with these widths.</summary>
    long Block(int block, int heads, int qkDim, int vDim, int mlpWidth);
}
