using FluentAssertions;
using Microsoft.ML.Gohsp.Diagnostics;
using Xunit;

namespace Microsoft.ML.Gohsp.Tests;

public class MachineInfoTests
{
    [Fact]
    public void ProbeNamesTheCpuItsFlagsAndTheTorchThreads()
    {
        var m = MachineInfo.Probe();
        m.LogicalCores.Should().Be(Environment.ProcessorCount);
        m.TorchThreads.Should().Be(TorchSharp.torch.get_num_threads());
        m.CpuModel.Should().NotBeNullOrWhiteSpace();
        if (OperatingSystem.IsLinux())
        {
            var lines = File.ReadAllLines("/proc/cpuinfo");
            var model = lines.FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (model is not null) m.CpuModel.Should().Be(model[(model.IndexOf(':') + 1)..].Trim());
            var flags = (lines.FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) ?? "").Split(' ');
            m.Avx512Bf16.Should().Be(flags.Contains("avx512_bf16"));
            m.Amx.Should().Be(flags.Contains("amx_tile"));
            m.NativeBf16.Should().Be(flags.Contains("avx512_bf16") || flags.Contains("amx_bf16"));
            m.Avx2.Should().Be(flags.Contains("avx2") || System.Runtime.Intrinsics.X86.Avx2.IsSupported);
            m.Avx512Vnni.Should().Be(flags.Contains("avx512_vnni"));
            m.AvxVnni.Should().Be(flags.Contains("avx_vnni"));
        }
        m.IsaFlags.Split(' ', StringSplitOptions.RemoveEmptyEntries).Should().OnlyContain(f => f == "avx2" || f == "avx_vnni" || f == "avx512f" || f == "avx512_vnni" || f == "avx512_bf16" || f == "amx_tile");
        m.IsaFlags.Contains("vnni").Should().Be(m.Avx512Vnni || m.AvxVnni);
        m.IsaKind.Should().Be(m.Amx ? "AMX" : m.Avx512 ? "AVX-512" : m.Avx2 ? "AVX2" : "baseline");
        m.ToString().Should().Contain(m.CpuModel).And.Contain($"{m.TorchThreads} torch threads");
    }
}
