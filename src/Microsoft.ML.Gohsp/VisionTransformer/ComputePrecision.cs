namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>Numeric precision of the matrix products of a <see cref="VisionTransformerModel"/>.</summary>
public enum ComputePrecision
{
    /// <summary>Everything in float32.</summary>
    Float32 = 0,

    /// <summary>
    /// Mixed precision: the linear layers and attention run in bfloat16 on casted copies of float32 master
    /// weights; LayerNorm, softmax statistics, the residual stream, the loss and the optimiser stay float32.
    /// Fast on CPUs with AVX512-BF16/AMX and on CUDA GPUs.
    /// </summary>
    BFloat16 = 1,
}

/// <summary>Settings shared by all modules of one model instance.</summary>
internal sealed class ComputeSettings
{
    public ComputePrecision Precision { get; set; }
}
