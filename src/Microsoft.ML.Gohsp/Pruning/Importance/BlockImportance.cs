namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Importance of every prunable structure of one block, higher for a structure more worth keeping: the mean squared
/// magnitude per parameter of the structure (<see cref="StructuredProjection.Magnitude"/>), or a Fisher or Taylor score.
/// </summary>
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
