using System.Runtime.InteropServices;

namespace Microsoft.ML.Gohsp.Platform;

/// <summary>
/// Keeps freed tensor memory mapped for reuse on Linux with glibc. libtorch allocates CPU tensors with <c>malloc</c>.
/// By default glibc serves blocks of a few MB (a ViT's activations) with <c>mmap</c>, or trims them off the top of the
/// heap when they are freed. Every step then gets fresh pages from the kernel, which faults in and zeroes each 4 KB
/// page: 10,000+ faults per batch-64 forward of the reference config, and 10,000–20,000 per training step.
/// </summary>
/// <remarks>
/// <para>
/// The first <see cref="VisionTransformer.VisionTransformerModel"/> created in the process calls glibc's
/// <c>mallopt</c> with <c>M_MMAP_THRESHOLD</c> = <see cref="MmapThresholdBytes"/> and <c>M_TRIM_THRESHOLD</c> =
/// <see cref="TrimThresholdBytes"/>. ONNX Runtime's arena and PyTorch's CUDA caching allocator make the same trade:
/// freed memory stays with the process for the next batch instead of going back to the kernel. The process's resident
/// memory can therefore stay up to <see cref="TrimThresholdBytes"/> above what it currently uses. This setting is
/// process-wide. docs/benchmarks.md ("Where inference time goes") has the measurements.
/// </para>
/// <para>
/// Nothing is changed when <see cref="Enabled"/> is false (set it before the first model is created, or set the
/// environment variable <c>GOHSP_TUNE_MALLOC=0</c>). Nothing is changed either when the process is not on Linux/glibc,
/// or when the environment already tunes the allocator: any <c>MALLOC_MMAP_THRESHOLD_</c>, <c>MALLOC_TRIM_THRESHOLD_</c>
/// or <c>MALLOC_TOP_PAD_</c> variable, or jemalloc/tcmalloc/mimalloc in <c>LD_PRELOAD</c>.
/// </para>
/// </remarks>
public static class NativeAllocator
{
    private const int MTrimThreshold = -1;   // glibc malloc.h
    private const int MMmapThreshold = -3;
    private static readonly object Gate = new();
    private static bool _attempted;

    /// <summary>The largest block glibc still serves from the heap rather than <c>mmap</c>: 32 MiB, the most glibc accepts on 64-bit.</summary>
    public const int MmapThresholdBytes = 32 << 20;

    /// <summary>Free memory at the top of the heap that glibc keeps instead of returning it to the kernel: 256 MiB.</summary>
    public const int TrimThresholdBytes = 256 << 20;

    /// <summary>Whether the first model created tunes glibc's allocator (default true unless <c>GOHSP_TUNE_MALLOC=0</c>).</summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("GOHSP_TUNE_MALLOC") != "0";

    /// <summary>True once this process's glibc allocator has been tuned by this class.</summary>
    public static bool IsTuned { get; private set; }

    /// <summary>Why the allocator was or was not tuned (after the first model was created), for logs and diagnostics.</summary>
    public static string Status { get; private set; } = "not attempted yet";

    /// <summary>Tunes the allocator once per process if <see cref="Enabled"/>; later calls do nothing.</summary>
    internal static void EnsureTuned()
    {
        if (_attempted) return;
        lock (Gate)
        {
            if (_attempted) return;
            _attempted = true;
            Status = Tune();
        }
    }

    private static unsafe string Tune()
    {
        if (!Enabled) return "disabled (NativeAllocator.Enabled = false or GOHSP_TUNE_MALLOC=0)";
        if (!OperatingSystem.IsLinux()) return "not Linux";
        foreach (var name in new[] { "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_" })
            if (Environment.GetEnvironmentVariable(name) is not null) return $"left alone: {name} is set";
        string preload = Environment.GetEnvironmentVariable("LD_PRELOAD") ?? "";
        foreach (var other in new[] { "jemalloc", "tcmalloc", "mimalloc" })
            if (preload.Contains(other, StringComparison.OrdinalIgnoreCase)) return $"left alone: {other} is preloaded";
        if (!NativeLibrary.TryLoad("libc.so.6", out var libc)) return "no glibc (libc.so.6)";
        if (!NativeLibrary.TryGetExport(libc, "mallopt", out var address)) return "glibc without mallopt";
        var mallopt = (delegate* unmanaged<int, int, int>)address;
        bool mmap = mallopt(MMmapThreshold, MmapThresholdBytes) == 1;
        bool trim = mallopt(MTrimThreshold, TrimThresholdBytes) == 1;
        IsTuned = mmap && trim;
        return IsTuned ? $"tuned: M_MMAP_THRESHOLD {MmapThresholdBytes >> 20} MiB, M_TRIM_THRESHOLD {TrimThresholdBytes >> 20} MiB"
                       : $"mallopt refused (M_MMAP_THRESHOLD {(mmap ? "ok" : "refused")}, M_TRIM_THRESHOLD {(trim ? "ok" : "refused")})";
    }
}
