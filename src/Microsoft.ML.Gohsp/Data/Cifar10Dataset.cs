// An in-memory CIFAR-10 split as raw bytes (the official binary layout minus the label bytes).

namespace Microsoft.ML.Gohsp.Data;

/// <summary>
/// An in-memory CIFAR-10 split kept as raw bytes exactly as stored in the official binary files.
/// </summary>
/// <remarks>
/// <para>Image <c>i</c> occupies <c>Pixels[i*3072 .. (i+1)*3072)</c>: 1024 red bytes, then 1024 green, then 1024 blue,
/// each plane row-major 32×32 (planar CHW, uint8). <c>Labels[i]</c> is the class index 0..9 into <see cref="ClassNames"/>.</para>
/// <para>The arrays are exposed directly (no copies) so that a trainer can convert them to tensors in bulk; callers
/// should treat them as read-only.</para>
/// </remarks>
public sealed class Cifar10Dataset
{
    /// <summary>
    /// Creates a data set from raw arrays (which are used as-is, not copied).
    /// </summary>
    /// <param name="classNames">The class names, indexed by label (at least 10 entries).</param>
    /// <param name="labels">One label byte (0..9) per image.</param>
    /// <param name="pixels">Planar CHW pixel bytes, <c>labels.Length * 3072</c> bytes.</param>
    /// <exception cref="ArgumentNullException">An argument is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">Sizes are inconsistent, or a label is out of range of <paramref name="classNames"/>.</exception>
    public Cifar10Dataset(IReadOnlyList<string> classNames, byte[] labels, byte[] pixels)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(pixels);
        if (classNames.Count < Cifar10.ClassCount)
            throw new ArgumentException($"Expected at least {Cifar10.ClassCount} class names, got {classNames.Count}.", nameof(classNames));
        if ((long)labels.Length * Cifar10.ImageBytes != pixels.LongLength)
            throw new ArgumentException(
                $"Pixel buffer has {pixels.LongLength} bytes; expected {labels.Length} images x {Cifar10.ImageBytes} = {(long)labels.Length * Cifar10.ImageBytes}.",
                nameof(pixels));
        int bad = labels.AsSpan().IndexOfAnyExceptInRange((byte)0, (byte)(classNames.Count - 1));
        if (bad >= 0)
            throw new ArgumentException($"Label {labels[bad]} at index {bad} is out of range 0..{classNames.Count - 1}.", nameof(labels));

        ClassNames = Array.AsReadOnly(classNames.ToArray());
        Labels = labels;
        Pixels = pixels;
    }

    /// <summary>The class names, indexed by label (from <c>batches.meta.txt</c>, or the standard CIFAR-10 names).</summary>
    public IReadOnlyList<string> ClassNames { get; }

    /// <summary>The number of images.</summary>
    public int Count => Labels.Length;

    /// <summary>One label byte (class index 0..9) per image.</summary>
    public byte[] Labels { get; }

    /// <summary>All images as planar CHW uint8, <c>Count * 3072</c> bytes, exactly the file layout minus the label bytes.</summary>
    public byte[] Pixels { get; }

    /// <summary>Gets the 3072 planar CHW bytes (R plane, G plane, B plane; each 32×32 row-major) of image <paramref name="i"/>.</summary>
    /// <param name="i">The image index, 0 ≤ <paramref name="i"/> &lt; <see cref="Count"/>.</param>
    /// <returns>A view into <see cref="Pixels"/> (no copy).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="i"/> is out of range.</exception>
    public ReadOnlySpan<byte> GetImage(int i)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(i);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(i, Count);
        return new ReadOnlySpan<byte>(Pixels, i * Cifar10.ImageBytes, Cifar10.ImageBytes);
    }

    /// <summary>Gets the class name of image <paramref name="i"/>.</summary>
    /// <param name="i">The image index, 0 ≤ <paramref name="i"/> &lt; <see cref="Count"/>.</param>
    /// <returns><c>ClassNames[Labels[i]]</c>.</returns>
    public string GetClassName(int i) => ClassNames[Labels[i]];

    /// <summary>Returns a data set with the first <paramref name="n"/> images (copied), or all of them if fewer.</summary>
    /// <param name="n">The maximum number of images to keep; must not be negative.</param>
    /// <returns>A new <see cref="Cifar10Dataset"/>, or this instance when <paramref name="n"/> ≥ <see cref="Count"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is negative.</exception>
    public Cifar10Dataset Take(int n)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        if (n >= Count)
            return this;
        return new Cifar10Dataset(ClassNames, Labels.AsSpan(0, n).ToArray(), Pixels.AsSpan(0, n * Cifar10.ImageBytes).ToArray());
    }

    /// <summary>The images at <paramref name="indices"/>, in that order (copied).</summary>
    /// <param name="indices">Image indices, each in [0, <see cref="Count"/>).</param>
    /// <returns>A new <see cref="Cifar10Dataset"/> with the same class names.</returns>
    public Cifar10Dataset Select(IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        var labels = new byte[indices.Count];
        var pixels = new byte[(long)indices.Count * Cifar10.ImageBytes];
        for (int k = 0; k < indices.Count; k++)
        {
            int i = indices[k];
            if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(indices), i, $"Image index outside [0, {Count}).");
            labels[k] = Labels[i];
            GetImage(i).CopyTo(pixels.AsSpan(k * Cifar10.ImageBytes, Cifar10.ImageBytes));
        }
        return new Cifar10Dataset(ClassNames, labels, pixels);
    }

    /// <summary>
    /// The images as raw 0…255 float pixels (planar CHW) with integer labels: the input of the pure TorchSharp layer
    /// (<see cref="Training.TrainingLoop"/>, the pruners, <c>ViTModelParameters.PredictProbabilities</c>).
    /// </summary>
    /// <returns>A new <see cref="Training.ImageTensorData"/> (the pixels are copied and converted).</returns>
    public Training.ImageTensorData ToTensorData()
    {
        var pixels = new float[Pixels.LongLength];
        System.Numerics.Tensors.TensorPrimitives.ConvertTruncating<byte, float>(Pixels, pixels); // exact: 0..255
        var labels = new int[Count];
        for (int i = 0; i < labels.Length; i++) labels[i] = Labels[i];
        return new Training.ImageTensorData(pixels, labels, Cifar10.Channels, Cifar10.ImageSize);
    }
}
