using System.Diagnostics;
using FluentAssertions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>Loads a saved model zip in a separate process (test/Microsoft.ML.Gohsp.LoadCheck) and scores test images there.</summary>
internal static class NewProcess
{
    /// <summary>The Score vectors a fresh process computes for the first <paramref name="count"/> CIFAR-10 test images.</summary>
    public static float[][] Scores(string modelZip, int count)
    {
        // test/Microsoft.ML.Gohsp.Tests/bin/<Config>/net10.0 -> test/Microsoft.ML.Gohsp.LoadCheck/bin/<Config>/net10.0
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = baseDir.Name, config = baseDir.Parent!.Name;
        var exe = Path.Combine(baseDir.Parent.Parent!.Parent!.Parent!.FullName, "Microsoft.ML.Gohsp.LoadCheck", "bin", config, tfm, "Microsoft.ML.Gohsp.LoadCheck.dll");
        File.Exists(exe).Should().BeTrue($"the LoadCheck helper is built with the tests ({exe})");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { exe, modelZip, Cifar10Tests.SubsetDir, count.ToString(System.Globalization.CultureInfo.InvariantCulture) })
            psi.ArgumentList.Add(arg);
        using var p = Process.Start(psi)!;
        var stderrTask = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        p.ExitCode.Should().Be(0, stderrTask.Result);
        var scores = System.Text.Json.JsonSerializer.Deserialize<float[][]>(stdout.Trim().Split('\n')[^1])!;
        scores.Should().HaveCount(count);
        return scores;
    }
}
