using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Inference latency of a ViT on this device, as a small table of measured timings: per block, the attention part
/// (qkv, attention core, output projection) by head count and per-head width, the MLP part by width and the fixed
/// part (norms, residual adds), for a full block and for the last block (which computes the class token only,
/// <see cref="VisionTransformerModel.forward"/>), plus the parts outside the blocks. Widths between measured ones are
/// interpolated linearly. Measured once per device and configuration and cached on disk under the CPU's identity
/// (<see cref="LoadOrMeasure"/>).
/// </summary>
public sealed record LatencyModel
{
    /// <summary>The machine and torch threads it was measured with (<see cref="MachineInfo"/>).</summary>
    public required string Device { get; init; }
    /// <summary>Embedding dim, tokens, batch and dense widths it was measured for.</summary>
    public required string Config { get; init; }
    /// <summary>Images per forward the timings are for.</summary>
    public required int Batch { get; init; }
    /// <summary>Measured per-head widths (q/k = v), ascending.</summary>
    public required int[] HeadDims { get; init; }
    /// <summary>[heads − 1][width index]: ms of a full block's attention part with that many heads of that width.</summary>
    public required double[][] AttentionMs { get; init; }
    /// <summary>[heads − 1][width index]: the same for the last block (class-token query, keys and values of every token).</summary>
    public required double[][] LastAttentionMs { get; init; }
    /// <summary>Measured MLP widths, ascending.</summary>
    public required int[] MlpWidths { get; init; }
    /// <summary>ms of a full block's MLP part at each width.</summary>
    public required double[] MlpMs { get; init; }
    /// <summary>ms of the last block's MLP part (class token only) at each width.</summary>
    public required double[] LastMlpMs { get; init; }
    /// <summary>ms of a full block's norms and residual adds.</summary>
    public required double FixedMs { get; init; }
    /// <summary>ms of the last block's norms and residual adds.</summary>
    public required double LastFixedMs { get; init; }
    /// <summary>ms outside the blocks (patch embedding, final norm, head).</summary>
    public required double NonBlockMs { get; init; }

    /// <summary>Estimated ms of block <paramref name="block"/> of a <paramref name="depth"/>-block model with these widths.</summary>
    public double BlockMs(int block, int depth, int heads, int qkDim, int vDim, int mlpWidth)
    {
        bool last = block == depth - 1;
        var attention = last ? LastAttentionMs : AttentionMs;
        int h = Math.Clamp(heads, 1, attention.Length);
        // q, k and v widths enter the qkv product alike, so a head of q/k dim dq and v dim dv costs about a head of (2dq + dv)/3
        double width = (2.0 * qkDim + vDim) / 3;
        double a = Interpolate(HeadDims, attention[h - 1], width) * heads / h;
        double m = Interpolate(MlpWidths, last ? LastMlpMs : MlpMs, mlpWidth);
        return (last ? LastFixedMs : FixedMs) + a + m;
    }

    /// <summary>Estimated ms of one forward of <see cref="Batch"/> images of <paramref name="arch"/>.</summary>
    public double ModelMs(ViTArchitecture arch) =>
        NonBlockMs + Enumerable.Range(0, arch.Depth).Sum(b =>
        {
            var s = arch.Blocks[b];
            return BlockMs(b, arch.Depth, s.Heads, s.QkDim, s.VDim, s.MlpHidden);
        });

    /// <summary>This model as the allocator's cost for <paramref name="arch"/>'s blocks, in nanoseconds.</summary>
    public IBlockCost CostOf(ViTArchitecture arch) => new Cost(this, arch.Depth);

    private sealed class Cost(LatencyModel model, int depth) : IBlockCost
    {
        public long NonBlock => (long)Math.Round(model.NonBlockMs * 1e6);
        public long Block(int block, int heads, int qkDim, int vDim, int mlpWidth) =>
            (long)Math.Round(model.BlockMs(block, depth, heads, qkDim, vDim, mlpWidth) * 1e6);
    }

    // linear in x between the measured points, linear towards 0 below the first, linear extrapolation above the last
    private static double Interpolate(int[] xs, double[] ys, double x)
    {
        if (x <= xs[0]) return ys[0] * Math.Max(x, 0) / xs[0];
        for (int i = 1; i < xs.Length; i++)
            if (x <= xs[i]) return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1]);
        int n = xs.Length;
        return n == 1 ? ys[0] * x / xs[0] : ys[n - 1] + (ys[n - 1] - ys[n - 2]) * (x - xs[n - 1]) / (xs[n - 1] - xs[n - 2]);
    }

    /// <summary>
    /// The cached model for <paramref name="dense"/> at <paramref name="batch"/> images on this machine and torch thread
    /// count, or a new measurement (written atomically to <paramref name="cacheDirectory"/>, default
    /// <c>%LOCALAPPDATA%/Microsoft.ML.Gohsp/latency</c> or <c>~/.local/share/Microsoft.ML.Gohsp/latency</c>).
    /// </summary>
    public static LatencyModel LoadOrMeasure(ViTArchitecture dense, int batch, string? cacheDirectory = null, int reps = 5)
    {
        ArgumentNullException.ThrowIfNull(dense);
        if (batch < 1) throw new ArgumentOutOfRangeException(nameof(batch), batch, "The batch size must be at least 1.");
        string device = MachineInfo.Probe().ToString(), config = ConfigOf(dense, batch);
        string path = CachePath(cacheDirectory, device, config);
        if (File.Exists(path))
        {
            try
            {
                var cached = JsonSerializer.Deserialize<LatencyModel>(File.ReadAllText(path));
                if (cached is not null && cached.Device == device && cached.Config == config) return cached;
            }
            catch (JsonException) { } // a damaged cache is measured again and overwritten
        }
        var measured = Measure(dense, batch, reps);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        AtomicFile.Write(path, s => JsonSerializer.Serialize(s, measured));
        return measured;
    }

    /// <summary>The cache file of a device and configuration (a hash of both in the name; the file repeats them).</summary>
    public static string CachePath(string? cacheDirectory, string device, string config)
    {
        var dir = cacheDirectory ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create),
            "Microsoft.ML.Gohsp", "latency");
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(device + "\n" + config)))[..16].ToLowerInvariant();
        return Path.Combine(dir, $"latency-{hash}.json");
    }

    // the table layout and measurement method: a cache written by another version is measured again
    private const int TableVersion = 3;

    private static string ConfigOf(ViTArchitecture a, int batch) =>
        $"table v{TableVersion}, embed {a.EmbedDim}, tokens {a.SequenceLength}, depth {a.Depth}, batch {batch}, dense {string.Join(" ", a.Blocks.Distinct().Select(b => $"{b.Heads}x{b.QkDim}/{b.VDim}-{b.MlpHidden}"))}";

    /// <summary>
    /// Measures the table for <paramref name="dense"/> (random weights; speed does not depend on them): every part timed
    /// alone without autograd on warm inputs as the block runs it, in the slices <see cref="VisionTransformerModel.forward"/>
    /// runs the dense model in, medians of <paramref name="reps"/> rounds; every entry is then scaled by one factor so that
    /// the table's estimate of the dense model equals the dense forward timed in the same rounds.
    /// </summary>
    public static LatencyModel Measure(ViTArchitecture dense, int batch, int reps = 5)
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
        var owned = new List<IDisposable>();
        // every timing is one entry; all entries are timed once per round, round after round, so that a slow minute of
        // the machine touches every entry alike instead of a run of neighbouring widths
        var parts = new List<Func<Tensor>>();
        int Add(Func<Tensor> f) { parts.Add(f); return parts.Count - 1; }
        T Keep<T>(T m) where T : IDisposable { owned.Add(m); return m; }
        int[][] AttentionParts(bool last) => Enumerable.Range(1, maxHeads).Select(h => headDims.Select(w =>
        {
            var m = Keep(new VisionTransformerModel(Single(dense, new ViTBlockSpec(h, w, w, 8)), seed: 0));
            m.eval();
            var attn = m.Blocks[0].attn;
            // a full block's attention part as Block runs it in float32: the output projection accumulates into the residual
            return Add(last ? () => attn.ForwardClassToken(x) : () =>
            {
                using var merged = attn.MergedHeadsInference(x);
                return Block.Accumulate(x.add(attn.proj.bias, Scalars.One), merged, attn.proj.weight);
            });
        }).ToArray()).ToArray();
        int[] MlpParts(Tensor input, bool last) => mlpWidths.Select(w =>
        {
            var m = Keep(new VisionTransformerModel(Single(dense, new ViTBlockSpec(1, 8, 8, w)), seed: 0));
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
        var norm = probe.Blocks[0].norm1;
        // a full block normalises every token twice (its residual adds are inside the products); the last block
        // normalises every token once (its keys and values need them) and adds and normalises the class token's row
        int FixedPart(Tensor first, Tensor rest, bool adds) => Add(() =>
        {
            using (norm.forward(first)) { }
            if (adds) using (rest.add(rest)) { }
            var n2 = norm.forward(rest);
            if (!adds) return n2;
            using (n2) return rest.add(rest);
        });
        try
        {
            var attention = AttentionParts(last: false);
            var lastAttention = AttentionParts(last: true);
            var mlp = MlpParts(x, last: false);
            var lastMlp = MlpParts(cls, last: true);
            int fixedFull = FixedPart(x, x, adds: false), fixedLast = FixedPart(x, cls, adds: true);
            int nonBlock = Add(() =>
            {
                using var tokens = probe.TokensBeforeBlocks(images);
                using var c = tokens.select(1, 0);
                using var normed = probe.FinalNorm.forward(c);
                return probe.Head.forward(normed);
            });
            // the whole dense forward, timed in the same rounds: the entries are scaled so that the table's estimate of
            // the dense model equals it (parts timed alone run at a slightly different speed than in the chain)
            var batchImages = randn(batch, dense.Channels, dense.ImageSize, dense.ImageSize);
            int whole = Add(() => probe.forward(batchImages));
            foreach (var f in parts) for (int i = 0; i < 2; i++) f().Dispose();
            var times = parts.Select(_ => new double[reps]).ToArray();
            for (int r = 0; r < reps; r++)
                for (int i = 0; i < parts.Count; i++)
                {
                    var sw = Stopwatch.StartNew();
                    for (int k = 0; k < 3; k++) parts[i]().Dispose();
                    times[i][r] = sw.Elapsed.TotalMilliseconds / 3;
                }
            // medians; every slice of the batch runs the same shapes (the last one may be smaller: scale by its rows)
            double Median(int i) { var t = times[i].Order().ToArray(); return t[reps / 2]; }
            double Raw(int i) => Median(i) * slices.Sum() / slices[0];
            var raw = new LatencyModel
            {
                Device = "", Config = "", Batch = batch, HeadDims = headDims,
                AttentionMs = attention.Select(r => r.Select(Raw).ToArray()).ToArray(),
                LastAttentionMs = lastAttention.Select(r => r.Select(Raw).ToArray()).ToArray(),
                MlpWidths = mlpWidths, MlpMs = mlp.Select(Raw).ToArray(), LastMlpMs = lastMlp.Select(Raw).ToArray(),
                FixedMs = Raw(fixedFull), LastFixedMs = Raw(fixedLast), NonBlockMs = Raw(nonBlock),
            };
            double scale = Median(whole) / raw.ModelMs(dense);
            double Ms(int i) => Raw(i) * scale;
            double[] Row(int[] ids) => Monotone(ids.Select(Ms).ToArray());
            return new LatencyModel
            {
                Device = MachineInfo.Probe().ToString(),
                Config = ConfigOf(dense, batch),
                Batch = batch,
                HeadDims = headDims,
                AttentionMs = attention.Select(Row).ToArray(),
                LastAttentionMs = lastAttention.Select(Row).ToArray(),
                MlpWidths = mlpWidths,
                MlpMs = Row(mlp),
                LastMlpMs = Row(lastMlp),
                FixedMs = Ms(fixedFull),
                LastFixedMs = Ms(fixedLast),
                NonBlockMs = Ms(nonBlock),
            };
        }
        finally
        {
            foreach (var m in owned) m.Dispose();
        }
    }


    private static ViTArchitecture Single(ViTArchitecture dense, ViTBlockSpec spec) =>
        new(dense.ImageSize, dense.PatchSize, dense.Channels, dense.EmbedDim, dense.NumClasses, [spec], dense.LayerNormEps);

    // a narrower structure must never cost more (the allocator's step costs stay non-negative): each timing is lowered
    // to the smallest timing of any wider entry. Noise on a shared machine only ever slows a timing down, so this drops
    // a slow outlier instead of raising every wider entry to it.
    private static double[] Monotone(double[] ms)
    {
        var r = (double[])ms.Clone();
        for (int i = r.Length - 2; i >= 0; i--) r[i] = Math.Min(r[i], r[i + 1]);
        return r;
    }
}
