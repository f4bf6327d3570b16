using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// A Hugging Face hub stand-in on loopback (HttpListener on 127.0.0.1, a free port), answering as the hub does:
/// <c>/{repo}/resolve/{revision}/{file}</c> gives, for a large (LFS) file, a 302 to <c>/cdn/{sha256}</c> whose headers carry
/// <c>X-Repo-Commit</c>, <c>X-Linked-Etag</c> (the SHA-256) and <c>X-Linked-Size</c>; for a small file, a 200 with
/// <c>ETag</c> (the git blob SHA-1) and <c>X-Repo-Commit</c>. A missing repository or file is a 404 with <c>X-Error-Code</c>.
/// The CDN honours <c>Range</c>. Faults: cut the body after some bytes, or serve corrupted bytes.
/// </summary>
internal sealed class HubTestServer : IDisposable
{
    public const string Commit = "0123456789abcdef0123456789abcdef01234567";
    private readonly HttpListener _listener = new();
    private readonly Dictionary<string, Dictionary<string, byte[]>> _repos = new(StringComparer.Ordinal);
    private readonly Task _loop;

    public HubTestServer()
    {
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort();
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
            try
            {
                _listener.Start();
                Endpoint = new Uri($"http://127.0.0.1:{port}");
                break;
            }
            catch (HttpListenerException) when (attempt < 5) { }
        }
        _loop = Task.Run(Loop);
    }

    public Uri Endpoint { get; } = null!;

    /// <summary>Every request as "METHOD path [range]", in order.</summary>
    public ConcurrentQueue<string> Requests { get; } = new();

    /// <summary>When set, the CDN sends the full Content-Length but only this many bytes, then drops the connection (once).</summary>
    public long? CutAfter { get; set; }

    /// <summary>When true, the CDN serves the file with one byte changed (the headers keep the true hash).</summary>
    public bool Corrupt { get; set; }

    public void Add(string repo, string file, byte[] content)
    {
        if (!_repos.TryGetValue(repo, out var files)) _repos[repo] = files = new(StringComparer.Ordinal);
        files[file] = content;
    }

    public static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal) || file.EndsWith(".bin", StringComparison.Ordinal);

    public static string Sha256(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

    public static string GitBlobSha1(byte[] b) =>
        Convert.ToHexStringLower(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {b.Length}\0"), .. b]));

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private async Task Loop()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException) { return; }
            try { Handle(ctx); }
            catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException) { }
        }
    }

    private void Handle(HttpListenerContext ctx)
    {
        var req = ctx.Request;
        var res = ctx.Response;
        string path = Uri.UnescapeDataString(req.Url!.AbsolutePath);
        Requests.Enqueue($"{req.HttpMethod} {path}{(req.Headers["Range"] is string r ? " " + r : "")}");
        if (path.StartsWith("/cdn/", StringComparison.Ordinal))
        {
            var sha = path["/cdn/".Length..];
            var content = _repos.Values.SelectMany(f => f.Values).FirstOrDefault(c => Sha256(c) == sha);
            if (content is null) { res.StatusCode = 404; res.Close(); return; }
            Serve(req, res, content);
            return;
        }
        int resolve = path.IndexOf("/resolve/", StringComparison.Ordinal);
        if (resolve < 0) { res.StatusCode = 404; res.Close(); return; }
        string repo = path[1..resolve];
        var rest = path[(resolve + "/resolve/".Length)..].Split('/', 2);
        string file = rest.Length == 2 ? rest[1] : "";
        if (!_repos.TryGetValue(repo, out var files))
        {
            res.StatusCode = 404;
            res.Headers["X-Error-Code"] = "RepositoryNotFound";
            res.Close();
            return;
        }
        res.Headers["X-Repo-Commit"] = Commit;
        if (!files.TryGetValue(file, out var bytes))
        {
            res.StatusCode = 404;
            res.Headers["X-Error-Code"] = "EntryNotFound";
            res.Close();
            return;
        }
        if (IsLfs(file))
        {
            string sha = Sha256(bytes);
            res.StatusCode = 302;
            res.Headers["X-Linked-Etag"] = $"\"{sha}\"";
            res.Headers["X-Linked-Size"] = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
            res.Headers["ETag"] = "\"not-the-content-hash\"";
            res.RedirectLocation = $"{Endpoint}cdn/{sha}";
            res.Close();
            return;
        }
        res.Headers["ETag"] = $"\"{GitBlobSha1(bytes)}\"";
        Serve(req, res, bytes);
    }

    private void Serve(HttpListenerRequest req, HttpListenerResponse res, byte[] content)
    {
        if (Corrupt)
        {
            content = (byte[])content.Clone();
            content[content.Length / 2] ^= 0x5a;
        }
        long start = 0;
        if (req.Headers["Range"] is string range && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            start = long.Parse(range["bytes=".Length..^1], System.Globalization.CultureInfo.InvariantCulture);
            if (start >= content.Length)
            {
                res.StatusCode = 416;
                res.Close();
                return;
            }
            res.StatusCode = 206;
            res.Headers["Content-Range"] = $"bytes {start}-{content.Length - 1}/{content.Length}";
        }
        res.ContentLength64 = content.Length - start;
        if (req.HttpMethod == "HEAD") { res.Close(); return; }
        if (CutAfter is long cut && cut < content.Length - start)
        {
            CutAfter = null;
            res.SendChunked = false;
            res.OutputStream.Write(content, (int)start, (int)cut);
            res.OutputStream.Flush();
            res.Abort(); // the connection drops mid-body
            return;
        }
        res.OutputStream.Write(content, (int)start, (int)(content.Length - start));
        res.Close();
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
        try { _loop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
    }
}
