using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Transforms.Image;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp;

/// <summary>How a ViT model receives its image: a planar float vector, an <see cref="MLImage"/> or encoded image bytes.</summary>
internal enum ImageInputKind
{
    /// <summary>Known-size float vector, planar CHW (from <c>ExtractPixels(interleavePixelColors: false)</c>).</summary>
    PlanarVector = 0,
    /// <summary>An <see cref="MLImage"/> column; resized to the model's image size inside.</summary>
    Image = 1,
    /// <summary>Encoded image file bytes (<c>LoadRawImageBytes</c>: PNG, JPEG, BMP, GIF, WebP of any size); decoded, converted to RGB and resized inside.</summary>
    EncodedBytes = 2,
}

/// <summary>Schema checks and pixel conversion for the image input column, shared by trainer, model and pruning estimators.</summary>
internal static class ImageColumn
{
    /// <summary>Checks a column of a real schema; returns its kind. Throws <see cref="ArgumentOutOfRangeException"/> naming the column.</summary>
    public static ImageInputKind Check(DataViewSchema schema, string column, int channels, int size, string paramName)
    {
        var col = schema.GetColumnOrNull(column)
            ?? throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' was not found in the input data. Available columns: {string.Join(", ", schema.Select(c => c.Name))}.");
        return CheckType(col.Type, column, channels, size, paramName);
    }

    public static ImageInputKind CheckType(DataViewType type, string column, int channels, int size, string paramName)
    {
        int expected = channels * size * size;
        if (type is ImageDataViewType)
        {
            if (channels != 3)
                throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' holds MLImage values (RGB), but the architecture expects {channels} channel(s).");
            return ImageInputKind.Image;
        }
        if (type is VectorDataViewType bytes && bytes.ItemType == NumberDataViewType.Byte)
        {
            if (channels != 3)
                throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' holds encoded image bytes (decoded to RGB), but the architecture expects {channels} channel(s).");
            return ImageInputKind.EncodedBytes;
        }
        if (type is VectorDataViewType v && v.ItemType == NumberDataViewType.Single)
        {
            if (!v.IsKnownSize)
                throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' is a variable-size vector; expected a known-size Single vector of {channels}×{size}×{size} = {expected} values (ExtractPixels with interleavePixelColors: false).");
            if (v.Size != expected)
            {
                string hint = v.Size == size * size && channels == 3
                    ? " It looks like a single-channel (grayscale) image; the model expects RGB (use ExtractPixels with the default colorsToExtract)."
                    : v.Size % (size * size) == 0
                        ? $" That is {v.Size / (size * size)} channel(s) of {size}×{size}."
                        : string.Empty;
                throw new ArgumentOutOfRangeException(paramName,
                    $"Image column '{column}' has vector size {v.Size}; expected {channels}×{size}×{size} = {expected} planar CHW values.{hint}");
            }
            return ImageInputKind.PlanarVector;
        }
        throw new ArgumentOutOfRangeException(paramName,
            $"Image column '{column}' has type {type}; expected an MLImage column, a Byte vector of encoded image bytes (LoadRawImageBytes) or a known-size Single vector of {expected} planar CHW values.");
    }

    /// <summary>Check on a <see cref="SchemaShape"/> (estimator-time; vector sizes are not known there).</summary>
    public static void Check(SchemaShape schema, string column, int channels, string paramName)
    {
        if (!schema.TryFindColumn(column, out var col))
            throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' was not found in the input schema. Available columns: {string.Join(", ", schema.Select(c => c.Name))}.");
        if (col.ItemType is ImageDataViewType && col.Kind == SchemaShape.Column.VectorKind.Scalar)
        {
            if (channels != 3)
                throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' holds MLImage values (RGB), but the architecture expects {channels} channel(s).");
            return;
        }
        if (col.ItemType == NumberDataViewType.Single && col.Kind == SchemaShape.Column.VectorKind.Vector)
            return;
        if (col.ItemType == NumberDataViewType.Byte && col.Kind != SchemaShape.Column.VectorKind.Scalar)
        {
            if (channels != 3)
                throw new ArgumentOutOfRangeException(paramName, $"Image column '{column}' holds encoded image bytes (decoded to RGB), but the architecture expects {channels} channel(s).");
            return;
        }
        throw new ArgumentOutOfRangeException(paramName,
            $"Image column '{column}' has type {col.GetTypeString()}; expected an MLImage column, a Byte vector of encoded image bytes (LoadRawImageBytes) or a known-size vector of Single (planar CHW).");
    }

    /// <summary>Writes an MLImage as planar RGB floats 0…255 of size×size (bilinear, antialiased resize when needed).</summary>
    public static void CopyImage(MLImage image, Span<float> dst, int size, string column)
    {
        if (image is null) throw new InvalidOperationException($"Image column '{column}' has a missing (null) image.");
        int w = image.Width, h = image.Height;
        var px = image.Pixels;
        int r, g, b;
        switch (image.PixelFormat)
        {
            case MLPixelFormat.Bgra32: b = 0; g = 1; r = 2; break;
            case MLPixelFormat.Rgba32: r = 0; g = 1; b = 2; break;
            default: throw new InvalidOperationException($"Image column '{column}' has an image with unsupported pixel format {image.PixelFormat}; expected Bgra32 or Rgba32.");
        }
        if (w == size && h == size)
        {
            int plane = size * size;
            for (int i = 0; i < plane; i++)
            {
                dst[i] = px[4 * i + r];
                dst[plane + i] = px[4 * i + g];
                dst[2 * plane + i] = px[4 * i + b];
            }
            return;
        }
        var planar = new float[3 * w * h];
        int p = w * h;
        for (int i = 0; i < p; i++)
        {
            planar[i] = px[4 * i + r];
            planar[p + i] = px[4 * i + g];
            planar[2 * p + i] = px[4 * i + b];
        }
        using var scope = NewDisposeScope();
        var t = tensor(planar, new long[] { 1, 3, h, w });
        var resized = nn.functional.interpolate(t, new long[] { size, size }, mode: InterpolationMode.Bilinear, align_corners: false, antialias: true);
        resized.contiguous().data<float>().CopyTo(dst);
    }

    /// <summary>
    /// Decodes encoded image bytes (PNG, JPEG, BMP, GIF, WebP; grayscale, palette and RGBA are converted to RGB) and writes
    /// them as planar RGB floats 0…255 of size×size. Throws naming the column (and the row, when known) for bytes that are
    /// not an image.
    /// </summary>
    public static void CopyEncoded(in VBuffer<byte> src, Span<float> dst, int size, string column, long row = -1)
    {
        string where = row >= 0 ? $" in row {row}" : "";
        if (src.Length == 0)
            throw new InvalidOperationException($"Image column '{column}' has no bytes{where}; expected an encoded image (PNG, JPEG, BMP, GIF or WebP file contents).");
        using var image = Decode(src.DenseValues().ToArray(), $"Image column '{column}'", where, " Use LoadRawImageBytes on image files, or check the file.");
        CopyImage(image, dst, size, column);
    }

    /// <summary>
    /// Decodes encoded image bytes (PNG, JPEG, BMP, GIF, WebP; any pixel format) into an <see cref="MLImage"/> the caller
    /// disposes: the one decoder of every input that carries encoded bytes. <paramref name="source"/> and
    /// <paramref name="where"/> name the bytes in the error message, <paramref name="advice"/> ends it.
    /// </summary>
    public static MLImage Decode(byte[] bytes, string source, string where, string advice)
    {
        try
        {
            return MLImage.CreateFromStream(new MemoryStream(bytes, writable: false));
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            string head = string.Join(" ", bytes.Take(8).Select(b => b.ToString("x2")));
            throw new InvalidOperationException(
                $"{source} holds {bytes.Length} bytes{where} that do not decode as an image (PNG, JPEG, BMP, GIF or WebP; first bytes: {head}).{advice}", e);
        }
    }

    /// <summary>Copies a float vector (dense or sparse) into <paramref name="dst"/>.</summary>
    public static void CopyVector(in VBuffer<float> src, Span<float> dst, string column)
    {
        if (src.Length != dst.Length)
            throw new InvalidOperationException($"Image column '{column}' has a vector of {src.Length} values; expected {dst.Length}.");
        if (src.IsDense) src.GetValues().CopyTo(dst);
        else
        {
            dst.Clear();
            var idx = src.GetIndices(); var val = src.GetValues();
            for (int i = 0; i < idx.Length; i++) dst[idx[i]] = val[i];
        }
    }

    /// <summary>
    /// Reads an image column, (optionally) a key label column and (optionally) a teacher score column into memory in one
    /// pass, so that each image keeps its label and teacher probabilities. Rows with a missing label are skipped. Throws
    /// naming the column and row on NaN/∞ pixels and on a teacher row that is not a probability vector.
    /// </summary>
    public static ImageTensorData ReadAll(IDataView data, string imageColumn, string? labelColumn, int channels, int size,
        out int skippedMissingLabels, string? teacherColumn = null, int teacherClasses = 0)
    {
        var schema = data.Schema;
        var kind = Check(schema, imageColumn, channels, size, "ImageColumnName");
        var imgCol = schema[imageColumn];
        var cols = new List<DataViewSchema.Column> { imgCol };
        DataViewSchema.Column? labCol = null;
        if (labelColumn is not null)
        {
            labCol = schema[labelColumn];
            cols.Add(labCol.Value);
        }
        DataViewSchema.Column? teacherCol = teacherColumn is null ? null : schema[teacherColumn];
        if (teacherCol is { } tc) cols.Add(tc);
        var teacher = new List<float>();
        float[] teacherRow = new float[teacherClasses];
        VBuffer<float> scores = default;
        int len = channels * size * size;
        var pixels = new List<float[]>();
        const int chunkImages = 1024;
        float[] chunk = new float[(long)chunkImages * len];
        int inChunk = 0;
        var labels = new List<int>();
        skippedMissingLabels = 0;
        using var cursor = data.GetRowCursor(cols);
        ValueGetter<VBuffer<float>>? vecGetter = kind == ImageInputKind.PlanarVector ? cursor.GetGetter<VBuffer<float>>(imgCol) : null;
        ValueGetter<MLImage>? imgGetter = kind == ImageInputKind.Image ? cursor.GetGetter<MLImage>(imgCol) : null;
        ValueGetter<VBuffer<byte>>? bytesGetter = kind == ImageInputKind.EncodedBytes ? cursor.GetGetter<VBuffer<byte>>(imgCol) : null;
        VBuffer<byte> encoded = default;
        ValueGetter<uint>? labGetter = labCol is null ? null : cursor.GetGetter<uint>(labCol.Value);
        ValueGetter<VBuffer<float>>? teacherGetter = teacherCol is null ? null : cursor.GetGetter<VBuffer<float>>(teacherCol.Value);
        VBuffer<float> vec = default; MLImage img = null!; uint key = 0;
        long row = -1;
        while (cursor.MoveNext())
        {
            row++;
            int label = -1;
            if (labGetter is not null)
            {
                labGetter(ref key);
                if (key == 0) { skippedMissingLabels++; continue; }
                label = (int)key - 1;
            }
            var dst = chunk.AsSpan(inChunk * len, len);
            if (vecGetter is not null) { vecGetter(ref vec); CopyVector(vec, dst, imageColumn); }
            else if (bytesGetter is not null) { bytesGetter(ref encoded); CopyEncoded(encoded, dst, size, imageColumn, row); }
            else { imgGetter!(ref img); CopyImage(img, dst, size, imageColumn); }
            foreach (float f in dst)
                if (!float.IsFinite(f))
                    throw new InvalidOperationException($"Image column '{imageColumn}' has a non-finite pixel value ({f}) in row {row}; NaN and ∞ are not valid pixels.");
            if (teacherGetter is not null)
            {
                teacherGetter(ref scores);
                if (scores.Length != teacherClasses)
                    throw new InvalidOperationException($"Teacher score column '{teacherColumn}' has {scores.Length} values in row {row}; expected {teacherClasses}.");
                scores.CopyTo(teacherRow);
                if (ImageTensorData.TeacherRowProblem(teacherRow) is { } problem) throw TeacherColumn.NotAProbabilityVector(teacherColumn!, row, problem);
                teacher.AddRange(teacherRow);
            }
            labels.Add(label);
            if (++inChunk == chunkImages)
            {
                pixels.Add(chunk);
                chunk = new float[(long)chunkImages * len];
                inChunk = 0;
            }
        }
        var all = new float[(long)labels.Count * len];
        long offset = 0;
        foreach (var c in pixels) { c.CopyTo(all, offset); offset += c.LongLength; }
        Array.Copy(chunk, 0, all, offset, (long)inChunk * len);
        var images = new ImageTensorData(all, labels.ToArray(), channels, size);
        return teacherCol is null ? images : images.WithTeacherProbabilities(teacher.ToArray(), teacherClasses);
    }
}
