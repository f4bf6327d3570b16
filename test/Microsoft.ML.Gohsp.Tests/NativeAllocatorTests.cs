using FluentAssertions;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>The glibc malloc tuning that creating a model applies (Platform.NativeAllocator).</summary>
public class NativeAllocatorTests
{
    [Fact]
    public void CreatingAModelTunesGlibcMallocOnLinux()
    {
        using var model = new VisionTransformerModel(ViTArchitectureTests.Heterogeneous(), seed: 1);
        Platform.NativeAllocator.Status.Should().NotBe("not attempted yet");
        bool environmentOptsOut = Environment.GetEnvironmentVariable("GOHSP_TUNE_MALLOC") == "0"
            || new[] { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_" }.Any(v => Environment.GetEnvironmentVariable(v) is not null)
            || (Environment.GetEnvironmentVariable("LD_PRELOAD") ?? "").Contains("malloc", StringComparison.OrdinalIgnoreCase);
        bool glibc = OperatingSystem.IsLinux() && System.Runtime.InteropServices.NativeLibrary.TryLoad("libc.so.6", out _);
        Platform.NativeAllocator.IsTuned.Should().Be(glibc && !environmentOptsOut, Platform.NativeAllocator.Status);
    }
}
