using Microsoft.ML.Gohsp.Training;
using Spectre.Console;

namespace Cifar10Pruning;

/// <summary>
/// Console output of the sample: live Spectre.Console progress bars (one per training stage) on an interactive terminal,
/// plain log lines (one per finished epoch) when the output is redirected — CI logs and tests stay readable.
/// </summary>
internal sealed class ConsoleUi(bool plain)
{
    /// <summary>True when progress is drawn as live bars.</summary>
    public bool Interactive { get; } = !plain && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive
                                       && AnsiConsole.Profile.Capabilities.Ansi;

    /// <summary>Writes a line (plain text, never interpreted as markup).</summary>
    public void Line(string text = "")
    {
        if (Interactive) AnsiConsole.WriteLine(text);
        else Console.WriteLine(text);
    }

    /// <summary>Writes a section heading.</summary>
    public void Heading(string text)
    {
        if (Interactive) AnsiConsole.Write(new Rule($"[bold]{Markup.Escape(text)}[/]").LeftJustified());
        else Console.WriteLine($"== {text}");
    }

    /// <summary>
    /// Runs <paramref name="work"/> with an <see cref="IProgress{T}"/> that the ViT trainer and the pruning estimators report to
    /// (every stage they report — dense, soft pruning, fine-tuning… — gets its own bar).
    /// </summary>
    public T Train<T>(string title, Func<IProgress<ViTTrainingProgress>, T> work)
    {
        if (!Interactive)
        {
            Console.WriteLine($"{title}...");
            return work(new LineProgress());
        }
        AnsiConsole.MarkupLine($"[grey]{Markup.Escape(title)}[/]");
        return Columns(AnsiConsole.Progress()).Start(ctx => work(new BarProgress(ctx)));
    }

    /// <summary>Download progress (bytes read, total when known).</summary>
    public async Task<T> DownloadAsync<T>(string title, Func<IProgress<(long read, long? total)>, Task<T>> work)
    {
        if (!Interactive)
        {
            Console.WriteLine($"{title}...");
            int lastDecile = -1;
            return await work(new SyncProgress<(long read, long? total)>(p =>
            {
                if (p.total is not long t || t <= 0) return;
                int decile = (int)(10 * p.read / t);
                if (decile == lastDecile) return;
                lastDecile = decile;
                Console.WriteLine($"  {p.read / 1048576.0:F1}/{t / 1048576.0:F1} MiB");
            }));
        }
        return await Columns(AnsiConsole.Progress()).StartAsync(async ctx =>
        {
            var task = ctx.AddTask(Markup.Escape(title), maxValue: 1);
            return await work(new SyncProgress<(long read, long? total)>(p =>
            {
                if (p.total is long t && t > 0) { task.MaxValue = t; task.Value = p.read; }
                else task.IsIndeterminate = true;
            }));
        });
    }

    private static Progress Columns(Progress p) => p.AutoClear(false).HideCompleted(false).Columns(
        new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
        new ElapsedTimeColumn(), new RemainingTimeColumn());

    private static string EpochLine(ViTTrainingProgress p)
    {
        var s = string.Create(Text.Culture,
            $"[{p.Stage}] epoch {p.Epoch}/{p.TotalEpochs}: loss {p.Loss:F3}, train acc {p.TrainAccuracy:P1}, {p.ImagesPerSecond:F0} img/s");
        return p.ValidationAccuracy is double v ? s + string.Create(Text.Culture, $", validation acc {v:P2}") : s;
    }

    /// <summary>Plain mode: one line per finished epoch.</summary>
    private sealed class LineProgress : IProgress<ViTTrainingProgress>
    {
        public void Report(ViTTrainingProgress p)
        {
            if (p.EpochCompleted) Console.WriteLine("  " + EpochLine(p));
        }
    }

    /// <summary>Interactive mode: one bar per stage, advanced every step; a summary line per finished epoch.</summary>
    private sealed class BarProgress(ProgressContext ctx) : IProgress<ViTTrainingProgress>
    {
        private readonly Dictionary<string, ProgressTask> _tasks = new();

        public void Report(ViTTrainingProgress p)
        {
            if (!_tasks.TryGetValue(p.Stage, out var task))
                _tasks[p.Stage] = task = ctx.AddTask(Markup.Escape(p.Stage), maxValue: (double)p.TotalEpochs * p.StepsPerEpoch);
            task.Value = (double)(p.Epoch - 1) * p.StepsPerEpoch + p.Step;
            task.Description = Markup.Escape(string.Create(Text.Culture,
                $"{p.Stage,-20} epoch {p.Epoch}/{p.TotalEpochs}  loss {p.Loss:F3}  {p.ImagesPerSecond,5:F0} img/s"));
            if (p.EpochCompleted) AnsiConsole.MarkupLine($"  [grey]{Markup.Escape(EpochLine(p))}[/]");
        }
    }
}

/// <summary>An <see cref="IProgress{T}"/> that reports synchronously (<see cref="Progress{T}"/> posts to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
