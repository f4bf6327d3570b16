using System.Diagnostics;
using System.Text;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Runs test/Microsoft.ML.Gohsp.FaultCheck (built next to the tests) in a child process: to open a possibly hostile file
/// under a memory limit, or to train and be killed at a chosen output line.
/// </summary>
internal static class FaultApp
{
    private static readonly string Dll = BuiltApp.Locate("test/Microsoft.ML.Gohsp.FaultCheck", "Microsoft.ML.Gohsp.FaultCheck");

    /// <summary>Address-space limit of a child that opens a hostile file (the runtime and libtorch need about 4 GB of it).</summary>
    public const long AddressSpaceKiB = 6L << 20;

    /// <summary>Managed heap limit of that child: an allocation of a few GB fails there instead of paging the machine.</summary>
    public const long ManagedHeapBytes = 1L << 30;

    /// <summary>
    /// Opens <paramref name="path"/> with the FaultCheck verb (<c>open-checkpoint</c>, <c>open-model</c>, <c>open-cifar</c>) in a child
    /// process limited to <see cref="AddressSpaceKiB"/> of address space and <see cref="ManagedHeapBytes"/> of managed heap.
    /// Returns the exit code (0 opened, 3 refused with an exception, anything else: the child died) and its output.
    /// </summary>
    public static (int ExitCode, string Output) Open(string verb, string path)
    {
        if (!File.Exists(Dll)) throw new FileNotFoundException($"{Dll} is not built; it is built with the test project.", Dll);
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"ulimit -v {AddressSpaceKiB} && exec dotnet \"$0\" \"$1\" \"$2\"");
        psi.ArgumentList.Add(Dll);
        psi.ArgumentList.Add(verb);
        psi.ArgumentList.Add(path);
        psi.Environment["DOTNET_GCHeapHardLimit"] = "0x" + ManagedHeapBytes.ToString("x");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(1)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"FaultCheck {verb} {path} did not finish within a minute.");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    /// <summary>
    /// Runs <c>FaultCheck train &lt;cifar&gt; &lt;work&gt;</c>. When <paramref name="killAt"/> is given, the child stops after printing
    /// that exact line (a step line such as "STEP dense 2 1", or "IN-ATOMIC-WRITE" inside the atomic checkpoint write of dense
    /// epoch <paramref name="blockAtEpoch"/>) and is killed there with <see cref="Process.Kill(bool)"/>; otherwise it runs to the
    /// end. Returns the output lines and whether the child was killed.
    /// </summary>
    public static (List<string> Lines, bool Killed) Train(string work, string? killAt = null, int blockAtEpoch = 0)
    {
        if (!File.Exists(Dll)) throw new FileNotFoundException($"{Dll} is not built; it is built with the test project.", Dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        psi.ArgumentList.Add("train");
        psi.ArgumentList.Add(Cifar10Tests.SubsetDir);
        psi.ArgumentList.Add(work);
        if (blockAtEpoch > 0) psi.ArgumentList.Add("write:" + blockAtEpoch.ToString(System.Globalization.CultureInfo.InvariantCulture));
        else if (killAt is not null) psi.ArgumentList.Add(killAt);
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var lines = new List<string>();
        bool killed = false;
        var deadline = Stopwatch.StartNew();
        string? line;
        while ((line = p.StandardOutput.ReadLine()) is not null)
        {
            lines.Add(line);
            if (line == killAt)
            {
                p.Kill(entireProcessTree: true);
                killed = true;
                break;
            }
            if (deadline.Elapsed > TimeSpan.FromMinutes(2)) { p.Kill(entireProcessTree: true); throw new TimeoutException("FaultCheck train ran over 2 minutes."); }
        }
        p.WaitForExit();
        if (!killed && p.ExitCode != 0)
            throw new InvalidOperationException($"FaultCheck train failed ({p.ExitCode}):\n{string.Join("\n", lines)}\n{stderr.Result}");
        return (lines, killed);
    }
}
