using System.Text.Json;
using CustomPruningMethod;
using Microsoft.ML.Gohsp.Tests;

namespace Microsoft.ML.Gohsp.ExtensionTests;

/// <summary>
/// The Cifar10Pruning sample runs a method that another assembly registers: <c>--method-assembly</c> loads
/// samples/CustomPruningMethod, whose module initializer registers "random", and <c>--method random</c> selects it.
/// </summary>
public sealed class SampleMethodAssemblyTests : IDisposable
{
    private readonly string _out = Path.Combine(Path.GetTempPath(), "gohsp-extension-" + Guid.NewGuid().ToString("N"));
    private static readonly string Sample = BuiltApp.Locate("samples/Cifar10Pruning", "Cifar10Pruning");
    private static readonly string Plugin = typeof(RandomStructuredPruning).Assembly.Location;

    // The CIFAR-10 subset: $CIFAR10_SUBSET_DIR, else shared/data/cifar-10-subset beside a folder above the tests.
    private static string Subset()
    {
        if (Environment.GetEnvironmentVariable("CIFAR10_SUBSET_DIR") is { Length: > 0 } env) return env;
        var candidates = new List<string>();
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent) candidates.Add(Path.Combine(d.FullName, "shared", "data", "cifar-10-subset"));
        return candidates.FirstOrDefault(Directory.Exists) ?? throw new DirectoryNotFoundException("No shared/data/cifar-10-subset above the tests; set CIFAR10_SUBSET_DIR.");
    }

    [Fact]
    public void TheSampleRunsAMethodAnotherAssemblyRegisters()
    {
        var (code, stdout, stderr) = BuiltApp.Run(Sample, ["--data", Subset(), "--method-assembly", Plugin, "--method", "random", "--arch", "cifar-micro",
            "--max-train", "128", "--max-test", "64", "--epochs", "1", "--post-epochs", "1", "--validation", "0", "--sparsity", "0.5",
            "--no-speed", "--precision", "fp32", "--threads", "1", "--plain", "--out", _out], TimeSpan.FromMinutes(3));
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(_out, "report.json")));
        var entry = Assert.Single(report.RootElement.GetProperty("entries").EnumerateArray());
        Assert.Equal("random", entry.GetProperty("method").GetString());
        Assert.InRange(entry.GetProperty("achieved_sparsity").GetDouble(), 0.49, 0.51);
        Assert.Equal("FineTune 1", entry.GetProperty("epoch_split").GetString());
        Assert.True(File.Exists(Path.Combine(_out, "random-50.zip")), stdout);
    }

    [Fact]
    public void TheSampleListsTheRegisteredMethodAmongTheKnownOnes()
    {
        var (code, _, stderr) = BuiltApp.Run(Sample, ["--method-assembly", Plugin, "--method", "magnitude"], TimeSpan.FromMinutes(1));
        Assert.Equal(1, code);
        Assert.Contains("unknown method 'magnitude'. Known: gohsp, sgmp, somp, random, sgmp-fisher, somp-fisher, somp-taylor, all, controls.", stderr);

        var missing = BuiltApp.Run(Sample, ["--method-assembly", Path.Combine(_out, "missing.dll")], TimeSpan.FromMinutes(1));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("Option '--method-assembly': cannot load", missing.StdErr);
    }

    public void Dispose()
    {
        if (Directory.Exists(_out)) Directory.Delete(_out, recursive: true);
    }
}
