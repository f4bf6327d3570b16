namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// Images and labels held in memory as raw (unnormalised) planar CHW float32 pixels, the form every
/// training and evaluation pass of this library consumes. Batches are cut from it and normalised on the fly.
/// </summary>
public sealed class ImageTensorData
{
    /// <summary>Wraps existing arrays (no copy).</summary>
    /// <param name="pixels">Count·Channels·Size·Size raw pixel values, image after image, planar CHW.</param>
    /// <param name="labels">Class index per image (0-based), or -1 where unknown.</param>
    /// <param name="channels">Channels per image.</param>
    /// <param name="size">Height = width.</param>
    public ImageTensorData(float[] pixels, int[] labels, int channels, int size)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        if (channels <= 0 || size <= 0) throw new ArgumentOutOfRangeException(nameof(size), "Channels and size must be positive.");
        long per = (long)channels * size * size;
        if (pixels.LongLength != per * labels.Length)
            throw new ArgumentException($"pixels has {pixels.LongLength} values; expected {labels.Length}·{per}.", nameof(pixels));
        Pixels = pixels; Labels = labels; Channels = channels; Size = size;
    }

    /// <summary>Raw planar pixels.</summary>
    public float[] Pixels { get; }
    /// <summary>0-based labels (-1 = unknown).</summary>
    public int[] Labels { get; }
    /// <summary>Number of images.</summary>
    public int Count => Labels.Length;
    /// <summary>Channels per image.</summary>
    public int Channels { get; }
    /// <summary>Height and width.</summary>
    public int Size { get; }
    /// <summary>Values per image.</summary>
    public int ImageLength => Channels * Size * Size;

    /// <summary>The first <paramref name="n"/> images (copy).</summary>
    public ImageTensorData Take(int n)
    {
        n = Math.Clamp(n, 0, Count);
        return new ImageTensorData(Pixels.AsSpan(0, n * ImageLength).ToArray(), Labels.AsSpan(0, n).ToArray(), Channels, Size);
    }
}
