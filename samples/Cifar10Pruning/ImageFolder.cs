using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Training;

namespace Cifar10Pruning;

/// <summary>
/// <c>--images DIR</c>: a folder per class of image files (Model Builder's layout), decoded and resized to the architecture's
/// image size. <c>DIR/train</c> and <c>DIR/test</c> are used as they are when both exist; otherwise a seeded fraction of
/// each class becomes the test split.
/// </summary>
internal static class ImageFolder
{
    /// <summary>The file extensions read (others, e.g. a README or .DS_Store, are skipped).</summary>
    public static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];

    /// <summary>How the test images were chosen, for the report.</summary>
    public sealed record Split(ImageSet Train, ImageSet Test, string Description);

    public static Split Read(string dir, int size, double testFraction, int seed)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"Option '--images': folder '{dir}' does not exist.");
        string train = Path.Combine(dir, "train"), test = Path.Combine(dir, "test");
        if (Directory.Exists(train) && Directory.Exists(test))
        {
            var trainFiles = ClassFiles(train);
            var classes = trainFiles.Select(c => c.Class).ToArray();
            var testFiles = ClassFiles(test);
            if (testFiles.FirstOrDefault(c => !classes.Contains(c.Class)) is { } extra)
                throw new InvalidDataException($"Option '--images': class folder '{Path.Combine(test, extra.Class)}' has no counterpart in '{train}' (classes there: {string.Join(", ", classes)}).");
            return new Split(Decode(trainFiles, classes, size, seed), Decode(testFiles, classes, size, seed), $"{test} (the images in {train} train)");
        }

        var files = ClassFiles(dir);
        var all = Decode(files, files.Select(c => c.Class).ToArray(), size, seed);
        var held = ImageTensorData.ValidationIndices(all.Labels, testFraction, seed);
        return new Split(all.Select(ImageTensorData.Complement(held, all.Count)), all.Select(held),
            Text.Invariant($"{testFraction:P0} of each class (seed {seed})"));
    }

    /// <summary>The class folders of <paramref name="dir"/> (ordinal order) and the image files in each (recursively, ordinal order).</summary>
    private static IReadOnlyList<(string Class, string[] Files)> ClassFiles(string dir)
    {
        var classes = Directory.GetDirectories(dir).Order(StringComparer.Ordinal)
            .Select(d => (Class: Path.GetFileName(d), Files: Directory.EnumerateFiles(d, "*", SearchOption.AllDirectories)
                .Where(f => Extensions.Contains(Path.GetExtension(f).ToLowerInvariant())).Order(StringComparer.Ordinal).ToArray()))
            .ToArray();
        if (classes.Length == 0)
            throw new InvalidDataException($"Option '--images': folder '{dir}' has no class folders; expected one folder per class of image files ({dir}/<class>/<image>.png).");
        if (classes.FirstOrDefault(c => c.Files.Length == 0) is { Class: not null } empty)
            throw new InvalidDataException($"Option '--images': class folder '{Path.Combine(dir, empty.Class)}' has no image files ({string.Join(", ", Extensions)}).");
        if (classes.Length < 2)
            throw new InvalidDataException($"Option '--images': folder '{dir}' has one class folder ('{classes[0].Class}'); a classifier needs at least two.");
        return classes;
    }

    /// <summary>
    /// Decodes every file with the library's decoder (the one a model trained on encoded bytes uses), rounded to bytes, in a
    /// seeded shuffled order (so that --max-train takes a sample of every class, not the first classes).
    /// </summary>
    private static ImageSet Decode(IReadOnlyList<(string Class, string[] Files)> classes, string[] classNames, int size, int seed)
    {
        var files = classes.SelectMany(c => c.Files.Select(f => (File: f, Label: Array.IndexOf(classNames, c.Class)))).ToArray();
        new Random(seed).Shuffle(files);
        int length = 3 * size * size;
        var pixels = new byte[(long)files.Length * length];
        for (int i = 0; i < files.Length; i++)
        {
            float[] decoded;
            try
            {
                decoded = ImageFiles.DecodePlanarRgb(File.ReadAllBytes(files[i].File), size, files[i].File);
            }
            catch (InvalidDataException e)
            {
                throw new InvalidDataException($"Option '--images': {e.Message}", e);
            }
            var dst = pixels.AsSpan(i * length, length);
            for (int k = 0; k < length; k++) dst[k] = (byte)Math.Clamp(MathF.Round(decoded[k]), 0, 255);
        }
        return new ImageSet(classNames, files.Select(f => f.Label).ToArray(), pixels, size);
    }
}
