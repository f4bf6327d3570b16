using FluentAssertions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>Loads a saved model zip in a separate process (test/Microsoft.ML.Gohsp.LoadCheck) and scores test images there.</summary>
internal static class NewProcess
{
    private static readonly string LoadCheck = BuiltApp.Locate("test/Microsoft.ML.Gohsp.LoadCheck", "Microsoft.ML.Gohsp.LoadCheck");

    /// <summary>The Score vectors a fresh process computes for the first <paramref name="count"/> CIFAR-10 test images.</summary>
    public static float[][] Scores(string modelZip, int count)
    {
        var (exitCode, stdout, stderr) = BuiltApp.Run(LoadCheck,
            [modelZip, Cifar10Tests.SubsetDir, count.ToString(System.Globalization.CultureInfo.InvariantCulture)], TimeSpan.FromMinutes(2));
        exitCode.Should().Be(0, stderr);
        var scores = System.Text.Json.JsonSerializer.Deserialize<float[][]>(stdout.Trim().Split('\n')[^1])!;
        scores.Should().HaveCount(count);
        return scores;
    }

    /// <summary>The Score vectors a fresh process computes for image files (a model trained on encoded bytes in column "ImageBytes").</summary>
    public static float[][] ScoresOfFiles(string modelZip, IReadOnlyList<string> files)
    {
        var (exitCode, stdout, stderr) = BuiltApp.Run(LoadCheck, [modelZip, "--files", .. files], TimeSpan.FromMinutes(2));
        exitCode.Should().Be(0, stderr);
        var scores = System.Text.Json.JsonSerializer.Deserialize<float[][]>(stdout.Trim().Split('\n')[^1])!;
        scores.Should().HaveCount(files.Count);
        return scores;
    }
}
