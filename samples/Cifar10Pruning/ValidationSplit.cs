using System.Security.Cryptography;
using System.Text;

namespace Cifar10Pruning;

/// <summary>The validation images held out of the training images, and how they were drawn.</summary>
internal sealed record ValidationSplit(ImageSet Images, double Fraction, int Seed, string IndicesHash)
{
    /// <summary>SHA-256 (hex) of the indices written as ascending comma-separated decimals.</summary>
    public static string Hash(IEnumerable<int> indices) =>
        Convert.ToHexString(SHA256.HashData(Encoding.ASCII.GetBytes(string.Join(",", indices.Order())))).ToLowerInvariant();
}
