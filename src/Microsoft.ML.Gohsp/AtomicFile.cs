namespace Microsoft.ML.Gohsp;

/// <summary>
/// Writes files so that a reader never sees a half-written file: the content goes to a temporary file in the
/// same folder, which then replaces the target in one rename. If writing fails, the previous file is untouched.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/> atomically with the content produced by <paramref name="write"/>.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(write);
        var (full, tmp) = Temporary(path);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            DeleteQuietly(tmp);
            throw;
        }
    }

    /// <summary>
    /// Writes <paramref name="path"/> atomically with the content produced asynchronously by <paramref name="write"/>
    /// (a download, for example): an exception or a cancellation inside it leaves no file behind and the previous one untouched.
    /// </summary>
    internal static async Task WriteAsync(string path, Func<Stream, CancellationToken, Task> write, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(write);
        var (full, tmp) = Temporary(path);
        try
        {
            await using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16, useAsync: true))
            {
                await write(fs, ct).ConfigureAwait(false);
                await fs.FlushAsync(ct).ConfigureAwait(false);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            DeleteQuietly(tmp);
            throw;
        }
    }

    /// <summary>
    /// Puts a completely written file (in the same folder or on the same volume) under its final name in one rename, replacing
    /// what was there: the last step of a write that could not go through <see cref="Write"/>, such as a resumable download.
    /// </summary>
    internal static void MoveIntoPlace(string completeFile, string path)
    {
        ArgumentNullException.ThrowIfNull(completeFile);
        var (full, _) = Temporary(path);
        File.Move(completeFile, full, overwrite: true);
    }

    /// <summary>The full target path and a fresh temporary file name beside it (the folder is created).</summary>
    private static (string Full, string Temporary) Temporary(string path)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(dir);
        return (full, Path.Combine(dir, TemporaryPrefix(full) + Guid.NewGuid().ToString("N")[..8] + ".tmp"));
    }

    private static void DeleteQuietly(string file)
    {
        try { File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// Deletes the temporary files that an interrupted <see cref="Write"/> of <paramref name="path"/> left behind (a process
    /// killed between creating the temporary file and renaming it). Call it when no other process writes the same file.
    /// </summary>
    /// <returns>The deleted files.</returns>
    public static IReadOnlyList<string> DeleteStaleTemporaries(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full) ?? ".";
        if (!Directory.Exists(dir)) return [];
        var deleted = new List<string>();
        foreach (var f in Directory.EnumerateFiles(dir, TemporaryPrefix(full) + "*.tmp"))
        {
            try { File.Delete(f); deleted.Add(f); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return deleted;
    }

    private static string TemporaryPrefix(string fullPath) => "." + Path.GetFileName(fullPath) + ".";
}
