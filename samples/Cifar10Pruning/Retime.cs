using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.Platform;

namespace Cifar10Pruning;

/// <summary>
/// <c>--retime DIR</c>: trains nothing. For every run under DIR (a report.json beside its model zips), each model pruned to
/// a latency target is timed again against the run's dense model (dense.zip) with <see cref="Rounds"/> interleaved rounds
/// (<see cref="Speed.LatencyFraction"/>), where the comparison run spends <see cref="Speed.LatencyRounds"/>. The shapes are the run's own: only the estimate of
/// their latency ratio gets tighter. The figures go to <see cref="FileName"/> beside the report.
/// </summary>
internal static class Retime
{
    /// <summary>Interleaved rounds per model (each <see cref="Speed.LatencyForwards"/> forwards of the dense model and of the pruned one, batches of 64).</summary>
    public const int Rounds = 15;
    /// <summary>The file written beside each report.json.</summary>
    public const string FileName = "retimed.json";

    /// <summary>One model's latency ratio as the run reported it, as its calibration timed its plan, and timed again.</summary>
    internal sealed record Row(string Method, double TargetLatency, string Model, double? ReportedFraction, double? CalibratedFraction, double RetimedFraction);

    /// <summary>The content of <see cref="FileName"/>: one run's models timed again, and the machine that timed them.</summary>
    internal sealed record RetimedRun(int Seed, string Arch, string Date, MachineInfo Machine, int Rounds, int Forwards, IReadOnlyList<Row> Rows);

    /// <summary>Times every run under <paramref name="folder"/> again; returns the files written.</summary>
    public static IReadOnlyList<string> Run(string folder, int threads, ConsoleUi ui)
    {
        var runs = Results.Read(folder, "retime")
            .Select(r => (Dir: Path.GetDirectoryName(r.File)!, r.Report, Timed: r.Report.Entries.Where(e => e.TargetLatency is not null).ToArray()))
            .Where(r => r.Timed.Length > 0).ToArray();
        if (runs.Length == 0) throw new ArgumentException($"Option '--retime': no report under '{folder}' has a model pruned to a latency target (--target-latency).");
        // Every zip must be there before anything is timed.
        foreach (var (dir, _, timed) in runs)
            foreach (var zip in timed.Select(e => e.Model).Prepend("dense.zip").Select(m => Path.Combine(dir, m)))
                if (!File.Exists(zip)) throw new FileNotFoundException($"Option '--retime': '{zip}' does not exist (the run's model zips must stay beside its report.json).");

        TorchDevices.ApplyThreads(threads);
        var machine = MachineInfo.Probe();
        ui.Line($"Timing {Text.Count(runs.Sum(r => r.Timed.Length), "model")} of {Text.Count(runs.Length, "run")} again, {Rounds} rounds each, on {machine}.");
        var written = new List<string>();
        foreach (var (dir, report, timed) in runs)
        {
            var ml = new MLContext(report.Config.Seed);
            var dense = Load(ml, Path.Combine(dir, "dense.zip"));
            var rows = new List<Row>();
            foreach (var e in timed)
            {
                var pruned = Load(ml, Path.Combine(dir, e.Model));
                double fraction = Speed.LatencyFraction(dense, pruned, Rounds);
                rows.Add(new Row(e.Method, e.TargetLatency!.Value, e.Model, e.LatencyFraction, e.CalibratedLatencyFraction, fraction));
                ui.Line(Text.Invariant($"  seed {report.Config.Seed} {e.Method,-12} target {e.TargetLatency:F2}: reported {e.LatencyFraction:F3}, timed again {fraction:F3}"));
            }
            string path = Path.Combine(dir, FileName);
            var run = new RetimedRun(report.Config.Seed, report.Config.Arch,
                DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", System.Globalization.CultureInfo.InvariantCulture), machine, Rounds, Speed.LatencyForwards, rows);
            Text.WriteAtomically(path, JsonSerializer.Serialize(run, SampleReport.Json));
            written.Add(path);
        }
        return written;
    }

    /// <summary>Every <see cref="FileName"/> under <paramref name="folder"/>, in path order.</summary>
    public static IReadOnlyList<RetimedRun> Collect(string folder) =>
        Directory.GetFiles(folder, FileName, SearchOption.AllDirectories).Order(StringComparer.Ordinal)
            .Select(f => JsonSerializer.Deserialize<RetimedRun>(File.ReadAllText(f), SampleReport.Json) ?? throw new InvalidDataException($"'{f}' is not a re-timing file."))
            .ToArray();

    /// <summary>Whether <paramref name="fraction"/> lies within ±<paramref name="tolerance"/> (relative) of <paramref name="target"/>.</summary>
    public static bool Within(double fraction, double target, double tolerance = 0.10) => Math.Abs(fraction / target - 1) <= tolerance;

    private static ViTModelParameters Load(MLContext ml, string zip) => ComparisonRun.ViTOf(ml.Model.Load(zip, out _)).Model;
}
