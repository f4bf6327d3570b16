using FluentAssertions;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.VisionTransformer;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Pretrained weights by name, against a Hugging Face hub stand-in on loopback (<see cref="HubTestServer"/>) that serves the
/// distilled-DeiT fixture; each test has its own temporary cache. Nothing reaches the internet.
/// </summary>
public sealed class HubDownloadTests(ITestOutputHelper output) : IDisposable
{
    private const string Repo = "facebook/tiny-deit-distilled";
    private readonly HubTestServer _server = NewServer();
    private readonly string _cache = Directory.CreateTempSubdirectory("gohsp-hub-cache-").FullName;
    private readonly List<string> _log = [];

    internal static byte[] Weights { get; } = File.ReadAllBytes(Path.Combine(DistilledDeiTTests.Fixtures, "hf", "model.safetensors"));
    internal static byte[] Config { get; } = File.ReadAllBytes(Path.Combine(DistilledDeiTTests.Fixtures, "hf", "config.json"));

    internal static HubTestServer NewServer()
    {
        var server = new HubTestServer();
        server.Add(Repo, "model.safetensors", Weights);
        server.Add(Repo, "config.json", Config);
        return server;
    }

    private HubOptions Options(bool offline = false) => new() { Endpoint = _server.Endpoint, CacheDirectory = _cache, Offline = offline };

    private string RepoDir => Path.Combine(_cache, "models--facebook--tiny-deit-distilled");

    private string Blob => Path.Combine(RepoDir, "blobs", HubTestServer.Sha256(Weights));

    public void Dispose()
    {
        _server.Dispose();
        output.WriteLine(string.Join("\n", _log));
        Directory.Delete(_cache, true);
    }

    [Fact]
    public void AModelDownloadsThroughTheRedirectIntoTheHubsCacheLayoutAndImports()
    {
        string path = HuggingFaceHub.DownloadModel(HubModelName.Parse("hf:" + Repo), Options(), _log.Add);

        path.Should().Be(Path.Combine(RepoDir, "snapshots", HubTestServer.Commit, "model.safetensors"));
        File.ReadAllText(Path.Combine(RepoDir, "refs", "main")).Should().Be(HubTestServer.Commit);
        new FileInfo(path).LinkTarget.Should().Be(Path.Combine("..", "..", "blobs", HubTestServer.Sha256(Weights)), "a relative link into blobs/");
        File.ReadAllBytes(path).Should().Equal(Weights);
        File.ReadAllBytes(Path.Combine(Path.GetDirectoryName(path)!, "config.json")).Should().Equal(Config);
        File.Exists(Path.Combine(RepoDir, "blobs", HubTestServer.GitBlobSha1(Config))).Should().BeTrue("a small file's blob is named by its git SHA-1");
        File.Exists(Path.Combine(RepoDir, ".no_exist", HubTestServer.Commit, "preprocessor_config.json")).Should().BeTrue();
        Directory.GetFiles(RepoDir, "*.incomplete", SearchOption.AllDirectories).Should().BeEmpty();
        _server.Requests.Should().Contain($"GET /cdn/{HubTestServer.Sha256(Weights)}", "the 302 to the CDN is followed");
        _log.Should().Contain(l => l.Contains("hash verified", StringComparison.Ordinal));

        var (x, expected, _) = DistilledDeiTTests.Expected();
        using (x)
        using (var model = PretrainedViT.Load(path))
        using (no_grad())
        using (var logits = model.forward(x))
        {
            model.Architecture.Distillation.Should().Be(ViTDistillation.TokenAndHead);
            DistilledDeiTTests.MaxDiff(logits.data<float>().ToArray(), expected).Should().BeLessThan(1e-4f);
        }

        // a second call finds everything in the cache: metadata requests only, no download
        int cdnGets = _server.Requests.Count(r => r.StartsWith("GET /cdn/", StringComparison.Ordinal));
        HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options(), _log.Add).Should().Be(path);
        _server.Requests.Count(r => r.StartsWith("GET /cdn/", StringComparison.Ordinal)).Should().Be(cdnGets);
    }

    [Fact]
    public void A404NamesTheRepositoryOrTheFile()
    {
        var act = () => HuggingFaceHub.DownloadModel(HubModelName.Parse("facebook/no-such-model"), Options());
        act.Should().Throw<FileNotFoundException>().WithMessage("*Repository 'facebook/no-such-model'*not found*HTTP 404*");

        var file = () => HuggingFaceHub.DownloadFileAsync(HubModelName.Parse(Repo), "tokenizer.json", Options()).GetAwaiter().GetResult();
        file.Should().Throw<FileNotFoundException>().WithMessage($"*'tokenizer.json' was not found in '{Repo}'*404*");

        _server.Add("org/no-weights", "config.json", Config);
        var none = () => HuggingFaceHub.DownloadModel(HubModelName.Parse("org/no-weights"), Options());
        none.Should().Throw<FileNotFoundException>().WithMessage("*'org/no-weights' has neither model.safetensors nor pytorch_model.bin*");
    }

    [Fact]
    public void ACutDownloadFailsClearlyKeepsItsPartAndResumesWithARangeRequest()
    {
        _server.CutAfter = 30_000;
        var act = () => HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options(), _log.Add);
        act.Should().Throw<IOException>().WithMessage("*cut after 30,000 of*bytes*run again to resume*");
        File.Exists(Blob).Should().BeFalse("nothing half-written appears under the final name");
        Directory.Exists(Path.Combine(RepoDir, "snapshots")).Should().BeFalse();
        new FileInfo(Blob + ".incomplete").Length.Should().Be(30_000);

        string path = HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options(), _log.Add);
        _server.Requests.Should().Contain($"GET /cdn/{HubTestServer.Sha256(Weights)} bytes=30000-");
        _log.Should().Contain(l => l.Contains("Resuming", StringComparison.Ordinal));
        File.ReadAllBytes(path).Should().Equal(Weights);
        File.Exists(Blob + ".incomplete").Should().BeFalse();
    }

    [Fact]
    public void AFileThatDoesNotMatchTheHubsSha256IsRefusedAndDeleted()
    {
        _server.Corrupt = true;
        var act = () => HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options());
        act.Should().Throw<InvalidDataException>().WithMessage($"*SHA-256 is*but the hub records {HubTestServer.Sha256(Weights)}*");
        File.Exists(Blob).Should().BeFalse();
        File.Exists(Blob + ".incomplete").Should().BeFalse();
        Directory.Exists(Path.Combine(RepoDir, "snapshots")).Should().BeFalse();
    }

    [Fact]
    public void OfflineLoadsFromTheCacheWithoutTheNetworkAndOtherwiseNamesTheModelAndTheCache()
    {
        var act = () => HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options(offline: true));
        act.Should().Throw<FileNotFoundException>().WithMessage($"*'{Repo}' is not in the Hugging Face cache '{RepoDir}'*HF_HUB_OFFLINE*");
        _server.Requests.Should().BeEmpty("offline never touches the network");

        string online = HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options());
        int requests = _server.Requests.Count;
        HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo), Options(offline: true), _log.Add).Should().Be(online);
        _server.Requests.Count.Should().Be(requests);
        // a revision that was never resolved is not in the cache
        var other = () => HuggingFaceHub.DownloadModel(HubModelName.Parse(Repo + "@v2"), Options(offline: true));
        other.Should().Throw<FileNotFoundException>().WithMessage("*@v2' is not in the Hugging Face cache*");
    }

    [Theory]
    [InlineData("timm/deit_small_patch16_224.fb_in1k", "timm/deit_small_patch16_224.fb_in1k", "main")]
    [InlineData("hf:facebook/deit-small-patch16-224", "facebook/deit-small-patch16-224", "main")]
    [InlineData("hf:facebook/deit-small-patch16-224@0123abc", "facebook/deit-small-patch16-224", "0123abc")]
    [InlineData("gpt2@refs/pr/1", "gpt2", "refs/pr/1")]
    public void NamesParse(string name, string repo, string revision) =>
        HubModelName.Parse(name).Should().Be(new HubModelName(repo, revision));

    [Theory]
    [InlineData("hf:")]
    [InlineData("a/b/c")]
    [InlineData("../etc/passwd")]
    [InlineData("org--x/name")]
    [InlineData("org/name@../../x")]
    public void BadNamesAreRefusedNamingTheOption(string name)
    {
        var act = () => HubModelName.Parse(name, "PretrainedModel");
        act.Should().Throw<ArgumentException>().Which.ParamName.Should().Be("PretrainedModel");
    }
}

/// <summary>
/// The environment variables (HF_ENDPOINT, HF_HUB_CACHE, HF_HOME, HF_HUB_OFFLINE) and the ML.NET entry points that read
/// them. These tests set process-wide variables: they run alone (no other test runs beside them) and restore the variables.
/// </summary>
[CollectionDefinition(nameof(HubEnvironmentTests), DisableParallelization = true)]
public sealed class HubEnvironmentCollection;

[Collection(nameof(HubEnvironmentTests))]
public sealed class HubEnvironmentTests(ITestOutputHelper output)
{
    private static readonly string[] Variables = ["HF_ENDPOINT", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "HF_TOKEN"];

    private static void WithEnvironment(Dictionary<string, string?> values, Action body)
    {
        var saved = Variables.ToDictionary(v => v, Environment.GetEnvironmentVariable);
        try
        {
            foreach (var v in Variables) Environment.SetEnvironmentVariable(v, values.GetValueOrDefault(v));
            body();
        }
        finally
        {
            foreach (var (k, v) in saved) Environment.SetEnvironmentVariable(k, v);
        }
    }

    [Fact]
    public void TheEnvironmentChoosesTheEndpointTheCacheAndOfflineMode()
    {
        WithEnvironment(new() { ["HF_HOME"] = "/tmp/hf-home", ["HF_HUB_OFFLINE"] = "1", ["HF_ENDPOINT"] = "http://127.0.0.1:9/mirror/" }, () =>
        {
            var o = HubOptions.FromEnvironment();
            o.CacheDirectory.Should().Be(Path.Combine("/tmp/hf-home", "hub"));
            o.Offline.Should().BeTrue();
            o.Endpoint.Should().Be(new Uri("http://127.0.0.1:9/mirror"));
        });
        WithEnvironment(new() { ["HF_HOME"] = "/tmp/hf-home", ["HF_HUB_CACHE"] = "/tmp/hub-cache", ["HF_HUB_OFFLINE"] = "0" }, () =>
        {
            var o = HubOptions.FromEnvironment();
            o.CacheDirectory.Should().Be("/tmp/hub-cache");
            o.Offline.Should().BeFalse();
            o.Endpoint.Should().Be(HubOptions.DefaultEndpoint);
        });
        WithEnvironment(new(), () => HubOptions.FromEnvironment().CacheDirectory.Should()
            .Be(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub")));
        WithEnvironment(new() { ["HF_ENDPOINT"] = "ftp://x" }, () =>
            ((Action)(() => HubOptions.FromEnvironment())).Should().Throw<ArgumentException>().WithMessage("*HF_ENDPOINT*"));
    }

    [Fact]
    public void ACachedModelLoadsByNameWithHfHubOfflineAndTheTrainerStartsFromIt()
    {
        using var server = HubDownloadTests.NewServer();
        string cache = Directory.CreateTempSubdirectory("gohsp-hub-env-").FullName;
        try
        {
            var ml = new MLContext(1);
            var log = new List<string>();
            ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
            WithEnvironment(new() { ["HF_ENDPOINT"] = server.Endpoint.ToString(), ["HF_HUB_CACHE"] = cache }, () =>
            {
                // online through the environment's endpoint: downloads, with progress in MLContext.Log
                var model = ml.Model.LoadPretrainedViT("hf:facebook/tiny-deit-distilled");
                model.Model.Architecture.Distillation.Should().Be(ViTDistillation.TokenAndHead);
                log.Should().Contain(l => l.Contains("Downloading 'model.safetensors'", StringComparison.Ordinal));
            });
            int requests = server.Requests.Count;
            requests.Should().BeGreaterThan(0);
            WithEnvironment(new() { ["HF_ENDPOINT"] = server.Endpoint.ToString(), ["HF_HUB_CACHE"] = cache, ["HF_HUB_OFFLINE"] = "1" }, () =>
            {
                var model = ml.Model.LoadPretrainedViT("hf:facebook/tiny-deit-distilled");
                model.Model.Architecture.Distillation.Should().Be(ViTDistillation.TokenAndHead);
                var trainer = ml.MulticlassClassification.Trainers.ViTClassification(new ViTClassificationTrainer.Options
                {
                    PretrainedModel = "facebook/tiny-deit-distilled", ImageColumnName = "Pixels",
                });
                trainer.TrainerOptions.ResolveArchitecture(3).Should().Be(model.Model.Architecture.WithNumClasses(3));
                var missing = () => ml.Model.LoadPretrainedViT("hf:facebook/other");
                missing.Should().Throw<FileNotFoundException>().WithMessage($"*'facebook/other' is not in the Hugging Face cache '{cache}*HF_HUB_OFFLINE*");
            });
            server.Requests.Count.Should().Be(requests, "HF_HUB_OFFLINE=1 never touches the network");
            output.WriteLine(string.Join("\n", log));
        }
        finally { Directory.Delete(cache, true); }
    }
}
