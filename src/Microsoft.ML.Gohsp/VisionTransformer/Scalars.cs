using TorchSharp;

namespace Microsoft.ML.Gohsp.VisionTransformer;

/// <summary>
/// Scalars the library owns for the whole process. TorchSharp's <c>a + b</c> passes an implicitly created alpha of 1
/// whose handle outlives the last reference to it, so a finalizer can free it during the native call; tensor sums on the
/// hot paths pass this one instead (<c>a.add(b, Scalars.One)</c>), which is never collected.
/// </summary>
internal static class Scalars
{
    /// <summary>The alpha of a plain sum.</summary>
    internal static readonly Scalar One = 1.0.ToScalar();
}
