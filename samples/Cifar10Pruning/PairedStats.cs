using MathNet.Numerics.Distributions;

namespace Cifar10Pruning;

/// <summary>
/// A paired difference over seeds: per seed, the difference of one metric between two models pruned from (or continued
/// from) the same dense model, so the dense model's quality cancels. Mean, sample standard deviation and the two-sided 95%
/// Student-t confidence interval of the mean (n − 1 degrees of freedom).
/// </summary>
internal sealed record PairedDifference(int N, double Mean, double Std, double Low, double High, IReadOnlyList<double> PerSeed)
{
    /// <summary>The interval lies entirely above zero.</summary>
    public bool AboveZero => N >= 2 && Low > 0;

    /// <summary>The interval's upper bound is at least zero (not shown to be behind).</summary>
    public bool NotBehind => N >= 2 && High >= 0;

    /// <summary>The statistics of the per-seed differences <paramref name="d"/> (at least one).</summary>
    public static PairedDifference Of(IReadOnlyList<double> d)
    {
        if (d.Count == 0) throw new ArgumentException("No paired values.", nameof(d));
        double mean = d.Average();
        if (d.Count < 2) return new PairedDifference(1, mean, double.NaN, double.NaN, double.NaN, d);
        double std = Math.Sqrt(d.Sum(x => (x - mean) * (x - mean)) / (d.Count - 1));
        double half = StudentT.InvCDF(0, 1, d.Count - 1, 0.975) * std / Math.Sqrt(d.Count);
        return new PairedDifference(d.Count, mean, std, mean - half, mean + half, d);
    }
}
