using System.Runtime.InteropServices;
using System.Text;
using FluentAssertions;
using Xunit;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// The build's output, as the tests run from it: package files may be hard links into the NuGet cache, and the native
/// compatibility step must never change the cache's copy of libLibTorchSharp.so through such a link.
/// </summary>
public class BuildOutputTests
{
    static readonly string NativeDir = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native");

    static string CachedLibTorchSharp()
    {
        string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        return Path.Combine(cache, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
    }

    [Fact]
    public void TheNativePatchLeavesTheNuGetCachesLibTorchSharpUntouched()
    {
        Assert.True(OperatingSystem.IsLinux() && RuntimeInformation.OSArchitecture == Architecture.X64,
            "this test reads the linux-x64 natives; the test suite runs on linux-x64");
        string output = Path.Combine(NativeDir, "libLibTorchSharp.so");
        string cached = CachedLibTorchSharp();
        File.Exists(output).Should().BeTrue(output);
        File.Exists(cached).Should().BeTrue($"the restore puts TorchSharp's natives at {cached}");

        byte[] cachedBytes = File.ReadAllBytes(cached);
        Contains(cachedBytes, "libstdcxx_compat.so").Should().BeFalse("the NuGet cache holds TorchSharp's file as published, never a patched one");

        if (File.Exists(Path.Combine(NativeDir, "libstdcxx_compat.so")))
        {
            // Patched on this host: the output names the shim, the cache does not, so they are not one file.
            Contains(File.ReadAllBytes(output), "libstdcxx_compat.so").Should().BeTrue("the patched library loads the shim");
        }
        else
        {
            // No patch needed on this host: the output is TorchSharp's file, byte for byte.
            File.ReadAllBytes(output).Should().Equal(cachedBytes);
        }
    }

    [Fact]
    public void TheRepositorysProjectsCopyOnlyTheHostsRuntimes()
    {
        var folders = Directory.GetDirectories(Path.Combine(AppContext.BaseDirectory, "runtimes")).Select(Path.GetFileName).ToList();
        folders.Should().Contain("linux-x64");
        folders.Should().OnlyContain(f => f == "linux-x64" || f == "linux" || f == "unix",
            "Directory.Build.targets keeps only the host's runtime folders (other platforms' libtorch is about 0.5 GB each)");
    }

    static bool Contains(byte[] data, string text)
    {
        byte[] needle = Encoding.ASCII.GetBytes(text);
        return data.AsSpan().IndexOf(needle) >= 0;
    }
}
