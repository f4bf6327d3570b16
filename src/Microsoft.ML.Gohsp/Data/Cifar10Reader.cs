// Reads the official CIFAR-10 binary format, from the extracted folder of batch files or streamed from
// cifar-10-binary.tar.gz, into a Cifar10Dataset.

using System.Formats.Tar;
using System.IO.Compression;

namespace Microsoft.ML.Gohsp.Data;

public static partial class Cifar10
{
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
        var records = new long[names.Length];
        for (int f = 0; f < names.Length; f++)
        {
            files[f] = Path.Combine(folder, names[f]);
            if (!File.Exists(files[f]))
                throw new FileNotFoundException(
                    $"CIFAR-10 folder '{folder}' is missing '{names[f]}' ({ExpectedLayout}).", files[f]);
            long length = new FileInfo(files[f]).Length;
            CheckRecordSize(files[f], length);
            records[f] = length / RecordBytes;
        }

        var split = new SplitLayout(records, maxImages);
        byte[] chunk = new byte[RecordBytes * 1024];
        for (int f = 0; f < files.Length && split.Take[f] > 0; f++)
        {
            using var stream = new FileStream(files[f], FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
            CopyRecords(stream, split.Take[f], chunk, split.Labels, split.Pixels, split.Offset[f], files[f]);
        }
        return new Cifar10Dataset(ReadClassNames(Path.Combine(folder, MetaFileName)), split.Labels, split.Pixels);
    }

    /// <summary>
    /// The arrays of a split and where each of its batch files goes in them: the split is its batches in order, cut after
    /// <c>maxImages</c> images, so batch <c>f</c> contributes <see cref="Take"/>[f] records starting at image
    /// <see cref="Offset"/>[f]. The folder reader streams each file into its place; the archive reader, whose entries come
    /// in any order, copies each decoded batch there.
    /// </summary>
    private sealed class SplitLayout
    {
        public SplitLayout(IReadOnlyList<long> recordsPerBatch, int maxImages)
        {
            Take = new int[recordsPerBatch.Count];
            Offset = new int[recordsPerBatch.Count];
            long total = 0;
            for (int f = 0; f < Take.Length; f++)
            {
                Offset[f] = (int)total;
                Take[f] = (int)Math.Min(recordsPerBatch[f], Math.Max(0, maxImages - total));
                total += Take[f];
            }
            Labels = new byte[total];
            Pixels = new byte[total * ImageBytes];
        }

        /// <summary>Records taken from each batch, in split order.</summary>
        public int[] Take { get; }

        /// <summary>The image index at which each batch's records start.</summary>
        public int[] Offset { get; }

        /// <summary>The split's labels, one per image.</summary>
        public byte[] Labels { get; }

        /// <summary>The split's planar CHW pixels, <see cref="ImageBytes"/> per image.</summary>
        public byte[] Pixels { get; }
    }

    /// <summary>One batch file's records, decoded.</summary>
    private sealed record Batch(byte[] Labels, byte[] Pixels);

    private static Cifar10Dataset ReadArchive(string archive, string[] names, int maxImages)
    {
        var batches = ReadArchiveBatches(archive, names, maxImages, out var classNames, out bool sawAnyBatch);
        for (int f = 0; f < names.Length; f++)
        {
            if (batches[f] is null)
                throw new FileNotFoundException(sawAnyBatch
                    ? $"CIFAR-10 archive '{archive}' has no entry '{BatchesFolderName}/{names[f]}'."
                    : $"Archive '{archive}' contains no CIFAR-10 binary batches (expected {BatchesFolderName}/data_batch_1.bin … test_batch.bin).",
                    archive);
        }

        classNames ??= DefaultClassNames;
        if (batches.Length == 1)
            return new Cifar10Dataset(classNames, batches[0]!.Labels, batches[0]!.Pixels); // already cut to maxImages

        var split = new SplitLayout(batches.Select(b => (long)b!.Labels.Length).ToArray(), maxImages);
        for (int f = 0; f < batches.Length; f++)
        {
            int take = split.Take[f], at = split.Offset[f];
            batches[f]!.Labels.AsSpan(0, take).CopyTo(split.Labels.AsSpan(at));
            batches[f]!.Pixels.AsSpan(0, take * ImageBytes).CopyTo(split.Pixels.AsSpan(at * ImageBytes));
            batches[f] = null; // let the GC reclaim the batch early
        }
        return new Cifar10Dataset(classNames, split.Labels, split.Pixels);
    }

    /// <summary>
    /// Streams the archive once and decodes the wanted batches (each cut to <paramref name="maxImages"/> records) and the class
    /// names. Tar entry order is not guaranteed (the official archive is not sorted), so each batch is decoded into its own
    /// arrays as it streams by; the result is indexed like <paramref name="names"/>, null where an entry was not found.
    /// </summary>
    private static Batch?[] ReadArchiveBatches(string archive, string[] names, int maxImages,
        out IReadOnlyList<string>? classNames, out bool sawAnyBatch)
    {
        var batches = new Batch?[names.Length];
        classNames = null;
        sawAnyBatch = false;
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
                    if (f >= 0)
                        batches[f] = ReadBatchEntry(entry, where, maxImages, chunk);
                }

                if (classNames is not null && batches.All(b => b is not null))
                    break; // everything needed has been read; no need to decompress the rest
            }
        }
        catch (Exception ex) when (ex is InvalidDataException or FormatException or EndOfStreamException)
        {
            if (ex is InvalidDataException && ex.Message.Contains("CIFAR-10", StringComparison.Ordinal))
                throw;
            throw new InvalidDataException($"CIFAR-10 archive '{archive}' is corrupt or not a gzip-compressed tar file: {ex.Message}", ex);
        }
        return batches;
    }

    /// <summary>Decodes the first <paramref name="maxImages"/> records of a batch entry, after checking its declared size.</summary>
    private static Batch ReadBatchEntry(TarEntry entry, string where, int maxImages, byte[] chunk)
    {
        CheckRecordSize(where, entry.Length);
        if (entry.Length > (long)MaxRecordsPerBatch * RecordBytes)
            throw new InvalidDataException(
                $"CIFAR-10 batch '{where}' declares {entry.Length:N0} bytes in its tar header (field size); a CIFAR-10 batch holds at most " +
                $"{MaxRecordsPerBatch:N0} records ({(long)MaxRecordsPerBatch * RecordBytes:N0} bytes).");
        int records = (int)Math.Min(entry.Length / RecordBytes, maxImages);
        var batch = new Batch(new byte[records], new byte[(long)records * ImageBytes]);
        CopyRecords(entry.DataStream!, records, chunk, batch.Labels, batch.Pixels, 0, where);
        return batch;
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

}
