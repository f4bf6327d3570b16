using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>How head-to-head edge weights are measured on calibration data.</summary>
public enum HeadSimilarity
{
    /// <summary>Mean cosine similarity of the heads' contributions to the residual stream (negatives clamped to 0).</summary>
    ContributionCosine = 0,
    /// <summary>exp(−Jensen–Shannon divergence) between the heads' attention maps, averaged over queries and images.</summary>
    AttentionMapJensenShannon = 1,
}

/// <summary>How the stationary probability of a head is read as importance.</summary>
public enum HeadRankingDirection
{
    /// <summary>A head that is central in the similarity graph (high stationary probability) is important: keep it.</summary>
    CentralIsImportant = 0,
    /// <summary>A central head is redundant (others resemble it): prune it first.</summary>
    CentralIsRedundant = 1,
}

/// <summary>What the stationary distribution of a block's head chain is computed from.</summary>
public enum HeadScore
{
    /// <summary>The similarity graph alone: PageRank with a uniform teleport vector.</summary>
    Graph = 0,
    /// <summary>
    /// Personalised PageRank: transitions from the similarity graph, teleport vector proportional to each head's Taylor
    /// saliency Σ|w·∂L/∂w| on the calibration images. A salient head keeps rank; a head whose work others duplicate
    /// shares its mass with them.
    /// </summary>
    SaliencyPersonalizedGraph = 1,
}

/// <summary>Per-block result of the graph ranking.</summary>
/// <param name="Similarity">Head × head edge weights (diagonal 0).</param>
/// <param name="Stationary">Stationary distribution of the damped Markov chain (sums to 1).</param>
/// <param name="Iterations">Power iterations used.</param>
public sealed record BlockHeadRanking(double[,] Similarity, double[] Stationary, int Iterations)
{
    /// <summary>Importance per head for a direction, normalised by the block's head count (mean 1) so blocks compare.</summary>
    public double[] Importance(HeadRankingDirection direction) => ImportanceOf(Stationary, direction);

    /// <summary>Importance per head (mean 1 per block) from a block's stationary distribution.</summary>
    public static double[] ImportanceOf(IReadOnlyList<double> stationary, HeadRankingDirection direction)
    {
        int h = stationary.Count;
        return stationary.Select(p => direction == HeadRankingDirection.CentralIsImportant ? p * h : (1.0 / h - p) * h + 1).ToArray();
    }
}

/// <summary>
/// GOHSP stage 1: per block, a graph whose nodes are attention heads and whose edges are head-to-head similarities
/// measured on calibration images, turned into a Markov chain (row-normalised, PageRank-style damping so it is
/// ergodic), whose stationary distribution ranks the heads.
/// </summary>
public static class HeadGraphRanking
{
    /// <summary>
    /// Stationary distribution π = πP of the chain P = damping·rownorm(W) + (1 − damping)/n, by power iteration until
    /// ‖π_{t+1} − π_t‖₁ &lt; <paramref name="tolerance"/>. Rows of W that sum to 0 become uniform (dangling nodes).
    /// </summary>
    /// <param name="weights">Non-negative edge weights W (square).</param>
    /// <param name="damping">Probability of following an edge, in [0, 1).</param>
    /// <param name="tolerance">L1 change of π at which the iteration stops.</param>
    /// <param name="maxIterations">Iteration cap.</param>
    /// <param name="teleport">
    /// Personalisation vector v (non-negative, normalised here): the chain jumps to node j with probability (1 − damping)·v_j,
    /// and a row of zeros jumps by v. Null: uniform (plain PageRank).
    /// </param>
    public static (double[] Pi, int Iterations) StationaryDistribution(double[,] weights, double damping = 0.85, double tolerance = 1e-10, int maxIterations = 10_000,
        IReadOnlyList<double>? teleport = null)
    {
        int n = weights.GetLength(0);
        if (n == 0 || weights.GetLength(1) != n) throw new ArgumentException("The weight matrix must be square and non-empty.", nameof(weights));
        if (!(damping >= 0 && damping < 1)) throw new ArgumentOutOfRangeException(nameof(damping), damping, "Damping must be in [0, 1).");
        var v = Enumerable.Repeat(1.0 / n, n).ToArray();
        if (teleport is not null)
        {
            if (teleport.Count != n) throw new ArgumentException($"The teleport vector has {teleport.Count} entries; the graph has {n} nodes.", nameof(teleport));
            if (teleport.Any(t => !(t >= 0) || double.IsInfinity(t))) throw new ArgumentException("Teleport weights must be finite and non-negative.", nameof(teleport));
            double sum = teleport.Sum();
            if (sum > 0) v = teleport.Select(t => t / sum).ToArray();
        }
        var p = new double[n, n];
        for (int i = 0; i < n; i++)
        {
            double row = 0;
            for (int j = 0; j < n; j++)
            {
                double w = weights[i, j];
                if (w < 0 || double.IsNaN(w)) throw new ArgumentException($"Edge weights must be non-negative (W[{i},{j}] = {w}).", nameof(weights));
                row += w;
            }
            for (int j = 0; j < n; j++)
                p[i, j] = damping * (row > 0 ? weights[i, j] / row : v[j]) + (1 - damping) * v[j];
        }
        var pi = Enumerable.Repeat(1.0 / n, n).ToArray();
        var next = new double[n];
        for (int it = 1; it <= maxIterations; it++)
        {
            Array.Clear(next);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) next[j] += pi[i] * p[i, j];
            double s = next.Sum(), delta = 0;
            for (int j = 0; j < n; j++) { next[j] /= s; delta += Math.Abs(next[j] - pi[j]); }
            (pi, next) = (next, pi);
            if (delta < tolerance) return (pi, it);
        }
        return (pi, maxIterations);
    }

    /// <summary>Ranks the heads of every block on calibration images (raw pixels, normalised with <paramref name="preprocessing"/>).</summary>
    /// <param name="model">The model whose heads are ranked (not modified).</param>
    /// <param name="calibration">Calibration images.</param>
    /// <param name="preprocessing">Pixel normalisation (and evaluation batch size).</param>
    /// <param name="similarity">Edge weights.</param>
    /// <param name="damping">PageRank damping.</param>
    /// <param name="tolerance">Power-iteration tolerance.</param>
    /// <param name="teleport">Per block, the personalisation vector of its chain (see <see cref="StationaryDistribution"/>); null: uniform.</param>
    public static BlockHeadRanking[] Rank(VisionTransformerModel model, ImageTensorData calibration, ViTTrainingOptions preprocessing,
        HeadSimilarity similarity = HeadSimilarity.ContributionCosine, double damping = 0.85, double tolerance = 1e-10,
        IReadOnlyList<double[]>? teleport = null)
    {
        if (teleport is not null && teleport.Count != model.Architecture.Depth)
            throw new ArgumentException($"teleport has {teleport.Count} blocks; the model has {model.Architecture.Depth}.", nameof(teleport));
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(calibration);
        if (calibration.Count == 0) throw new ArgumentException("The calibration set has no rows.", nameof(calibration));
        var a = model.Architecture;
        var sums = a.Blocks.Select(b => new double[b.Heads, b.Heads]).ToArray();
        var device = model.parameters().First().device;
        TrainingLoop.ForEachInputBatch(model, calibration, preprocessing, device, (x, _) =>
        {
            var t = model.TokensBeforeBlocks(x);
            for (int b = 0; b < a.Depth; b++)
            {
                var blk = model.Blocks[b];
                var n1 = blk.norm1.forward(t);
                var sim = similarity == HeadSimilarity.ContributionCosine
                    ? ContributionCosine(blk.attn, n1)
                    : AttentionJensenShannon(blk.attn, n1);
                var s = sim.sum(new long[] { 0 }).cpu().to(ScalarType.Float64).data<double>().ToArray();  // summed over images
                int h = a.Blocks[b].Heads;
                for (int i = 0; i < h; i++) for (int j = 0; j < h; j++) sums[b][i, j] += s[i * h + j];
                t = blk.forward(t);
            }
        });
        long images = calibration.Count;
        var result = new BlockHeadRanking[a.Depth];
        for (int b = 0; b < a.Depth; b++)
        {
            int h = a.Blocks[b].Heads;
            var w = new double[h, h];
            for (int i = 0; i < h; i++) for (int j = 0; j < h; j++) w[i, j] = i == j ? 0 : Math.Max(0, sums[b][i, j] / images);
            var (pi, it) = StationaryDistribution(w, damping, tolerance, teleport: teleport?[b]);
            result[b] = new BlockHeadRanking(w, pi, it);
        }
        return result;
    }

    /// <summary>
    /// Taylor saliency of every head on labelled calibration images: Σ|w·∂L/∂w| over the head's q, k, v rows (with biases)
    /// and its output-projection columns, L the mean cross-entropy. The model's weights are not changed; its gradients are
    /// cleared afterwards.
    /// </summary>
    public static double[][] TaylorSaliency(VisionTransformerModel model, ImageTensorData calibration, ViTTrainingOptions preprocessing) =>
        TaylorImportance.Heads(model, calibration, preprocessing);

    /// <summary>[B, h, h] cosine similarity of head contributions (head output through its slice of the output projection).</summary>
    private static Tensor ContributionCosine(Attention attn, Tensor x)
    {
        var spec = attn.Spec;
        var o = attn.HeadOutputs(x);                                      // [B, h, N, dv]
        var w = attn.proj.weight.view(-1, spec.Heads, spec.VDim);         // [D, h, dv]: columns head-major (QkvLayout.ProjColumn)
        var contrib = einsum("bhnv,dhv->bhnd", o, w.to(o.dtype)).flatten(2).to(ScalarType.Float32); // [B, h, N·D]
        var unit = nn.functional.normalize(contrib, p: 2, dim: 2);
        return matmul(unit, unit.transpose(1, 2));                         // [B, h, h]
    }

    /// <summary>[B, h, h] exp(−JS) between attention maps, averaged over query tokens.</summary>
    private static Tensor AttentionJensenShannon(Attention attn, Tensor x)
    {
        // explicit Scalars held across the native calls (an implicit one can be finalized mid-call)
        using var floor = 1e-12.ToScalar();
        using var half = 0.5.ToScalar();
        var p = attn.AttentionMaps(x).clamp_min(floor);                   // [B, h, N, N]
        var pi = p.unsqueeze(2); var pj = p.unsqueeze(1);                  // [B, h, 1, N, N], [B, 1, h, N, N]
        var m = pi.add(pj, Scalars.One).mul_(half);
        var js = (pi * (pi / m).log()).sum(-1).add_((pj * (pj / m).log()).sum(-1), Scalars.One).mul_(half); // [B, h, h, N]
        return js.neg_().exp_().mean(new long[] { -1 });
    }

    /// <summary>
    /// Chooses the heads to keep: removes round(fraction × total heads) heads with the lowest block-normalised
    /// importance, never emptying a block. Returns the kept head indices per block (ascending).
    /// </summary>
    public static int[][] SelectHeads(IReadOnlyList<double[]> importance, double headPruningFraction, int minHeadsPerBlock = 1)
    {
        if (!(headPruningFraction >= 0 && headPruningFraction < 1))
            throw new ArgumentOutOfRangeException(nameof(headPruningFraction), headPruningFraction, "The head pruning fraction must be in [0, 1).");
        int total = importance.Sum(b => b.Length);
        int toRemove = (int)Math.Round(total * headPruningFraction);
        int removable = importance.Sum(b => Math.Max(0, b.Length - Math.Max(1, minHeadsPerBlock)));
        if (toRemove > removable)
            throw new ArgumentOutOfRangeException(nameof(headPruningFraction), headPruningFraction,
                $"Removing {toRemove} of {total} heads would empty a block: at most {removable} can go while every block keeps {Math.Max(1, minHeadsPerBlock)}.");
        var kept = importance.Select(b => Enumerable.Range(0, b.Length).ToList()).ToArray();
        var order = importance.SelectMany((b, bi) => b.Select((v, h) => (v, bi, h))).OrderBy(t => t.v).ThenBy(t => t.bi).ThenBy(t => t.h);
        int removed = 0;
        foreach (var (_, bi, h) in order)
        {
            if (removed == toRemove) break;
            if (kept[bi].Count <= Math.Max(1, minHeadsPerBlock)) continue;
            kept[bi].Remove(h);
            removed++;
        }
        return kept.Select(k => k.OrderBy(i => i).ToArray()).ToArray();
    }
}
