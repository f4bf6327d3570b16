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
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, TemporaryPrefix(full) + Guid.NewGuid().ToString("N")[..8] + ".tmp");
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
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
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
