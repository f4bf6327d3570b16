using System.Diagnostics;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Launches a console app of this repository, built next to the tests (the test project references it with
/// ReferenceOutputAssembly=false), in a new process.
/// </summary>
internal static class BuiltApp
{
    /// <summary>
    /// The app's dll: the tests run from <c>…/bin/&lt;Config&gt;/&lt;tfm&gt;</c> (test/Microsoft.ML.Gohsp.Tests/, or
    /// artifacts/mlnet&lt;version&gt;/Microsoft.ML.Gohsp.Tests/ for the run on another ML.NET) →
    /// <c>&lt;projectDir&gt;/bin/&lt;Config&gt;/&lt;tfm&gt;/&lt;assembly&gt;.dll</c>, projectDir relative to the repository
    /// root (the first folder above that holds Microsoft.ML.Gohsp.sln).
    /// </summary>
    public static string Locate(string projectDir, string assemblyName)
    {
        var baseDir = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string tfm = baseDir.Name, config = baseDir.Parent!.Name;
        var root = baseDir;
        while (!File.Exists(Path.Combine(root.FullName, "Microsoft.ML.Gohsp.sln")))
            root = root.Parent ?? throw new DirectoryNotFoundException($"No Microsoft.ML.Gohsp.sln above {AppContext.BaseDirectory}.");
        return Path.Combine(root.FullName, projectDir, "bin", config, tfm, assemblyName + ".dll");
    }

    /// <summary>Runs <c>dotnet &lt;dll&gt; args…</c> and returns its exit code and output (killed after <paramref name="timeout"/>).</summary>
    public static (int ExitCode, string StdOut, string StdErr) Run(string dll, IEnumerable<string> args, TimeSpan timeout)
    {
        if (!File.Exists(dll)) throw new FileNotFoundException($"{dll} is not built; it is built with the test project.", dll);
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{Path.GetFileName(dll)} {string.Join(" ", args)} did not finish within {timeout}.");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
