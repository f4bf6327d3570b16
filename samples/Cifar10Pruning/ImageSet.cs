using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Transforms.Image;

namespace Cifar10Pruning;

/// <summary>
/// Labelled RGB images of one size held in memory as planar bytes (R plane, G plane, B plane; row-major): a CIFAR-10 split
/// or a folder of image files decoded and resized to the architecture's image size.
/// </summary>
internal sealed class ImageSet
{
    public ImageSet(IReadOnlyList<string> classNames, int[] labels, byte[] pixels, int size)
    {
        if ((long)labels.Length * 3 * size * size != pixels.LongLength)
            throw new ArgumentException($"{pixels.LongLength} pixel bytes for {labels.Length} images of 3×{size}×{size}.", nameof(pixels));
        (ClassNames, Labels, Pixels, Size) = (classNames, labels, pixels, size);
    }

    /// <summary>A CIFAR-10 split (its arrays are shared, not copied).</summary>
    public static ImageSet From(Cifar10Dataset cifar) =>
        new(cifar.ClassNames, cifar.Labels.Select(b => (int)b).ToArray(), cifar.Pixels, Cifar10.ImageSize);

    public IReadOnlyList<string> ClassNames { get; }
    /// <summary>Class index into <see cref="ClassNames"/> per image.</summary>
    public int[] Labels { get; }
    public byte[] Pixels { get; }
    /// <summary>Width and height.</summary>
    public int Size { get; }
    public int Count => Labels.Length;
    private int ImageBytes => 3 * Size * Size;

    public ReadOnlySpan<byte> GetImage(int i) => Pixels.AsSpan(i * ImageBytes, ImageBytes);

    public string GetClassName(int i) => ClassNames[Labels[i]];

    /// <summary>The first <paramref name="n"/> images (or all).</summary>
    public ImageSet Take(int? n) => n is int k && k < Count ? Select(Enumerable.Range(0, k).ToArray()) : this;

    /// <summary>The images at <paramref name="indices"/>, in that order (copied).</summary>
    public ImageSet Select(IReadOnlyList<int> indices)
    {
        var pixels = new byte[(long)indices.Count * ImageBytes];
        for (int k = 0; k < indices.Count; k++) GetImage(indices[k]).CopyTo(pixels.AsSpan(k * ImageBytes, ImageBytes));
        return new ImageSet(ClassNames, indices.Select(i => Labels[i]).ToArray(), pixels, Size);
    }

    /// <summary>Raw 0…255 float pixels and class indices: the input of the raw-model measurements.</summary>
    public ImageTensorData ToTensorData()
    {
        var pixels = new float[Pixels.LongLength];
        System.Numerics.Tensors.TensorPrimitives.ConvertTruncating<byte, float>(Pixels, pixels); // exact: 0..255
        return new ImageTensorData(pixels, (int[])Labels.Clone(), 3, Size);
    }

    /// <summary>Image <paramref name="i"/> as an <see cref="MLImage"/> (Bgra32, alpha 255) the caller disposes.</summary>
    public MLImage CreateImage(int i)
    {
        var planar = GetImage(i);
        int plane = Size * Size;
        var bgra = new byte[4 * plane];
        for (int p = 0; p < plane; p++)
            (bgra[4 * p], bgra[4 * p + 1], bgra[4 * p + 2], bgra[4 * p + 3]) = (planar[2 * plane + p], planar[plane + p], planar[p], 255);
        return MLImage.CreateFromPixels(Size, Size, MLPixelFormat.Bgra32, bgra);
    }

    /// <summary>The <see cref="ImageInput"/> schema with this set's image size (what <c>ExtractPixels</c> and a PredictionEngine bind to).</summary>
    public SchemaDefinition InputSchema()
    {
        var schema = SchemaDefinition.Create(typeof(ImageInput));
        schema[nameof(ImageInput.Image)].ColumnType = new ImageDataViewType(Size, Size);
        return schema;
    }

    /// <summary>A <c>Label</c> (class name) and an <c>Image</c> (<see cref="MLImage"/>, Size×Size) column; each cursor creates its images.</summary>
    public IDataView ToDataView(MLContext ml) => ml.Data.LoadFromEnumerable(Rows(), InputSchema());

    private IEnumerable<ImageInput> Rows()
    {
        for (int i = 0; i < Count; i++) yield return new ImageInput { Image = CreateImage(i), Label = GetClassName(i) };
    }
}
