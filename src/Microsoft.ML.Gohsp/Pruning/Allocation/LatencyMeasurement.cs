using System.Diagnostics;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Measures a <see cref="LatencyModel"/> (<see cref="LatencyModel.Measure"/>): registers every part of the table as one
/// timed entry (the attention part per head count and width, the MLP part per width, the fixed parts, the parts outside
/// the blocks, and the whole dense forward), times all entries once per round, round after round, so that a slow minute
/// of the machine touches every entry alike instead of a run of neighbouring widths, and builds the table from the medians.
/// </summary>
internal sealed class LatencyMeasurement : IDisposable
{
    private readonly ViTArchitecture _dense;
    private readonly List<Func<Tensor>> _parts = [];
    private readonly List<IDisposable> _owned = [];

    private LatencyMeasurement(ViTArchitecture dense) => _dense = dense;

    /// <summary>The entries of the table, as indices of the timed parts.</summary>
    private sealed record Entries(int[][] Attention, int[][] LastAttention, int[] Mlp, int[] LastMlp, int FixedFull, int FixedLast, int NonBlock);

    /// <summary>See <see cref="LatencyModel.Measure"/>.</summary>
    public static LatencyModel Measure(ViTArchitecture dense, int batch, int reps)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int d = dense.EmbedDim, n = dense.SequenceLength;
        int maxHeads = dense.Blocks.Max(b => b.Heads), maxDim = dense.Blocks.Max(b => Math.Max(b.QkDim, b.VDim));
        int maxMlp = dense.Blocks.Max(b => b.MlpHidden);
        int step = Math.Max(8, maxDim / 8);
        var headDims = Enumerable.Range(1, maxDim / step).Select(i => i * step).ToArray();
        int mlpStep = Math.Max(8, maxMlp / 12 / 8 * 8);
        var mlpWidths = Enumerable.Range(1, maxMlp / mlpStep).Select(i => i * mlpStep).Append(maxMlp).Distinct().ToArray();
        using var probe = new VisionTransformerModel(dense, seed: 0);
        probe.eval();
        long slice = Math.Min(batch, probe.InferenceSliceSize);
        var slices = VisionTransformerModel.SliceRanges(batch, (int)slice).Select(r => r.Length).ToArray();
        var x = randn(slices[0], n, d);
        var cls = randn(slices[0], 1, d);
        var images = randn(slices[0], dense.Channels, dense.ImageSize, dense.ImageSize);
        using var m = new LatencyMeasurement(dense);
        var entries = new Entries(
            m.AttentionParts(maxHeads, headDims, x, last: false), m.AttentionParts(maxHeads, headDims, x, last: true),
            m.MlpParts(mlpWidths, x, last: false), m.MlpParts(mlpWidths, cls, last: true),
            m.FixedPart(probe, x, x, adds: false), m.FixedPart(probe, x, cls, adds: true), m.NonBlockPart(probe, images));
        // the whole dense forward, timed in the same rounds: the entries are scaled so that the table's estimate of
        // the dense model equals it (parts timed alone run at a slightly different speed than in the chain)
        var batchImages = randn(batch, dense.Channels, dense.ImageSize, dense.ImageSize);
        int whole = m.Add(() => probe.forward(batchImages));
        var times = m.Time(reps);
        // medians; every slice of the batch runs the same shapes (the last one may be smaller: scale by its rows)
        double Raw(int i) => Median(times[i]) * slices.Sum() / slices[0];
        var raw = Table(entries, ids => ids.Select(Raw).ToArray(), Raw, batch, headDims, mlpWidths, device: "", config: "");
        double scale = Median(times[whole]) / raw.ModelMs(dense);
        double Ms(int i) => Raw(i) * scale;
        return Table(entries, ids => Monotone(ids.Select(Ms).ToArray()), Ms, batch, headDims, mlpWidths,
            MachineInfo.Probe().ToString(), LatencyModel.ConfigOf(dense, batch));
    }

    private static LatencyModel Table(Entries e, Func<int[], double[]> row, Func<int, double> ms, int batch, int[] headDims, int[] mlpWidths,
        string device, string config) => new()
        {
            Device = device,
            Config = config,
            Batch = batch,
            HeadDims = headDims,
            AttentionMs = e.Attention.Select(row).ToArray(),
            LastAttentionMs = e.LastAttention.Select(row).ToArray(),
            MlpWidths = mlpWidths,
            MlpMs = row(e.Mlp),
            LastMlpMs = row(e.LastMlp),
            FixedMs = ms(e.FixedFull),
            LastFixedMs = ms(e.FixedLast),
            NonBlockMs = ms(e.NonBlock),
        };

    // one timed entry; returns its index
    private int Add(Func<Tensor> f)
    {
        _parts.Add(f);
        return _parts.Count - 1;
    }

    private T Keep<T>(T m) where T : IDisposable
    {
        _owned.Add(m);
        return m;
    }

    /// <summary>[heads − 1][width index]: the attention part of a one-block model with that many heads of that width.</summary>
    private int[][] AttentionParts(int maxHeads, int[] headDims, Tensor x, bool last) => Enumerable.Range(1, maxHeads).Select(h => headDims.Select(w =>
    {
        var m = Keep(new VisionTransformerModel(Single(new ViTBlockSpec(h, w, w, 8)), seed: 0));
        m.eval();
        var attn = m.Blocks[0].attn;
        // a full block's attention part as Block runs it in float32: the output projection accumulates into the residual
        return Add(last ? () => attn.ForwardClassToken(x, m.Architecture.OutputTokens) : () =>
        {
            using var merged = attn.MergedHeadsInference(x);
            return Block.Accumulate(x.add(attn.proj.bias, Scalars.One), merged, attn.proj.weight);
        });
    }).ToArray()).ToArray();

    /// <summary>[width index]: the MLP part of a one-block model of that MLP width.</summary>
    private int[] MlpParts(int[] mlpWidths, Tensor input, bool last) => mlpWidths.Select(w =>
    {
        var m = Keep(new VisionTransformerModel(Single(new ViTBlockSpec(1, 8, 8, w)), seed: 0));
        m.eval();
        var mlp = m.Blocks[0].mlp;
        // a full block's MLP as Block runs it in float32: fc2 accumulates into the residual
        return Add(last ? () => mlp.forward(input) : () =>
        {
            using var h = mlp.fc1.forward(input);
            using var g = nn.functional.gelu(h);
            return Block.Accumulate(input.add(mlp.fc2.bias, Scalars.One), g, mlp.fc2.weight);
        });
    }).ToArray();

    // a full block normalises every token twice (its residual adds are inside the products); the last block
    // normalises every token once (its keys and values need them) and adds and normalises the class token's row
    private int FixedPart(VisionTransformerModel probe, Tensor first, Tensor rest, bool adds)
    {
        var norm = probe.Blocks[0].norm1;
        return Add(() =>
        {
            using (norm.forward(first)) { }
            if (adds) using (rest.add(rest)) { }
            var n2 = norm.forward(rest);
            if (!adds) return n2;
            using (n2) return rest.add(rest);
        });
    }

    // the patch embedding, the final norm of the class token and the head
    private int NonBlockPart(VisionTransformerModel probe, Tensor images) => Add(() =>
    {
        using var scope = NewDisposeScope();
        var tokens = probe.TokensBeforeBlocks(images);
        return probe.Logits(tokens).MoveToOuterDisposeScope();
    });

    private double[][] Time(int reps) => TimeRounds(_parts, reps);

    /// <summary>
    /// [part][round]: ms per run of every part, after two warm-up runs each; each round times every part (3 runs), so that
    /// a slow minute of the machine touches all parts alike.
    /// </summary>
    internal static double[][] TimeRounds(IReadOnlyList<Func<Tensor>> parts, int reps)
    {
        foreach (var f in parts) for (int i = 0; i < 2; i++) f().Dispose();
        var times = parts.Select(_ => new double[reps]).ToArray();
        for (int r = 0; r < reps; r++)
            for (int i = 0; i < parts.Count; i++)
            {
                var sw = Stopwatch.StartNew();
                for (int k = 0; k < RunsPerRound; k++) parts[i]().Dispose();
                times[i][r] = sw.Elapsed.TotalMilliseconds / RunsPerRound;
            }
        return times;
    }

    /// <summary>Runs of each part timed together in one round of <see cref="TimeRounds"/>.</summary>
    internal const int RunsPerRound = 3;

    /// <summary>The median of the timings (the upper one of an even count).</summary>
    internal static double Median(IEnumerable<double> ms)
    {
        var t = ms.Order().ToArray();
        return t[t.Length / 2];
    }

    private ViTArchitecture Single(ViTBlockSpec spec) =>
        _dense.WithBlocks([spec]);

    // a narrower structure must never cost more (the allocator's step costs stay non-negative): each timing is lowered
    // to the smallest timing of any wider entry. Noise on a shared machine only ever slows a timing down, so this drops
    // a slow outlier instead of raising every wider entry to it.
    private static double[] Monotone(double[] ms)
    {
        var r = (double[])ms.Clone();
        for (int i = r.Length - 2; i >= 0; i--) r[i] = Math.Min(r[i], r[i + 1]);
        return r;
    }

    /// <summary>Disposes the one-block models the entries run.</summary>
    public void Dispose()
    {
        foreach (var m in _owned) m.Dispose();
    }
}
