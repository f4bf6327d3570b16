// Downloads the official cifar-10-binary.tar.gz, written through AtomicFile.

namespace Microsoft.ML.Gohsp.Data;

public static partial class Cifar10
{
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
