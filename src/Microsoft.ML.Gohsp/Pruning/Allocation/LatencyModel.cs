using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML.Gohsp.Diagnostics;
using Microsoft.ML.Gohsp.VisionTransformer;

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

    internal static string ConfigOf(ViTArchitecture a, int batch) =>
        $"table v{TableVersion}, embed {a.EmbedDim}, tokens {a.SequenceLength}, depth {a.Depth}, batch {batch}, dense {string.Join(" ", a.Blocks.Distinct().Select(b => $"{b.Heads}x{b.QkDim}/{b.VDim}-{b.MlpHidden}"))}";

    /// <summary>
    /// Measures the table for <paramref name="dense"/> (random weights; speed does not depend on them): every part timed
    /// alone without autograd on warm inputs as the block runs it, in the slices <see cref="VisionTransformerModel.forward"/>
    /// runs the dense model in, medians of <paramref name="reps"/> rounds; every entry is then scaled by one factor so that
    /// the table's estimate of the dense model equals the dense forward timed in the same rounds.
    /// </summary>
    public static LatencyModel Measure(ViTArchitecture dense, int batch, int reps = 5) => LatencyMeasurement.Measure(dense, batch, reps);
}
