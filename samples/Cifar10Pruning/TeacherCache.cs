using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.ML.Gohsp;

namespace Cifar10Pruning;

/// <summary>
/// The teacher's results stored under a hash of everything that determines them: the teacher, its folds, the packages
/// that compute it, and the training and test images with their labels and class names. A run on the same images reads
/// them instead of fitting the teacher again (featurising the CIFAR-10 subset at 224×224 takes about 4 minutes on 2
/// cores). A file that does not read back whole, or was written for other inputs, is ignored and rewritten.
/// </summary>
internal static class TeacherCache
{
    private const string Magic = "gohsp-teacher-scores";
    private const int FormatVersion = 1;

    /// <summary><c>%LOCALAPPDATA%/Microsoft.ML.Gohsp/teacher</c> or <c>~/.local/share/Microsoft.ML.Gohsp/teacher</c>, beside the latency tables.</summary>
    public static string DefaultDirectory => Path.Combine(
        Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create), "Microsoft.ML.Gohsp", "teacher");

    /// <summary>What a fit produced: the scores of every training image (in the images' order) and the figures of its summary.</summary>
    public sealed record Entry(float[][] Scores, double Top1, double TrainingScoresTop1, double FitSeconds, double ScoreSeconds);

    /// <summary>The hash (hex) of the inputs a teacher's results depend on.</summary>
    public static string Key(string teacher, int folds, ImageSet train, ImageSet test)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Text(string s) { var b = Encoding.UTF8.GetBytes(s + "\n"); sha.AppendData(b); }
        Text($"{Magic} v{FormatVersion}; teacher {teacher}; folds {folds}");
        foreach (var assembly in new[] { typeof(Microsoft.ML.ResNet18Extension).Assembly, typeof(Microsoft.ML.MLContext).Assembly })
            Text(assembly.GetName().ToString());
        foreach (var set in new[] { train, test })
        {
            Text($"{set.Count} images of {set.Size}x{set.Size}; classes {string.Join("|", set.ClassNames)}");
            sha.AppendData(MemoryMarshal.AsBytes(set.Labels.AsSpan()));
            sha.AppendData(set.Pixels);
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }

    private static string PathOf(string directory, string key) => Path.Combine(directory, $"teacher-{key[..16]}.bin");

    /// <summary>The stored results for <paramref name="key"/> with <paramref name="images"/> rows, or null.</summary>
    public static Entry? TryRead(string directory, string key, int images)
    {
        string path = PathOf(directory, key);
        if (!File.Exists(path)) return null;
        try
        {
            using var r = new BinaryReader(File.OpenRead(path), Encoding.UTF8);
            if (r.ReadString() != Magic || r.ReadInt32() != FormatVersion || r.ReadString() != key) return null;
            int n = r.ReadInt32(), classes = r.ReadInt32();
            if (n != images || classes < 1) return null;
            var scores = new float[n][];
            for (int i = 0; i < n; i++)
            {
                scores[i] = new float[classes];
                for (int c = 0; c < classes; c++) scores[i][c] = r.ReadSingle();
            }
            var entry = new Entry(scores, r.ReadDouble(), r.ReadDouble(), r.ReadDouble(), r.ReadDouble());
            return r.BaseStream.Position == r.BaseStream.Length ? entry : null;
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or UnauthorizedAccessException)
        {
            return null;   // unreadable: fitted again and rewritten
        }
    }

    /// <summary>Stores <paramref name="entry"/> for <paramref name="key"/> (atomically: a reader sees the old file or the whole new one).</summary>
    public static void Write(string directory, string key, Entry entry)
    {
        Directory.CreateDirectory(directory);
        AtomicFile.Write(PathOf(directory, key), s =>
        {
            using var w = new BinaryWriter(s, Encoding.UTF8, leaveOpen: true);
            w.Write(Magic);
            w.Write(FormatVersion);
            w.Write(key);
            w.Write(entry.Scores.Length);
            w.Write(entry.Scores.Length == 0 ? 1 : entry.Scores[0].Length);
            foreach (var row in entry.Scores)
                foreach (float p in row) w.Write(p);
            w.Write(entry.Top1);
            w.Write(entry.TrainingScoresTop1);
            w.Write(entry.FitSeconds);
            w.Write(entry.ScoreSeconds);
        });
    }
}
