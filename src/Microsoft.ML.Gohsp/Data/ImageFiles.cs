namespace Microsoft.ML.Gohsp.Data;

/// <summary>Image files read the way a ViT model reads a column of encoded image bytes (<c>LoadRawImageBytes</c>).</summary>
public static class ImageFiles
{
    /// <summary>
    /// Decodes an encoded image (PNG, JPEG, BMP, GIF or WebP; grayscale, palette and RGBA are converted to RGB) and resizes it
    /// to <paramref name="size"/>×<paramref name="size"/> (bilinear, antialiased): planar RGB floats 0…255 (the red plane,
    /// then green, then blue, each row-major), exactly what a model trained on encoded bytes computes from the same bytes.
    /// </summary>
    /// <param name="encoded">The file's contents.</param>
    /// <param name="size">Width and height of the result (the architecture's <c>ImageSize</c>).</param>
    /// <param name="name">The file's name or path, for the error message.</param>
    /// <returns>3 × <paramref name="size"/> × <paramref name="size"/> values.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="encoded"/> or <paramref name="name"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is not positive.</exception>
    /// <exception cref="InvalidDataException">The bytes are empty or do not decode as an image; the message names <paramref name="name"/>.</exception>
    public static float[] DecodePlanarRgb(byte[] encoded, int size, string name)
    {
        ArgumentNullException.ThrowIfNull(encoded);
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        if (encoded.Length == 0)
            throw new InvalidDataException($"'{name}' is empty; expected an encoded image (PNG, JPEG, BMP, GIF or WebP).");
        var pixels = new float[3 * size * size];
        try
        {
            using var image = ImageColumn.Decode(encoded, $"'{name}'", "", "");
            ImageColumn.CopyImage(image, pixels, size, name);
        }
        catch (InvalidOperationException e)
        {
            throw new InvalidDataException(e.Message, e.InnerException ?? e);
        }
        return pixels;
    }
}
