// CIFAR-10 reader for ML.NET: reads the official binary format (folder or cifar-10-binary.tar.gz)
// into raw bytes and exposes them as an IDataView.

using System.Formats.Tar;
using System.IO.Compression;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Gohsp.Data;

/// <summary>Which part of CIFAR-10 to read.</summary>
public enum Cifar10Split
{
    /// <summary>The training set: <c>data_batch_1.bin</c> … <c>data_batch_5.bin</c>, concatenated in that order.</summary>
    Train,

    /// <summary>The test set: <c>test_batch.bin</c>.</summary>
    Test,
}

/// <summary>Columns (besides <c>Label</c>) produced by <see cref="Cifar10.ToDataView"/>.</summary>
[Flags]
public enum Cifar10Columns
{
    /// <summary>
    /// An <c>Image</c> column of type <see cref="ImageDataViewType"/> (32×32) holding <see cref="MLImage"/> values
    /// in <see cref="MLPixelFormat.Bgra32"/> format with alpha 255.
    /// </summary>
    Image = 1,

    /// <summary>
    /// A <c>Pixels</c> column: a fixed-size vector of 3072 <see cref="float"/> values, planar CHW
    /// (1024 red, 1024 green, 1024 blue, each row-major), unscaled (0..255). This is the layout produced by
    /// <c>ExtractPixels(interleavePixelColors: false)</c> with default arguments.
    /// </summary>
    Pixels = 2,
}

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

/// <summary>
/// Reads CIFAR-10 in the official binary format (<c>cifar-10-binary.tar.gz</c> or its extracted
/// <c>cifar-10-batches-bin</c> folder) and exposes it to ML.NET.
/// </summary>
/// <remarks>
/// Each binary record is 1 label byte followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32×32).
/// </remarks>
public static class Cifar10
{
    /// <summary>Image width and height in pixels (32).</summary>
    public const int ImageSize = 32;

    /// <summary>Number of color channels (3: red, green, blue).</summary>
    public const int Channels = 3;

    /// <summary>Bytes of pixel data per image (3 × 32 × 32 = 3072).</summary>
    public const int ImageBytes = Channels * ImageSize * ImageSize;

    /// <summary>Bytes per record in a batch file: 1 label byte + 3072 pixel bytes (3073).</summary>
    public const int RecordBytes = ImageBytes + 1;

    /// <summary>Number of classes (10).</summary>
    public const int ClassCount = 10;

    /// <summary>Name of the folder inside the official archive that holds the batch files.</summary>
    public const string BatchesFolderName = "cifar-10-batches-bin";

    /// <summary>File name of the official binary archive.</summary>
    public const string ArchiveFileName = "cifar-10-binary.tar.gz";

    /// <summary>The official download address of <see cref="ArchiveFileName"/>.</summary>
    public static readonly Uri DownloadUri = new("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz");

    /// <summary>The standard CIFAR-10 class names, in label order.</summary>
    public static IReadOnlyList<string> DefaultClassNames { get; } = Array.AsReadOnly(new[]
    {
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    });

    private const string MetaFileName = "batches.meta.txt";
    private const string TestFileName = "test_batch.bin";
    private static readonly string[] TrainFileNames =
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

    private const string ExpectedLayout =
        "expected data_batch_1.bin … data_batch_5.bin / test_batch.bin, a parent folder with cifar-10-batches-bin/, or cifar-10-binary.tar.gz";

    private static string[] FileNamesFor(Cifar10Split split) => split switch
    {
        Cifar10Split.Train => TrainFileNames,
        Cifar10Split.Test => [TestFileName],
        _ => throw new ArgumentOutOfRangeException(nameof(split), split, "Unknown CIFAR-10 split."),
    };

    // ------------------------------------------------------------------ path resolution / validation

    /// <summary>
    /// Resolves and checks a CIFAR-10 location without reading the images.
    /// </summary>
    /// <param name="path">
    /// The folder containing the <c>.bin</c> batch files, a parent folder containing <c>cifar-10-batches-bin/</c>
    /// (or <c>cifar-10-binary.tar.gz</c>), or the path of the <c>cifar-10-binary.tar.gz</c> archive itself.
    /// </param>
    /// <param name="split">When given, also checks that all batch files of that split are present.</param>
    /// <returns>The folder that holds the batch files, or the path of the archive.</returns>
    /// <remarks>
    /// For a folder, every batch file present must have a size that is a positive multiple of 3073 bytes.
    /// For an archive only its existence is checked here; its content is validated by <see cref="Read"/>.
    /// </remarks>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="DirectoryNotFoundException"><paramref name="path"/> does not exist.</exception>
    /// <exception cref="FileNotFoundException">The archive does not exist, or the folder holds no CIFAR-10 batches or lacks a batch file of <paramref name="split"/>.</exception>
    /// <exception cref="InvalidDataException">A batch file is empty or its size is not a multiple of 3073 bytes.</exception>
    public static string ValidateFolder(string path, Cifar10Split? split = null)
    {
        var source = Resolve(path);
        if (source.IsArchive)
            return source.Path;

        IEnumerable<string> names = split is { } s ? FileNamesFor(s) : TrainFileNames.Append(TestFileName);
        foreach (var name in names)
        {
            var file = Path.Combine(source.Path, name);
            if (!File.Exists(file))
            {
                if (split is null)
                    continue;
                throw new FileNotFoundException(
                    $"CIFAR-10 folder '{source.Path}' is missing '{name}' needed for the {split} split ({ExpectedLayout}).", file);
            }
            CheckRecordSize(file, new FileInfo(file).Length);
        }
        return source.Path;
    }

    private readonly record struct Source(string Path, bool IsArchive);

    private static bool LooksLikeArchive(string path) =>
        path.EndsWith(".tar.gz", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".tgz", StringComparison.OrdinalIgnoreCase);

    private static bool HasBatchFiles(string folder) =>
        TrainFileNames.Append(TestFileName).Any(n => File.Exists(Path.Combine(folder, n)));

    private static Source Resolve(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);

        if (File.Exists(full))
        {
            if (!LooksLikeArchive(full))
                throw new InvalidDataException(
                    $"CIFAR-10 path '{full}' is a file but not a .tar.gz archive ({ExpectedLayout}).");
            return new Source(full, true);
        }

        if (!Directory.Exists(full))
        {
            if (LooksLikeArchive(full))
                throw new FileNotFoundException($"CIFAR-10 archive '{full}' does not exist.", full);
            throw new DirectoryNotFoundException($"CIFAR-10 path '{full}' does not exist ({ExpectedLayout}).");
        }

        if (HasBatchFiles(full))
            return new Source(full, false);

        string nested = Path.Combine(full, BatchesFolderName);
        if (Directory.Exists(nested) && HasBatchFiles(nested))
            return new Source(nested, false);

        string archive = Path.Combine(full, ArchiveFileName);
        if (File.Exists(archive))
            return new Source(archive, true);

        throw new FileNotFoundException(
            $"Folder '{full}' contains no CIFAR-10 binary batches (expected data_batch_1.bin … test_batch.bin, a {BatchesFolderName}/ subfolder, or {ArchiveFileName}).");
    }

    private static void CheckRecordSize(string file, long length)
    {
        if (length == 0 || length % RecordBytes != 0)
            throw new InvalidDataException(
                $"CIFAR-10 batch '{file}' has {length} bytes: record size not a multiple of {RecordBytes} (1 label byte + {ImageBytes} pixel bytes); the file is truncated or not a CIFAR-10 batch.");
    }

    // ------------------------------------------------------------------ reading

    /// <summary>
    /// Reads a CIFAR-10 split into memory.
    /// </summary>
    /// <param name="path">
    /// One of: (a) the extracted folder containing the <c>.bin</c> batch files (e.g. <c>…/cifar-10-batches-bin</c>);
    /// (b) a parent folder containing <c>cifar-10-batches-bin/</c> (or, failing that, <c>cifar-10-binary.tar.gz</c>);
    /// (c) the official <c>cifar-10-binary.tar.gz</c> archive, which is read by streaming without extracting to disk.
    /// </param>
    /// <param name="split"><see cref="Cifar10Split.Train"/> (data_batch_1..5 in order) or <see cref="Cifar10Split.Test"/> (test_batch).</param>
    /// <param name="maxImages">When given, reads at most this many images (the first ones, in file order).</param>
    /// <returns>The images and labels as raw bytes. Class names come from <c>batches.meta.txt</c> when present, else <see cref="DefaultClassNames"/>.</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is null or empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxImages"/> is negative.</exception>
    /// <exception cref="DirectoryNotFoundException"><paramref name="path"/> does not exist.</exception>
    /// <exception cref="FileNotFoundException">No CIFAR-10 batches were found, or a batch file of the split is missing.</exception>
    /// <exception cref="InvalidDataException">A batch is truncated (size not a multiple of 3073), has a label byte &gt; 9, or the archive is corrupt.</exception>
    public static Cifar10Dataset Read(string path, Cifar10Split split, int? maxImages = null)
    {
        if (maxImages is { } m)
            ArgumentOutOfRangeException.ThrowIfNegative(m, nameof(maxImages));
        string[] names = FileNamesFor(split);
        var source = Resolve(path);
        return source.IsArchive
            ? ReadArchive(source.Path, names, maxImages ?? int.MaxValue)
            : ReadFolder(source.Path, names, maxImages ?? int.MaxValue);
    }

    private static Cifar10Dataset ReadFolder(string folder, string[] names, int maxImages)
    {
        // Sizes first: validates every file and allows a single allocation of the final arrays.
        var files = new string[names.Length];
        var take = new int[names.Length];
        long total = 0;
        for (int f = 0; f < names.Length; f++)
        {
            files[f] = Path.Combine(folder, names[f]);
            if (!File.Exists(files[f]))
                throw new FileNotFoundException(
                    $"CIFAR-10 folder '{folder}' is missing '{names[f]}' ({ExpectedLayout}).", files[f]);
            long length = new FileInfo(files[f]).Length;
            CheckRecordSize(files[f], length);
            long records = length / RecordBytes;
            take[f] = (int)Math.Min(records, Math.Max(0, maxImages - total));
            total += take[f];
        }

        var labels = new byte[total];
        var pixels = new byte[total * ImageBytes];
        byte[] chunk = new byte[RecordBytes * 1024];
        int index = 0;
        for (int f = 0; f < files.Length && take[f] > 0; f++)
        {
            using var stream = new FileStream(files[f], FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
            index = CopyRecords(stream, take[f], chunk, labels, pixels, index, files[f]);
        }

        return new Cifar10Dataset(ReadClassNames(Path.Combine(folder, MetaFileName)), labels, pixels);
    }

    private static Cifar10Dataset ReadArchive(string archive, string[] names, int maxImages)
    {
        // Tar entry order is not guaranteed (the official archive is not sorted), so each wanted batch is
        // decoded into its own arrays as it streams by and the split is assembled in order at the end.
        var labelParts = new byte[names.Length][];
        var pixelParts = new byte[names.Length][];
        IReadOnlyList<string>? classNames = null;
        bool sawAnyBatch = false;
        byte[] chunk = new byte[RecordBytes * 1024];

        try
        {
            using var file = new FileStream(archive, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.SequentialScan);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            using var tar = new TarReader(gzip);
            TarEntry? entry;
            while ((entry = tar.GetNextEntry()) is not null)
            {
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile) || entry.DataStream is null)
                    continue;
                string name = Path.GetFileName(entry.Name.Replace('\\', '/').TrimEnd('/'));
                string where = $"{archive}!{entry.Name}";

                if (name == MetaFileName)
                {
                    classNames = ParseClassNames(ReadMeta(entry.DataStream, where), where);
                }
                else
                {
                    if (name.StartsWith("data_batch_", StringComparison.Ordinal) || name == TestFileName)
                        sawAnyBatch = true;
                    int f = Array.IndexOf(names, name);
                    if (f < 0)
                        continue;
                    CheckRecordSize(where, entry.Length);
                    if (entry.Length > (long)MaxRecordsPerBatch * RecordBytes)
                        throw new InvalidDataException(
                            $"CIFAR-10 batch '{where}' declares {entry.Length:N0} bytes in its tar header (field size); a CIFAR-10 batch holds at most " +
                            $"{MaxRecordsPerBatch:N0} records ({(long)MaxRecordsPerBatch * RecordBytes:N0} bytes).");
                    int records = (int)Math.Min(entry.Length / RecordBytes, maxImages);
                    labelParts[f] = new byte[records];
                    pixelParts[f] = new byte[(long)records * ImageBytes];
                    CopyRecords(entry.DataStream, records, chunk, labelParts[f], pixelParts[f], 0, where);
                }

                if (classNames is not null && labelParts.All(p => p is not null))
                    break; // everything needed has been read; no need to decompress the rest
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or EndOfStreamException)
        {
            if (ex is InvalidDataException && ex.Message.Contains("CIFAR-10", StringComparison.Ordinal))
                throw;
            throw new InvalidDataException($"CIFAR-10 archive '{archive}' is corrupt or not a gzip-compressed tar file: {ex.Message}", ex);
        }

        for (int f = 0; f < names.Length; f++)
        {
            if (labelParts[f] is null)
                throw new FileNotFoundException(sawAnyBatch
                    ? $"CIFAR-10 archive '{archive}' has no entry '{BatchesFolderName}/{names[f]}'."
                    : $"Archive '{archive}' contains no CIFAR-10 binary batches (expected {BatchesFolderName}/data_batch_1.bin … test_batch.bin).",
                    archive);
        }

        classNames ??= DefaultClassNames;
        if (names.Length == 1)
            return new Cifar10Dataset(classNames, labelParts[0], pixelParts[0]).Take(maxImages);

        // Concatenate in split order, honoring maxImages across batches.
        long total = 0;
        var take = new int[names.Length];
        for (int f = 0; f < names.Length; f++)
        {
            take[f] = (int)Math.Min(labelParts[f].Length, Math.Max(0, maxImages - total));
            total += take[f];
        }
        var labels = new byte[total];
        var pixels = new byte[total * ImageBytes];
        long at = 0;
        for (int f = 0; f < names.Length; f++)
        {
            labelParts[f].AsSpan(0, take[f]).CopyTo(labels.AsSpan((int)at));
            pixelParts[f].AsSpan(0, take[f] * ImageBytes).CopyTo(pixels.AsSpan((int)(at * ImageBytes)));
            at += take[f];
            labelParts[f] = pixelParts[f] = null!; // let the GC reclaim parts early
        }
        return new Cifar10Dataset(classNames, labels, pixels);
    }

    /// <summary>Reads <paramref name="records"/> records from <paramref name="stream"/>, splitting labels and pixels.</summary>
    /// <returns>The index after the last image written.</returns>
    private static int CopyRecords(Stream stream, int records, byte[] chunk, byte[] labels, byte[] pixels, int index, string source)
    {
        int perChunk = chunk.Length / RecordBytes;
        int first = 0;
        while (first < records)
        {
            int n = Math.Min(perChunk, records - first);
            try
            {
                stream.ReadExactly(chunk, 0, n * RecordBytes);
            }
            catch (EndOfStreamException ex)
            {
                throw new InvalidDataException(
                    $"CIFAR-10 batch '{source}' ended early while reading record {first}: record size not a multiple of {RecordBytes} or truncated data.", ex);
            }

            for (int r = 0; r < n; r++)
            {
                int offset = r * RecordBytes;
                byte label = chunk[offset];
                if (label >= ClassCount)
                    throw new InvalidDataException(
                        $"CIFAR-10 batch '{source}' record {first + r} (byte offset {(long)(first + r) * RecordBytes}) has label byte {label}; expected 0..{ClassCount - 1}.");
                labels[index] = label;
                Buffer.BlockCopy(chunk, offset + 1, pixels, index * ImageBytes, ImageBytes);
                index++;
            }
            first += n;
        }
        return index;
    }

    private static IReadOnlyList<string> ReadClassNames(string metaFile)
    {
        if (!File.Exists(metaFile)) return DefaultClassNames;
        using var fs = File.OpenRead(metaFile);
        return ParseClassNames(ReadMeta(fs, metaFile), metaFile);
    }

    /// <summary>Most records in one CIFAR-10 batch file (each of the six official batches has 10,000).</summary>
    private const int MaxRecordsPerBatch = 10_000;

    /// <summary>Largest <c>batches.meta.txt</c> accepted (the official one has 61 bytes: ten class names).</summary>
    private const int MaxMetaBytes = 64 << 10;

    /// <summary>Reads a class-name file, refusing more than <see cref="MaxMetaBytes"/> bytes.</summary>
    private static string ReadMeta(Stream stream, string source)
    {
        var buffer = new byte[MaxMetaBytes + 1];
        int n = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        if (n > MaxMetaBytes)
            throw new InvalidDataException($"CIFAR-10 class-name file '{source}' is larger than {MaxMetaBytes:N0} bytes; expected {ClassCount} class names, one per line.");
        return System.Text.Encoding.UTF8.GetString(buffer, 0, n);
    }

    private static IReadOnlyList<string> ParseClassNames(string text, string source)
    {
        var names = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length < ClassCount)
            throw new InvalidDataException(
                $"CIFAR-10 class-name file '{source}' has {names.Length} non-empty lines; expected {ClassCount} class names, one per line.");
        return Array.AsReadOnly(names[..ClassCount]);
    }

    // ------------------------------------------------------------------ IDataView

    /// <summary>
    /// Exposes a CIFAR-10 data set as a lazily-materialized <see cref="IDataView"/>.
    /// </summary>
    /// <param name="mlContext">The ML.NET context (used for argument checking and symmetry with other loaders).</param>
    /// <param name="data">The data set, e.g. from <see cref="Read"/>.</param>
    /// <param name="columns">Which image columns to produce in addition to <c>Label</c>.</param>
    /// <returns>
    /// A view with columns, in this order: <c>Label</c> (<see cref="TextDataViewType"/>, the class name; use
    /// <c>MapValueToKey("Label")</c> to train); <c>Image</c> (<see cref="ImageDataViewType"/> 32×32, a new
    /// <see cref="MLImage"/> in <see cref="MLPixelFormat.Bgra32"/> with alpha 255) when <see cref="Cifar10Columns.Image"/>
    /// is set; <c>Pixels</c> (vector of 3072 <see cref="float"/>, planar CHW, 0..255) when <see cref="Cifar10Columns.Pixels"/>
    /// is set. Values are produced on demand from <see cref="Cifar10Dataset.Pixels"/>; row count is known and
    /// cursors support shuffling.
    /// </returns>
    /// <remarks>
    /// Each call of the <c>Image</c> getter for a new row creates a new <see cref="MLImage"/> that the view does not
    /// dispose (downstream consumers may keep it); images that are no longer referenced are released by the GC.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="mlContext"/> or <paramref name="data"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="columns"/> has no known flag or unknown flags.</exception>
    public static IDataView ToDataView(MLContext mlContext, Cifar10Dataset data, Cifar10Columns columns = Cifar10Columns.Image)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentNullException.ThrowIfNull(data);
        const Cifar10Columns all = Cifar10Columns.Image | Cifar10Columns.Pixels;
        if (columns == 0 || (columns & ~all) != 0)
            throw new ArgumentOutOfRangeException(nameof(columns), columns, "Expected Image, Pixels, or Image | Pixels.");
        return new Cifar10DataView(data, columns);
    }

    /// <summary>Custom <see cref="IDataView"/> over the raw CIFAR-10 bytes.</summary>
    private sealed class Cifar10DataView : IDataView
    {
        private readonly Cifar10Dataset _data;
        private readonly ReadOnlyMemory<char>[] _classNames;

        internal readonly int LabelCol, ImageCol = -1, PixelsCol = -1;

        public Cifar10DataView(Cifar10Dataset data, Cifar10Columns columns)
        {
            _data = data;
            _classNames = data.ClassNames.Select(n => n.AsMemory()).ToArray();
            var builder = new DataViewSchema.Builder();
            builder.AddColumn("Label", TextDataViewType.Instance);
            int next = 1;
            LabelCol = 0;
            if (columns.HasFlag(Cifar10Columns.Image))
            {
                builder.AddColumn("Image", new ImageDataViewType(ImageSize, ImageSize));
                ImageCol = next++;
            }
            if (columns.HasFlag(Cifar10Columns.Pixels))
            {
                builder.AddColumn("Pixels", new VectorDataViewType(NumberDataViewType.Single, ImageBytes));
                PixelsCol = next++;
            }
            Schema = builder.ToSchema();
        }

        public bool CanShuffle => true;

        public DataViewSchema Schema { get; }

        public long? GetRowCount() => _data.Count;

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            var active = new bool[Schema.Count];
            foreach (var c in columnsNeeded)
                active[c.Index] = true;
            int[]? order = null;
            if (rand is not null)
            {
                order = new int[_data.Count];
                for (int i = 0; i < order.Length; i++)
                    order[i] = i;
                for (int i = order.Length - 1; i > 0; i--)
                {
                    int j = rand.Next(i + 1);
                    (order[i], order[j]) = (order[j], order[i]);
                }
            }
            return new Cursor(this, active, order);
        }

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
            [GetRowCursor(columnsNeeded, rand)];

        private sealed class Cursor : DataViewRowCursor
        {
            private readonly Cifar10DataView _parent;
            private readonly bool[] _active;
            private readonly int[]? _order;
            private long _position = -1;
            private int _row = -1;
            private bool _disposed;

            // Per-cursor image cache so repeated Image getter calls on the same row return the same instance.
            private MLImage? _image;
            private long _imagePosition = -1;
            private readonly byte[] _bgra = new byte[ImageSize * ImageSize * 4];

            public Cursor(Cifar10DataView parent, bool[] active, int[]? order)
            {
                _parent = parent;
                _active = active;
                _order = order;
            }

            public override DataViewSchema Schema => _parent.Schema;
            public override long Position => _position;
            public override long Batch => 0;

            public override bool MoveNext()
            {
                if (_disposed)
                    return false;
                if (_position + 1 < _parent._data.Count)
                {
                    _position++;
                    _row = _order is null ? (int)_position : _order[_position];
                    return true;
                }
                _position = -1;
                _row = -1;
                _disposed = true;
                return false;
            }

            public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) =>
            {
                EnsureRow();
                value = new DataViewRowId((ulong)_row, 0);
            };

            public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
            {
                if (column.Index < 0 || column.Index >= _active.Length || !_active[column.Index])
                    throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");

                Delegate getter;
                if (column.Index == _parent.LabelCol)
                    getter = (ValueGetter<ReadOnlyMemory<char>>)GetLabel;
                else if (column.Index == _parent.ImageCol)
                    getter = (ValueGetter<MLImage>)GetImage;
                else if (column.Index == _parent.PixelsCol)
                    getter = (ValueGetter<VBuffer<float>>)GetPixels;
                else
                    throw new ArgumentOutOfRangeException(nameof(column), column.Name, "Unknown column.");

                return getter as ValueGetter<TValue>
                    ?? throw new InvalidOperationException(
                        $"Invalid TValue '{typeof(TValue)}' for column '{column.Name}' of type {column.Type}.");
            }

            private void EnsureRow()
            {
                if (_row < 0)
                    throw new InvalidOperationException("The cursor is not positioned on a row; call MoveNext first.");
            }

            private void GetLabel(ref ReadOnlyMemory<char> value)
            {
                EnsureRow();
                value = _parent._classNames[_parent._data.Labels[_row]];
            }

            private void GetImage(ref MLImage value)
            {
                EnsureRow();
                if (_imagePosition != _position || _image is null)
                {
                    ReadOnlySpan<byte> planar = _parent._data.GetImage(_row);
                    _image = CreateImage(planar, _bgra);
                    _imagePosition = _position;
                }
                value = _image;
            }

            private void GetPixels(ref VBuffer<float> value)
            {
                EnsureRow();
                ReadOnlySpan<byte> src = _parent._data.GetImage(_row);
                var editor = VBufferEditor.Create(ref value, ImageBytes);
                System.Numerics.Tensors.TensorPrimitives.ConvertTruncating<byte, float>(src, editor.Values); // exact: 0..255
                value = editor.Commit();
            }

            protected override void Dispose(bool disposing)
            {
                if (_disposed)
                    return;
                _disposed = true;
                _position = -1;
                _row = -1;
                base.Dispose(disposing);
            }
        }
    }

    /// <summary>
    /// Creates a 32×32 <see cref="MLImage"/> (<see cref="MLPixelFormat.Bgra32"/>, alpha 255) from 3072 planar RGB bytes.
    /// </summary>
    /// <param name="planarRgb">1024 red, 1024 green, 1024 blue bytes, each plane row-major 32×32 (e.g. <see cref="Cifar10Dataset.GetImage"/>).</param>
    /// <returns>A new image owned by the caller (dispose it when done).</returns>
    /// <exception cref="ArgumentException"><paramref name="planarRgb"/> is not 3072 bytes long.</exception>
    public static MLImage CreateImage(ReadOnlySpan<byte> planarRgb) =>
        CreateImage(planarRgb, new byte[ImageSize * ImageSize * 4]);

    private static MLImage CreateImage(ReadOnlySpan<byte> planarRgb, byte[] bgra)
    {
        if (planarRgb.Length != ImageBytes)
            throw new ArgumentException($"Expected {ImageBytes} planar RGB bytes, got {planarRgb.Length}.", nameof(planarRgb));
        const int plane = ImageSize * ImageSize;
        ReadOnlySpan<byte> r = planarRgb[..plane], g = planarRgb.Slice(plane, plane), b = planarRgb.Slice(2 * plane, plane);
        for (int p = 0, o = 0; p < plane; p++, o += 4)
        {
            bgra[o] = b[p];
            bgra[o + 1] = g[p];
            bgra[o + 2] = r[p];
            bgra[o + 3] = 255;
        }
        return MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, bgra);
    }

    // ------------------------------------------------------------------ download

    private static readonly Lazy<HttpClient> SharedClient = new(() => new HttpClient { Timeout = TimeSpan.FromMinutes(30) });

    /// <summary>
    /// Downloads the official <c>cifar-10-binary.tar.gz</c> (about 163 MB) from
    /// <c>https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz</c> into <paramref name="targetFolder"/>.
    /// </summary>
    /// <param name="targetFolder">The folder to store the archive in; created if missing.</param>
    /// <param name="progress">Optional progress callback receiving bytes read so far and the total size when known.</param>
    /// <param name="ct">Cancels the download; the partial file is deleted.</param>
    /// <returns>The full path of the archive, which can be passed to <see cref="Read"/>.</returns>
    /// <remarks>
    /// The data is written through <see cref="AtomicFile"/>: to a temporary file in <paramref name="targetFolder"/>, moved
    /// into place only after it has been completely received (and its size checked), so a half-written archive never
    /// appears under the final name.
    /// If the archive already exists and is not empty it is returned without downloading again.
    /// </remarks>
    /// <exception cref="HttpRequestException">The server could not be reached or returned an error status.</exception>
    /// <exception cref="InvalidDataException">The download was empty or shorter than the announced length.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> was canceled.</exception>
    public static Task<string> DownloadAsync(
        string targetFolder,
        IProgress<(long bytesRead, long? totalBytes)>? progress = null,
        CancellationToken ct = default) =>
        DownloadAsync(SharedClient.Value, DownloadUri, targetFolder, progress, ct);

    internal static async Task<string> DownloadAsync(
        HttpClient client,
        Uri uri,
        string targetFolder,
        IProgress<(long bytesRead, long? totalBytes)>? progress,
        CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentException.ThrowIfNullOrEmpty(targetFolder);
        string folder = Path.GetFullPath(targetFolder);
        Directory.CreateDirectory(folder);
        string destination = Path.Combine(folder, ArchiveFileName);
        if (File.Exists(destination) && new FileInfo(destination).Length > 0)
            return destination;

        await AtomicFile.WriteAsync(destination, async (output, token) =>
        {
            using var response = await client.GetAsync(uri, HttpCompletionOption.ResponseHeadersRead, token).ConfigureAwait(false);
            response.EnsureSuccessStatusCode();
            long? total = response.Content.Headers.ContentLength;
            long read = 0;
            await using var input = await response.Content.ReadAsStreamAsync(token).ConfigureAwait(false);
            byte[] buffer = new byte[1 << 16];
            progress?.Report((0, total));
            int n;
            while ((n = await input.ReadAsync(buffer, token).ConfigureAwait(false)) > 0)
            {
                await output.WriteAsync(buffer.AsMemory(0, n), token).ConfigureAwait(false);
                read += n;
                progress?.Report((read, total));
            }

            if (read <= 0)
                throw new InvalidDataException($"Download of '{uri}' returned no data.");
            if (total is { } expected && read != expected)
                throw new InvalidDataException($"Download of '{uri}' was incomplete: received {read} of {expected} bytes.");
        }, ct).ConfigureAwait(false);
        return destination;
    }
}
