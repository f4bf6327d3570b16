using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>
/// Where and how <see cref="HuggingFaceHub"/> downloads. <see cref="FromEnvironment"/> reads the Hugging Face environment
/// variables (the one place that does); everything can also be set explicitly.
/// </summary>
public sealed class HubOptions
{
    /// <summary>The default endpoint, https://huggingface.co.</summary>
    public static Uri DefaultEndpoint { get; } = new("https://huggingface.co");

    /// <summary>The hub (or a mirror of it): files are fetched from <c>{Endpoint}/{repo}/resolve/{revision}/{file}</c>. <c>HF_ENDPOINT</c>.</summary>
    public Uri Endpoint { get; set; } = DefaultEndpoint;

    /// <summary>
    /// The cache, in the hub's own layout (shared with Python's <c>huggingface_hub</c>): <c>HF_HUB_CACHE</c>, else
    /// <c>HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>.
    /// </summary>
    public string CacheDirectory { get; set; } = DefaultCacheDirectory(null, null, null);

    /// <summary>Use the cache only and never touch the network (<c>HF_HUB_OFFLINE=1</c>).</summary>
    public bool Offline { get; set; }

    /// <summary>An access token for gated or private repositories (<c>HF_TOKEN</c>); sent to the endpoint's host only.</summary>
    public string? Token { get; set; }

    /// <summary>
    /// The HTTP client. Null: a shared client that does not follow redirects by itself (the downloader reads the hub's headers
    /// on the first response and follows the redirect) and uses .NET's default proxy, which honours <c>HTTPS_PROXY</c>,
    /// <c>HTTP_PROXY</c>, <c>ALL_PROXY</c> and <c>NO_PROXY</c>. A client given here should not follow redirects either.
    /// </summary>
    public HttpClient? HttpClient { get; set; }

    /// <summary>Receives bytes received so far and the file's size, during each download.</summary>
    public IProgress<(long BytesRead, long? TotalBytes)>? Progress { get; set; }

    /// <summary>
    /// Options from the environment: <c>HF_ENDPOINT</c>, <c>HF_HUB_CACHE</c> / <c>HF_HOME</c> (and the older
    /// <c>HUGGINGFACE_HUB_CACHE</c>, <c>XDG_CACHE_HOME</c>), <c>HF_HUB_OFFLINE</c> (1/true/yes/on) and <c>HF_TOKEN</c>.
    /// </summary>
    public static HubOptions FromEnvironment()
    {
        static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        var options = new HubOptions
        {
            CacheDirectory = DefaultCacheDirectory(Env("HF_HUB_CACHE") ?? Env("HUGGINGFACE_HUB_CACHE"), Env("HF_HOME"), Env("XDG_CACHE_HOME")),
            Offline = Env("HF_HUB_OFFLINE")?.Trim().ToLowerInvariant() is "1" or "true" or "yes" or "on",
            Token = Env("HF_TOKEN"),
        };
        if (Env("HF_ENDPOINT") is string endpoint)
        {
            if (!Uri.TryCreate(endpoint.TrimEnd('/'), UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
                throw new ArgumentException($"HF_ENDPOINT '{endpoint}' is not an http(s) URL.", nameof(Endpoint));
            options.Endpoint = uri;
        }
        return options;
    }

    private static string DefaultCacheDirectory(string? hubCache, string? hfHome, string? xdgCache)
    {
        if (hubCache is not null) return hubCache;
        if (hfHome is not null) return Path.Combine(hfHome, "hub");
        string cache = xdgCache ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cache, "huggingface", "hub");
    }
}

/// <summary>A model on the Hugging Face hub: a repository id (<c>org/name</c>) and a revision (branch, tag or commit).</summary>
/// <param name="Repository">The repository id, e.g. <c>timm/deit_small_patch16_224.fb_in1k</c> or <c>facebook/deit-small-patch16-224</c>.</param>
/// <param name="Revision">Branch, tag or commit hash; <c>main</c> by default.</param>
public sealed partial record HubModelName(string Repository, string Revision)
{
    /// <summary>The prefix that marks a hub name where a local path is also accepted.</summary>
    public const string Prefix = "hf:";

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")]
    private static partial Regex RepositoryPattern();

    [GeneratedRegex(@"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")]
    private static partial Regex RevisionPattern();

    /// <summary>True when <paramref name="pathOrName"/> starts with <c>hf:</c> (a hub name rather than a file path).</summary>
    public static bool IsHubName(string? pathOrName) => pathOrName?.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase) == true;

    /// <summary>
    /// Parses <c>[hf:]org/name[@revision]</c>. Throws <see cref="ArgumentException"/> naming <paramref name="parameterName"/>
    /// for a malformed name.
    /// </summary>
    public static HubModelName Parse(string name, string parameterName = "name")
    {
        ArgumentNullException.ThrowIfNull(name, parameterName);
        string s = name.Trim();
        if (IsHubName(s)) s = s[Prefix.Length..];
        if (s.StartsWith("//", StringComparison.Ordinal)) s = s[2..];
        string revision = "main";
        int at = s.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            revision = s[(at + 1)..];
            s = s[..at];
        }
        if (!RepositoryPattern().IsMatch(s) || s.Contains("--", StringComparison.Ordinal) || s.Contains("..", StringComparison.Ordinal))
            throw new ArgumentException(
                $"'{name}' is not a Hugging Face model name: expected [hf:]org/name[@revision], e.g. 'timm/deit_small_patch16_224.fb_in1k' " +
                "or 'hf:facebook/deit-small-patch16-224@main' (letters, digits, '.', '_', '-'; no '--' or '..').", parameterName);
        if (!RevisionPattern().IsMatch(revision) || revision.Split('/').Any(p => p is "." or ".."))
            throw new ArgumentException($"'{name}' has an invalid revision '{revision}' (a branch, tag or commit hash).", parameterName);
        return new HubModelName(s, revision);
    }

    /// <inheritdoc />
    public override string ToString() => Revision == "main" ? Repository : $"{Repository}@{Revision}";
}

/// <summary>
/// Downloads files of a Hugging Face hub repository into the hub's cache layout, which Python's <c>huggingface_hub</c>
/// shares: <c>{cache}/models--{org}--{name}/blobs/{etag}</c> holds each file once, named by its hash;
/// <c>snapshots/{commit}/{file}</c> is a relative symbolic link to the blob (a copy where links cannot be made);
/// <c>refs/{revision}</c> holds the commit a branch or tag resolved to. See docs/interop.md.
/// </summary>
/// <remarks>
/// A download asks <c>{endpoint}/{repo}/resolve/{revision}/{file}</c> without following redirects: that first response carries
/// <c>X-Repo-Commit</c>, and <c>X-Linked-Etag</c>/<c>X-Linked-Size</c> (a large file stored with Git LFS: its SHA-256 and size)
/// or <c>ETag</c>/<c>Content-Length</c> (a small file: its git blob SHA-1), and usually a redirect to a CDN, which is then followed.
/// The bytes go to <c>blobs/{etag}.incomplete</c>; a cut download is resumed from there with a <c>Range</c> request. The file
/// is checked against the recorded hash before it is renamed into <c>blobs/</c> (a rename: readers never see a partial
/// file). A missing optional file is remembered under <c>.no_exist/{commit}/</c>, as <c>huggingface_hub</c> does.
/// </remarks>
public static class HuggingFaceHub
{
    private static readonly Lazy<HttpClient> SharedClient = new(() =>
        new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }));

    /// <summary>Weights files tried in order: safetensors first; a PyTorch pickle is read behind the allow-list.</summary>
    internal static readonly string[] WeightFiles = ["model.safetensors", "pytorch_model.bin"];

    /// <summary>Files beside the weights that the importer reads when present.</summary>
    internal static readonly string[] ConfigFiles = ["config.json", "preprocessor_config.json"];

    /// <summary>The cache folder of <paramref name="repository"/>: <c>{cache}/models--{org}--{name}</c>.</summary>
    public static string RepositoryCacheFolder(string cacheDirectory, string repository) =>
        Path.Combine(cacheDirectory, "models--" + repository.Replace("/", "--", StringComparison.Ordinal));

    /// <summary>
    /// Downloads (or finds in the cache) a model's weights — <c>model.safetensors</c>, else <c>pytorch_model.bin</c> — with its
    /// <c>config.json</c> and <c>preprocessor_config.json</c> when the repository has them, and returns the path of the
    /// weights in the cache's snapshot folder (the config files lie beside it, where <see cref="PretrainedViT.Import"/> reads them).
    /// </summary>
    /// <exception cref="FileNotFoundException">The repository has no weights file, does not exist, or is offline and not cached.</exception>
    /// <exception cref="InvalidDataException">A download does not match the hash the hub recorded.</exception>
    /// <exception cref="IOException">A download was cut (run again to resume it).</exception>
    /// <exception cref="HttpRequestException">The hub answered with another error.</exception>
    public static async Task<string> DownloadModelAsync(HubModelName model, HubOptions? options = null, Action<string>? log = null,
        CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= HubOptions.FromEnvironment();
        string? weights = null;
        foreach (var file in WeightFiles)
        {
            weights = await TryDownloadFileAsync(model, file, options, log, ct).ConfigureAwait(false);
            if (weights is not null) break;
        }
        if (weights is null)
            throw new FileNotFoundException(options.Offline
                ? $"Model '{model}' is not in the Hugging Face cache '{RepositoryCacheFolder(options.CacheDirectory, model.Repository)}' and HF_HUB_OFFLINE is set, " +
                  "so it cannot be downloaded. Download it once with network access (or unset HF_HUB_OFFLINE)."
                : $"Model '{model}' has neither {string.Join(" nor ", WeightFiles)} at {options.Endpoint}.");
        foreach (var file in ConfigFiles) await TryDownloadFileAsync(model, file, options, log, ct).ConfigureAwait(false);
        return weights;
    }

    /// <summary>Synchronous <see cref="DownloadModelAsync"/>.</summary>
    public static string DownloadModel(HubModelName model, HubOptions? options = null, Action<string>? log = null) =>
        DownloadModelAsync(model, options, log).GetAwaiter().GetResult();

    /// <summary>
    /// Downloads (or finds in the cache) one file of a repository and returns its path in the snapshot folder.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file or the repository does not exist (HTTP 404), or offline and not cached.</exception>
    /// <exception cref="InvalidDataException">The download does not match the hash the hub recorded.</exception>
    /// <exception cref="IOException">The download was cut (run again to resume it).</exception>
    public static async Task<string> DownloadFileAsync(HubModelName model, string fileName, HubOptions? options = null,
        Action<string>? log = null, CancellationToken ct = default)
    {
        options ??= HubOptions.FromEnvironment();
        return await TryDownloadFileAsync(model, fileName, options, log, ct).ConfigureAwait(false)
            ?? throw new FileNotFoundException(options.Offline
                ? $"'{fileName}' of '{model}' is not in the Hugging Face cache '{RepositoryCacheFolder(options.CacheDirectory, model.Repository)}' and HF_HUB_OFFLINE is set."
                : $"'{fileName}' was not found in '{model}' at {options.Endpoint} (HTTP 404).");
    }

    /// <summary>The file's snapshot path, or null when the hub says it does not exist (or, offline, it is not cached).</summary>
    internal static async Task<string?> TryDownloadFileAsync(HubModelName model, string fileName, HubOptions options, Action<string>? log,
        CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        if (fileName.Contains("..", StringComparison.Ordinal) || Path.IsPathRooted(fileName) || fileName.Contains('\\', StringComparison.Ordinal))
            throw new ArgumentException($"'{fileName}' is not a file name inside a repository.", nameof(fileName));
        string repoDir = RepositoryCacheFolder(options.CacheDirectory, model.Repository);
        if (options.Offline) return Cached(repoDir, model, fileName, log);

        var client = options.HttpClient ?? SharedClient.Value;
        var resolve = new Uri($"{options.Endpoint.AbsoluteUri.TrimEnd('/')}/{model.Repository}/resolve/{Uri.EscapeDataString(model.Revision)}/{fileName}");
        FileMetadata meta;
        try
        {
            meta = await Metadata(client, resolve, options, model, fileName, ct).ConfigureAwait(false);
        }
        catch (HttpRequestException e) when (e.StatusCode is null && Cached(repoDir, model, fileName, null) is string cached)
        {
            // the hub cannot be reached (no status: connection refused, DNS, proxy): the cached copy, as huggingface_hub does
            log?.Invoke($"{options.Endpoint} cannot be reached ({e.Message}); using the cached '{fileName}' of '{model}'.");
            return cached;
        }
        if (meta.NotFound)
        {
            if (meta.Commit is string c) MarkMissing(repoDir, c, fileName);
            return null;
        }
        if (!string.Equals(model.Revision, meta.Commit, StringComparison.Ordinal))
            WriteText(Path.Combine(repoDir, "refs", model.Revision), meta.Commit!);
        string snapshot = Path.Combine(repoDir, "snapshots", meta.Commit!, fileName);
        string blob = Path.Combine(repoDir, "blobs", meta.Etag);
        if (File.Exists(blob) && (meta.Size is not long size || new FileInfo(blob).Length == size))
        {
            if (!File.Exists(snapshot)) Link(snapshot, blob);
            log?.Invoke($"'{fileName}' of '{model}' is cached ({snapshot}).");
            return snapshot;
        }
        await Download(client, meta, blob, options, $"'{fileName}' of '{model}'", log, ct).ConfigureAwait(false);
        Link(snapshot, blob);
        return snapshot;
    }

    /// <summary>The cached snapshot path of a file, or null (offline lookup: refs/{revision} → commit → snapshots/{commit}/{file}).</summary>
    private static string? Cached(string repoDir, HubModelName model, string fileName, Action<string>? log)
    {
        string? commit = null;
        string refFile = Path.Combine(repoDir, "refs", model.Revision);
        if (File.Exists(refFile)) commit = File.ReadAllText(refFile).Trim();
        else if (Directory.Exists(Path.Combine(repoDir, "snapshots", model.Revision))) commit = model.Revision;
        if (commit is null || commit.Length == 0 || commit.Contains("..", StringComparison.Ordinal)) return null;
        string path = Path.Combine(repoDir, "snapshots", commit, fileName);
        if (!File.Exists(path)) return null;
        log?.Invoke($"'{fileName}' of '{model}' from the cache ({path}), offline.");
        return path;
    }

    private sealed record FileMetadata(bool NotFound, string? Commit, string Etag, long? Size, Uri DownloadUri, bool SameHost);

    /// <summary>The hub's headers for a file: the first response to the resolve URL (relative redirects, e.g. a renamed repository, are followed).</summary>
    private static async Task<FileMetadata> Metadata(HttpClient client, Uri resolve, HubOptions options, HubModelName model, string fileName,
        CancellationToken ct)
    {
        var uri = resolve;
        for (int hop = 0; hop < 10; hop++)
        {
            using var request = Request(HttpMethod.Head, uri, options);
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
            string? commit = Header(response, "X-Repo-Commit");
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                string? code = Header(response, "X-Error-Code");
                if (code == "RepositoryNotFound")
                    throw new FileNotFoundException(
                        $"Repository '{model.Repository}' (revision '{model.Revision}') was not found at {options.Endpoint} (HTTP 404 for {uri}). " +
                        "Check the name; a private or gated repository needs HF_TOKEN.");
                if (code == "RevisionNotFound")
                    throw new FileNotFoundException($"Revision '{model.Revision}' of '{model.Repository}' was not found at {options.Endpoint} (HTTP 404 for {uri}).");
                return new FileMetadata(true, commit, "", null, uri, true);
            }
            if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
                throw new HttpRequestException(
                    $"'{fileName}' of '{model}' at {options.Endpoint}: HTTP {(int)response.StatusCode} ({response.ReasonPhrase}). The repository is private or gated: " +
                    "set HF_TOKEN to an access token that may read it.", null, response.StatusCode);
            bool redirect = (int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is not null;
            if (redirect && (commit is null || Etag(response) is null))
            {
                // a redirect without the hub's headers: a relative one (renamed repository) is followed for the metadata
                var next = new Uri(uri, response.Headers.Location!);
                if (response.Headers.Location!.IsAbsoluteUri && next.Host != uri.Host)
                    throw new HttpRequestException($"'{fileName}' of '{model}': {uri} redirected to {next} without X-Repo-Commit/ETag headers.");
                uri = next;
                continue;
            }
            if (!redirect && !response.IsSuccessStatusCode)
                throw new HttpRequestException($"'{fileName}' of '{model}': HTTP {(int)response.StatusCode} ({response.ReasonPhrase}) from {uri}.", null, response.StatusCode);
            string? etag = Etag(response);
            if (commit is null || etag is null)
                throw new HttpRequestException(
                    $"'{fileName}' of '{model}': {uri} answered without the hub's X-Repo-Commit and ETag headers; is {options.Endpoint} a Hugging Face hub endpoint (HF_ENDPOINT)?");
            if (commit.Contains('/', StringComparison.Ordinal) || commit.Contains("..", StringComparison.Ordinal) || etag.Contains('/', StringComparison.Ordinal) || etag.Contains("..", StringComparison.Ordinal))
                throw new HttpRequestException($"'{fileName}' of '{model}': invalid X-Repo-Commit '{commit}' or ETag '{etag}' from {uri}.");
            long? size = long.TryParse(Header(response, "X-Linked-Size"), NumberStyles.None, CultureInfo.InvariantCulture, out long linked) ? linked
                : redirect ? null : response.Content.Headers.ContentLength;
            var download = redirect ? new Uri(uri, response.Headers.Location!) : uri;
            return new FileMetadata(false, commit, etag, size, download, download.Host == options.Endpoint.Host);
        }
        throw new HttpRequestException($"'{fileName}' of '{model}': too many redirects from {resolve}.");
    }

    /// <summary>Downloads into <c>{blob}.incomplete</c> (resuming what is there), checks the hash, renames it to <paramref name="blob"/>.</summary>
    private static async Task Download(HttpClient client, FileMetadata meta, string blob, HubOptions options, string what, Action<string>? log,
        CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        string partial = blob + ".incomplete";
        // FileShare.None: a second process downloading the same file fails here instead of interleaving bytes
        await using (var file = new FileStream(partial, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1 << 16, useAsync: true))
        {
            long have = file.Length;
            if (meta.Size is long total0 && have > total0) { file.SetLength(0); have = 0; }
            var uri = meta.DownloadUri;
            bool sameHost = meta.SameHost;
            for (int hop = 0; ; hop++)
            {
                if (hop >= 10) throw new HttpRequestException($"{what}: too many redirects from {meta.DownloadUri}.");
                using var request = Request(HttpMethod.Get, uri, sameHost ? options : null);
                if (have > 0) request.Headers.Range = new RangeHeaderValue(have, null);
                using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct).ConfigureAwait(false);
                if ((int)response.StatusCode is >= 300 and < 400 && response.Headers.Location is { } location)
                {
                    var next = new Uri(uri, location);
                    sameHost &= next.Host == uri.Host;
                    uri = next;
                    continue;
                }
                if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && meta.Size == have) break; // already complete
                if (response.StatusCode == HttpStatusCode.NotFound)
                    throw new FileNotFoundException($"{what}: HTTP 404 from {uri}.");
                if (!response.IsSuccessStatusCode)
                    throw new HttpRequestException($"{what}: HTTP {(int)response.StatusCode} ({response.ReasonPhrase}) from {uri}.", null, response.StatusCode);
                if (response.StatusCode == HttpStatusCode.PartialContent && response.Content.Headers.ContentRange?.From == have)
                {
                    file.Position = have;
                    log?.Invoke($"Resuming {what} at {have:N0} bytes.");
                }
                else
                {
                    file.SetLength(0); // the server sent the whole file
                    have = 0;
                }
                long? total = meta.Size ?? (response.Content.Headers.ContentLength is long cl ? have + cl : null);
                log?.Invoke($"Downloading {what} from {uri.GetLeftPart(UriPartial.Path)} ({(total is long t ? $"{t:N0} bytes" : "size unknown")}).");
                await Copy(response, file, have, total, options.Progress, what, log, ct).ConfigureAwait(false);
                break;
            }
            await file.FlushAsync(ct).ConfigureAwait(false);
            file.Flush(flushToDisk: true);
            if (meta.Size is long size && file.Length != size)
                throw new IOException($"{what}: received {file.Length:N0} of {size:N0} bytes. The partial file '{partial}' is kept: run again to resume.");
        }
        Verify(partial, meta, what);
        AtomicFile.MoveIntoPlace(partial, blob);
        log?.Invoke($"{what}: done, hash verified ({meta.Etag}).");
    }

    private static async Task Copy(HttpResponseMessage response, FileStream file, long have, long? total, IProgress<(long, long?)>? progress,
        string what, Action<string>? log, CancellationToken ct)
    {
        long read = have;
        int lastTenth = total is long t0 && t0 > 0 ? (int)(10 * read / t0) : 0;
        var buffer = new byte[1 << 16];
        progress?.Report((read, total));
        try
        {
            await using var input = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            int n;
            while ((n = await input.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
            {
                await file.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                read += n;
                progress?.Report((read, total));
                if (total is long t && t > 0 && (int)(10 * read / t) is var tenth && tenth > lastTenth && tenth < 10)
                {
                    lastTenth = tenth;
                    log?.Invoke($"{what}: {read:N0} of {t:N0} bytes ({tenth * 10}%).");
                }
            }
        }
        catch (IOException e)
        {
            await file.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            throw new IOException(
                $"{what}: the download was cut after {read:N0}{(total is long t ? $" of {t:N0}" : "")} bytes ({e.Message}). The partial file is kept: run again to resume.", e);
        }
    }

    /// <summary>
    /// Checks the file against the hub's etag: a 64-hex-digit etag is the SHA-256 of a Git LFS file; a 40-digit one is the
    /// git blob SHA-1 (<c>sha1("blob {size}\0" + content)</c>) of a small file. A mismatch deletes the file.
    /// </summary>
    private static void Verify(string path, FileMetadata meta, string what)
    {
        string etag = meta.Etag.ToLowerInvariant();
        bool hex = etag.All(char.IsAsciiHexDigit);
        string? actual = null, kind = null;
        if (hex && etag.Length == 64)
        {
            using var s = File.OpenRead(path);
            actual = Convert.ToHexStringLower(SHA256.HashData(s));
            kind = "SHA-256";
        }
        else if (hex && etag.Length == 40)
        {
            using var s = File.OpenRead(path);
            using var sha1 = IncrementalHash.CreateHash(HashAlgorithmName.SHA1);
            sha1.AppendData(Encoding.ASCII.GetBytes($"blob {s.Length.ToString(CultureInfo.InvariantCulture)}\0"));
            var buffer = new byte[1 << 16];
            int n;
            while ((n = s.Read(buffer)) > 0) sha1.AppendData(buffer, 0, n);
            actual = Convert.ToHexStringLower(sha1.GetHashAndReset());
            kind = "git blob SHA-1";
        }
        if (actual is null) return; // an etag that is not a content hash (not the hub's): the size was checked
        if (actual != etag)
        {
            File.Delete(path);
            throw new InvalidDataException($"{what}: the downloaded file's {kind} is {actual}, but the hub records {etag}. The file was deleted; run again to download it anew.");
        }
    }

    private static HttpRequestMessage Request(HttpMethod method, Uri uri, HubOptions? auth)
    {
        var request = new HttpRequestMessage(method, uri);
        request.Headers.UserAgent.ParseAdd("Microsoft.ML.Gohsp");
        request.Headers.AcceptEncoding.ParseAdd("identity"); // sizes and ranges refer to the bytes as stored
        if (auth?.Token is string token && uri.Host == auth.Endpoint.Host) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return request;
    }

    private static string? Header(HttpResponseMessage r, string name) =>
        r.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault() : null;

    private static string? Etag(HttpResponseMessage r)
    {
        string? e = Header(r, "X-Linked-Etag") ?? r.Headers.ETag?.Tag ?? Header(r, "ETag");
        if (e is null) return null;
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        e = e.Trim('"');
        return e.Length == 0 ? null : e;
    }

    private static void WriteText(string path, string text) =>
        AtomicFile.Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)));

    private static void MarkMissing(string repoDir, string commit, string fileName)
    {
        string marker = Path.Combine(repoDir, ".no_exist", commit, fileName);
        if (!File.Exists(marker)) AtomicFile.Write(marker, _ => { });
    }

    /// <summary>snapshots/{commit}/{file} → a relative link to the blob (a copy where links cannot be made), replaced atomically.</summary>
    private static void Link(string snapshot, string blob)
    {
        string dir = Path.GetDirectoryName(snapshot)!;
        Directory.CreateDirectory(dir);
        string relative = Path.GetRelativePath(dir, blob);
        string temp = Path.Combine(dir, "." + Path.GetFileName(snapshot) + "." + Guid.NewGuid().ToString("N")[..8] + ".link");
        try
        {
            File.CreateSymbolicLink(temp, relative);
            File.Move(temp, snapshot, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            try { File.Delete(temp); } catch (IOException) { }
            AtomicFile.Write(snapshot, s => { using var src = File.OpenRead(blob); src.CopyTo(s); });
        }
    }
}
