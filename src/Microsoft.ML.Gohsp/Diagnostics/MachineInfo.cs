using System.Runtime.InteropServices;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Gohsp.Diagnostics;

/// <summary>
/// The machine a speed figure was measured on: CPU model, logical cores, the instruction sets the matrix kernels use
/// and the torch intra-op thread count. Benchmarks and the sample report it with every figure.
/// </summary>
/// <param name="CpuModel">CPU model name (Linux: <c>/proc/cpuinfo</c>'s "model name"; elsewhere the OS's processor description).</param>
/// <param name="LogicalCores">Logical processors visible to the process.</param>
/// <param name="Avx2">AVX2 is available.</param>
/// <param name="Avx512">AVX-512 Foundation is available.</param>
/// <param name="Avx512Bf16">AVX512-BF16 (native bf16 dot products) is available.</param>
/// <param name="Amx">AMX tiles (<c>amx_tile</c>) are available.</param>
/// <param name="TorchThreads">torch's intra-op thread count when probed.</param>
public sealed record MachineInfo(string CpuModel, int LogicalCores, bool Avx2, bool Avx512, bool Avx512Bf16, bool Amx, int TorchThreads)
{
    /// <summary>
    /// Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16). Elsewhere libtorch emulates bf16, which is slower
    /// than fp32, so bf16 timings there say nothing about bf16.
    /// </summary>
    public bool NativeBf16 { get; init; }

    /// <summary>AVX-512 VNNI (<c>avx512_vnni</c>: VPDPBUSD, one-instruction uint8 × int8 dot products) is available.</summary>
    public bool Avx512Vnni { get; init; }

    /// <summary>AVX-VNNI (<c>avx_vnni</c>: VPDPBUSD on 256-bit vectors) is available.</summary>
    public bool AvxVnni { get; init; }

    /// <summary>The ISA kind the figures belong to: "AMX", "AVX-512", "AVX2" or "baseline".</summary>
    [JsonIgnore]
    public string IsaKind => Amx ? "AMX" : Avx512 ? "AVX-512" : Avx2 ? "AVX2" : "baseline";

    /// <summary>The flags as <c>/proc/cpuinfo</c> spells them, e.g. "avx2 avx512f avx512_vnni avx512_bf16".</summary>
    public string IsaFlags => string.Join(' ', new[] { (Avx2, "avx2"), (AvxVnni, "avx_vnni"), (Avx512, "avx512f"), (Avx512Vnni, "avx512_vnni"), (Avx512Bf16, "avx512_bf16"), (Amx, "amx_tile") }
        .Where(f => f.Item1).Select(f => f.Item2));

    /// <summary>Probes the current machine (reads <c>/proc/cpuinfo</c> on Linux; torch's thread count at call time).</summary>
    public static MachineInfo Probe()
    {
        var (model, flags) = CpuInfo.Value;
        return new MachineInfo(model, Environment.ProcessorCount,
            Avx2: System.Runtime.Intrinsics.X86.Avx2.IsSupported || flags.Contains("avx2"),
            Avx512: System.Runtime.Intrinsics.X86.Avx512F.IsSupported || flags.Contains("avx512f"),
            Avx512Bf16: flags.Contains("avx512_bf16"),
            Amx: flags.Contains("amx_tile"),
            TorchThreads: TorchSharp.torch.get_num_threads())
        {
            NativeBf16 = flags.Contains("avx512_bf16") || flags.Contains("amx_bf16"),
            Avx512Vnni = flags.Contains("avx512_vnni"),
            AvxVnni = flags.Contains("avx_vnni"),
        };
    }

    /// <summary>One line for logs and reports: model, cores, flags, torch threads.</summary>
    public override string ToString() =>
        $"{CpuModel}, {LogicalCores} logical cores, {(IsaFlags.Length > 0 ? IsaFlags : "no AVX2")}, {TorchThreads} torch threads";

    private static readonly Lazy<(string Model, HashSet<string> Flags)> CpuInfo = new(ReadCpuInfo);

    private static (string, HashSet<string>) ReadCpuInfo()
    {
        string model = RuntimeInformation.ProcessArchitecture.ToString();
        var flags = new HashSet<string>(StringComparer.Ordinal);
        if (!OperatingSystem.IsLinux())
            return (Environment.GetEnvironmentVariable("PROCESSOR_IDENTIFIER") ?? model, flags);
        try
        {
            bool haveModel = false, haveFlags = false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                int colon = line.IndexOf(':');
                if (colon < 0) continue;
                var key = line.AsSpan(0, colon).Trim();
                if (!haveModel && key.SequenceEqual("model name")) { model = line[(colon + 1)..].Trim(); haveModel = true; }
                else if (!haveFlags && key.SequenceEqual("flags"))
                {
                    flags.UnionWith(line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
                    haveFlags = true;
                }
                if (haveModel && haveFlags) break;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return (model, flags);
    }
}
