using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// How raw pixel values become model input: <c>x' = (x · PixelScale − Mean[c]) / Std[c]</c> per channel.
/// Stored inside saved models so that inference applies exactly what training did.
/// </summary>
public sealed record ViTPreprocessing(float PixelScale, IReadOnlyList<float> Mean, IReadOnlyList<float> Std)
{
    internal static ViTPreprocessing From(ViTTrainingOptions o) => new(o.PixelScale, o.Mean.ToArray(), o.Std.ToArray());

    internal ViTTrainingOptions ToTrainingOptions() => new() { PixelScale = PixelScale, Mean = Mean.ToArray(), Std = Std.ToArray() };

    internal void NormalizeInPlace(float[] x, int channels) => NormalizeInPlace(x.AsSpan(), channels);

    /// <summary>Normalises one planar image (channels × plane values) in place.</summary>
    internal void NormalizeInPlace(Span<float> x, int channels)
    {
        int plane = x.Length / channels;
        for (int c = 0; c < channels; c++)
        {
            float a = PixelScale / Std[c], b = Mean[c] / Std[c];
            var span = x.Slice(c * plane, plane);
            for (int i = 0; i < span.Length; i++) span[i] = span[i] * a - b;
        }
    }

    internal void Write(BinaryWriter w)
    {
        w.Write(PixelScale);
        w.Write(Mean.Count);
        foreach (var m in Mean) w.Write(m);
        foreach (var s in Std) w.Write(s);
    }

    internal static ViTPreprocessing Read(BinaryReader r)
    {
        float scale = r.ReadSingle();
        int n = r.ReadInt32();
        if (n <= 0 || n > 64) throw new InvalidDataException($"Corrupted ViT pre-processing block (channels = {n}).");
        var mean = new float[n]; var std = new float[n];
        for (int i = 0; i < n; i++) mean[i] = r.ReadSingle();
        for (int i = 0; i < n; i++) std[i] = r.ReadSingle();
        return new ViTPreprocessing(scale, mean, std);
    }
}
