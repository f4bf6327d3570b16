namespace Microsoft.ML.Gohsp.Pruning;

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
