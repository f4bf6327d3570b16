// CIFAR-10 for ML.NET: the format's constants and where the files are (a folder of batch files, a parent folder, or
// the archive). The reader is in Cifar10Reader.cs, the IDataView in Cifar10DataView.cs, the download in Cifar10Download.cs.

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
/// Reads CIFAR-10 in the official binary format (<c>cifar-10-binary.tar.gz</c> or its extracted
/// <c>cifar-10-batches-bin</c> folder) and exposes it to ML.NET.
/// </summary>
/// <remarks>
/// Each binary record is 1 label byte followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32×32).
/// </remarks>
public static partial class Cifar10
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
}
