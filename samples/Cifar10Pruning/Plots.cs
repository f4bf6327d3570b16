using Microsoft.ML.Gohsp;
using OxyPlot;
using OxyPlot.Axes;
using OxyPlot.Legends;
using OxyPlot.Series;

namespace Cifar10Pruning;

/// <summary>PNG plots with OxyPlot (rendered by SkiaSharp, the same native library ML.NET's image support loads).</summary>
internal static class Plots
{
    private static readonly OxyColor[] Palette = [OxyColor.FromRgb(0x1f, 0x77, 0xb4), OxyColor.FromRgb(0xff, 0x7f, 0x0e), OxyColor.FromRgb(0x2c, 0xa0, 0x2c), OxyColor.FromRgb(0xd6, 0x27, 0x28),
        OxyColor.FromRgb(0x94, 0x67, 0xbd), OxyColor.FromRgb(0x8c, 0x56, 0x4b), OxyColor.FromRgb(0x7f, 0x7f, 0x7f)];

    /// <summary>A point of the accuracy/size plot: mean and standard deviation over seeds (0 for a single run).</summary>
    public sealed record Point(double Params, double Top1, double Top1Std, string Label);

    /// <summary>Top-1 (%) against parameters (millions), one line per method, the dense reference as a star.</summary>
    public static string Top1VsParams(string path, string title, Point dense, IEnumerable<(string Method, IReadOnlyList<Point> Points)> methods)
    {
        var model = NewModel(title);
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "parameters (millions)", MajorGridlineStyle = LineStyle.Dot, Minimum = 0, MaximumPadding = 0.08 });
        var series = methods.ToArray();
        var all = series.SelectMany(m => m.Points).Append(dense).ToArray();
        double lo = all.Min(p => p.Top1 - p.Top1Std) * 100, hi = all.Max(p => p.Top1 + p.Top1Std) * 100, pad = Math.Max(0.5, 0.1 * (hi - lo));
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Left, Title = "top-1 (%)", MajorGridlineStyle = LineStyle.Dot, Minimum = lo - pad, Maximum = hi + pad });
        int i = 0;
        foreach (var (method, points) in series)
        {
            var color = Palette[i++ % Palette.Length];
            var line = new ScatterErrorSeries { Title = method, MarkerType = MarkerType.Circle, MarkerSize = 4, MarkerFill = color, ErrorBarColor = color };
            var connect = new LineSeries { Color = color, StrokeThickness = 1.5 };
            foreach (var p in points.OrderBy(p => p.Params))
            {
                // OxyPlot draws ErrorY as the whole bar (±ErrorY/2): twice the std gives ± one std
                line.Points.Add(new ScatterErrorPoint(p.Params / 1e6, p.Top1 * 100, 0, 2 * p.Top1Std * 100));
                connect.Points.Add(new DataPoint(p.Params / 1e6, p.Top1 * 100));
            }
            model.Series.Add(connect);
            model.Series.Add(line);
        }
        model.Series.Add(new ScatterErrorSeries
        {
            Title = "dense reference", MarkerType = MarkerType.Star, MarkerSize = 8, MarkerStroke = OxyColors.Black, MarkerStrokeThickness = 1.5,
            ItemsSource = new[] { new ScatterErrorPoint(dense.Params / 1e6, dense.Top1 * 100, 0, 2 * dense.Top1Std * 100) },
        });
        return Save(model, path);
    }

    /// <summary>
    /// Paired differences (points of top-1) against sparsity: one series per comparison, each point the mean over seeds with
    /// its 95% confidence interval as the error bar, and a zero line.
    /// </summary>
    public static string PairedDifferences(string path, string title, string axisTitle, IEnumerable<(string Label, IReadOnlyList<(double Sparsity, PairedDifference Difference)> Points)> series)
    {
        var model = NewModel(title);
        var all = series.ToArray();
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = axisTitle, MajorGridlineStyle = LineStyle.Dot, MinimumPadding = 0.1, MaximumPadding = 0.1 });
        // the axis spans the intervals and zero (OxyPlot's automatic range ignores error bars)
        var ds = all.SelectMany(s => s.Points.Select(p => p.Difference)).ToArray();
        double lo = Math.Min(0, ds.Select(d => d.Low).Where(double.IsFinite).DefaultIfEmpty(0).Min()) * 100;
        double hi = Math.Max(0, ds.Select(d => d.High).Where(double.IsFinite).DefaultIfEmpty(0).Max()) * 100;
        double pad = Math.Max(0.5, 0.08 * (hi - lo));
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Left, Title = "top-1 difference (points), 95% CI", MajorGridlineStyle = LineStyle.Dot, Minimum = lo - pad, Maximum = hi + pad });
        var zero = new LineSeries { Color = OxyColors.Gray, StrokeThickness = 1, LineStyle = LineStyle.Dash };
        var xs = all.SelectMany(s => s.Points.Select(p => p.Sparsity * 100)).DefaultIfEmpty(0).ToArray();
        zero.Points.Add(new DataPoint(xs.Min() - 5, 0));
        zero.Points.Add(new DataPoint(xs.Max() + 5, 0));
        model.Series.Add(zero);
        int i = 0;
        foreach (var (label, points) in all)
        {
            var color = Palette[i % Palette.Length];
            double offset = (i++ - (all.Length - 1) / 2.0) * 1.2;   // side by side at each sparsity
            var dots = new ScatterErrorSeries { Title = label, MarkerType = MarkerType.Circle, MarkerSize = 4, MarkerFill = color, ErrorBarColor = color };
            foreach (var (sparsity, d) in points.OrderBy(p => p.Sparsity))
                // OxyPlot draws ErrorY as the whole bar: the interval's width
                dots.Points.Add(new ScatterErrorPoint(sparsity * 100 + offset, d.Mean * 100, 0, (d.High - d.Low) * 100));
            model.Series.Add(dots);
        }
        return Save(model, path);
    }

    /// <summary>
    /// The pruned architecture per block: kept heads, q/k dim per head, v dim per head and MLP width as % of the dense block
    /// (horizontal bars, block 0 on top; the absolute shape of each block is in its axis label).
    /// </summary>
    public static string Architecture(string path, ModelEntry entry)
    {
        var d = entry.Blocks.FirstOrDefault();
        string dense = d is null ? "" : Text.Invariant($"\ndense block: {d.DenseHeads} heads, q/k {d.DenseQkDim}, v {d.DenseVDim}, MLP {d.DenseMlpWidth}");
        string budget = entry.TargetLatency is double f ? Text.Invariant($"{f * 100:0}% of the dense latency") : Text.Invariant($"{entry.Sparsity * 100:0}% sparsity");
        var model = NewModel(Text.Invariant($"{entry.Method} at {budget}: {entry.Params:N0} parameters{dense}"));
        model.Axes.Add(new CategoryAxis
        {
            Position = AxisPosition.Left, StartPosition = 1, EndPosition = 0, // block 0 on top
            ItemsSource = entry.Blocks.Select((b, i) => Text.Invariant($"block {i}: {b.Heads}h qk{b.QkDim} v{b.VDim} mlp{b.MlpWidth}")).ToArray(),
        });
        model.Axes.Add(new LinearAxis { Position = AxisPosition.Bottom, Title = "kept (% of the dense block)", Minimum = 0, Maximum = 112, MajorGridlineStyle = LineStyle.Dot });
        (string Name, Func<BlockShape, int> Kept, Func<BlockShape, int> Dense)[] kinds =
        [
            ("heads", b => b.Heads, b => b.DenseHeads),
            ("q/k dim per head", b => b.QkDim, b => b.DenseQkDim),
            ("v dim per head", b => b.VDim, b => b.DenseVDim),
            ("MLP width", b => b.MlpWidth, b => b.DenseMlpWidth),
        ];
        for (int k = 0; k < kinds.Length; k++)
        {
            var (name, kept, full) = kinds[k];
            var series = new BarSeries { Title = name, FillColor = Palette[k], LabelPlacement = LabelPlacement.Outside, LabelFormatString = "{0:0}%", FontSize = 9 };
            foreach (var b in entry.Blocks) series.Items.Add(new BarItem(100.0 * kept(b) / full(b)));
            model.Series.Add(series);
        }
        return Save(model, path, height: 160 + 90 * Math.Max(1, entry.Blocks.Count));
    }

    private static PlotModel NewModel(string title)
    {
        var model = new PlotModel { Title = title, TitleFontSize = 13, Background = OxyColors.White, DefaultFont = "DejaVu Sans" };
        model.Legends.Add(new Legend { LegendPosition = LegendPosition.RightTop, LegendPlacement = LegendPlacement.Outside });
        return model;
    }

    private static string Save(PlotModel model, string path, int height = 560)
    {
        // No text shaping: it needs HarfBuzz's native library, which plain Latin labels do not.
        var exporter = new OxyPlot.SkiaSharp.PngExporter { Width = 900, Height = height, UseTextShaping = false };
        AtomicFile.Write(path, s => exporter.Export(model, s));
        return path;
    }
}
