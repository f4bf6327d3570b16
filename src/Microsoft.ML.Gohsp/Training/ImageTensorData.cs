namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// Images and labels held in memory as raw (unnormalised) planar CHW float32 pixels, the form every
/// training and evaluation pass of this library consumes. Batches are cut from it and normalised on the fly. Optionally a
/// teacher's class probabilities per image (<see cref="WithTeacherProbabilities"/>), the soft targets of distillation.
/// </summary>
public sealed class ImageTensorData
{
    /// <summary>Wraps existing arrays (no copy).</summary>
    /// <param name="pixels">Count·Channels·Size·Size raw pixel values, image after image, planar CHW.</param>
    /// <param name="labels">Class index per image (0-based), or -1 where unknown.</param>
    /// <param name="channels">Channels per image.</param>
    /// <param name="size">Height = width.</param>
    public ImageTensorData(float[] pixels, int[] labels, int channels, int size)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        if (channels <= 0 || size <= 0) throw new ArgumentOutOfRangeException(nameof(size), "Channels and size must be positive.");
        long per = (long)channels * size * size;
        if (pixels.LongLength != per * labels.Length)
            throw new ArgumentException($"pixels has {pixels.LongLength} values; expected {labels.Length}·{per}.", nameof(pixels));
        Pixels = pixels; Labels = labels; Channels = channels; Size = size;
    }

    private ImageTensorData(ImageTensorData images, float[]? teacherProbabilities, int teacherClasses)
        : this(images.Pixels, images.Labels, images.Channels, images.Size)
    {
        TeacherProbabilities = teacherProbabilities;
        TeacherClasses = teacherClasses;
    }

    /// <summary>
    /// The same images and labels (no copy) with a teacher's class probabilities per image: the soft targets that
    /// <see cref="TrainingLoop"/> distils from (<see cref="ViTTrainingOptions.TeacherWeight"/>,
    /// <see cref="ViTTrainingOptions.TeacherTemperature"/>). Row <c>i</c> belongs to image <c>i</c> and follows it through
    /// <see cref="Select"/>, <see cref="Take"/>, <see cref="SplitValidation"/> and the loop's shuffling.
    /// </summary>
    /// <param name="probabilities">Count·<paramref name="classes"/> values, image after image: each row non-negative, finite, summing to 1 (± <see cref="TeacherSumTolerance"/>).</param>
    /// <param name="classes">Classes per row: the model's class count.</param>
    /// <exception cref="ArgumentException">A row that is not a probability vector (the message names the row), or the wrong length.</exception>
    public ImageTensorData WithTeacherProbabilities(float[] probabilities, int classes)
    {
        ArgumentNullException.ThrowIfNull(probabilities);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classes);
        if (probabilities.LongLength != (long)Count * classes)
            throw new ArgumentException($"probabilities has {probabilities.LongLength} values; expected {Count} images · {classes} classes = {(long)Count * classes}.", nameof(probabilities));
        for (int i = 0; i < Count; i++)
            if (TeacherRowProblem(probabilities.AsSpan(i * classes, classes)) is { } problem)
                throw new ArgumentException($"The teacher probabilities of image {i} are not a probability vector: {problem}.", nameof(probabilities));
        return new ImageTensorData(this, probabilities, classes);
    }

    /// <summary>How far a teacher row's sum may be from 1: 1e-3.</summary>
    public const double TeacherSumTolerance = 1e-3;

    /// <summary>Why <paramref name="row"/> is not a probability vector (NaN/∞, a negative entry, a sum away from 1); null when it is one.</summary>
    internal static string? TeacherRowProblem(ReadOnlySpan<float> row)
    {
        double sum = 0;
        for (int c = 0; c < row.Length; c++)
        {
            float v = row[c];
            if (!float.IsFinite(v)) return $"entry {c} is {v}";
            if (v < 0) return $"entry {c} is negative ({v})";
            sum += v;
        }
        return Math.Abs(sum - 1) > TeacherSumTolerance ? $"its entries sum to {sum:G6}, not 1 (tolerance {TeacherSumTolerance})" : null;
    }

    /// <summary>Raw planar pixels.</summary>
    public float[] Pixels { get; }
    /// <summary>0-based labels (-1 = unknown).</summary>
    public int[] Labels { get; }
    /// <summary>Number of images.</summary>
    public int Count => Labels.Length;
    /// <summary>Channels per image.</summary>
    public int Channels { get; }
    /// <summary>Height and width.</summary>
    public int Size { get; }
    /// <summary>Values per image.</summary>
    public int ImageLength => Channels * Size * Size;

    /// <summary>
    /// A teacher's class probabilities, <see cref="Count"/>·<see cref="TeacherClasses"/> values, image after image; null
    /// when the images have no teacher (<see cref="WithTeacherProbabilities"/>).
    /// </summary>
    public float[]? TeacherProbabilities { get; }

    /// <summary>Classes per row of <see cref="TeacherProbabilities"/>; 0 without a teacher.</summary>
    public int TeacherClasses { get; }

    /// <summary>
    /// A seeded split into training and validation images (copies): the images at <see cref="ValidationIndices"/> go to
    /// validation, the rest stay for training, in their original order. Defaults are chosen on such a split, never on test
    /// images.
    /// </summary>
    /// <param name="fraction">Fraction held out for validation, in (0, 1).</param>
    /// <param name="seed">Seed of the draw.</param>
    /// <returns>The two sets and the indices (into this set, ascending) of the validation images.</returns>
    public (ImageTensorData Train, ImageTensorData Validation, int[] ValidationIndices) SplitValidation(double fraction, int seed)
    {
        var validation = ValidationIndices(Labels, fraction, seed);
        return (Select(Complement(validation, Count)), Select(validation), validation);
    }

    /// <summary>
    /// The indices (ascending) of a seeded, label-stratified validation split: each class contributes round(fraction × its
    /// count) images, at least one and never all where it has two or more, drawn with <see cref="Random"/>(<paramref name="seed"/>).
    /// </summary>
    public static int[] ValidationIndices(IReadOnlyList<int> labels, double fraction, int seed)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (!(fraction > 0 && fraction < 1)) throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "The validation fraction must be in (0, 1).");
        if (labels.Count < 2) throw new ArgumentException($"A validation split needs at least 2 images; there are {labels.Count}.", nameof(labels));
        var rng = new Random(seed);
        var held = new List<int>();
        foreach (var group in Enumerable.Range(0, labels.Count).GroupBy(i => labels[i]).OrderBy(g => g.Key))
        {
            var members = group.ToArray();
            int take = members.Length < 2 ? 0 : Math.Clamp((int)Math.Round(members.Length * fraction), 1, members.Length - 1);
            rng.Shuffle(members);
            held.AddRange(members.Take(take));
        }
        return held.Order().ToArray();
    }

    /// <summary>The indices in [0, <paramref name="count"/>) that are not in <paramref name="indices"/>, ascending.</summary>
    public static int[] Complement(IReadOnlyCollection<int> indices, int count)
    {
        var held = new bool[count];
        foreach (int i in indices) held[i] = true;
        return Enumerable.Range(0, count).Where(i => !held[i]).ToArray();
    }

    /// <summary>The images at <paramref name="indices"/>, in that order (copy).</summary>
    public ImageTensorData Select(IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        int len = ImageLength;
        var pixels = new float[(long)indices.Count * len];
        var labels = new int[indices.Count];
        for (int k = 0; k < indices.Count; k++)
        {
            int i = indices[k];
            if (i < 0 || i >= Count) throw new ArgumentOutOfRangeException(nameof(indices), i, $"Index outside [0, {Count}).");
            Pixels.AsSpan(i * len, len).CopyTo(pixels.AsSpan(k * len, len));
            labels[k] = Labels[i];
        }
        var selected = new ImageTensorData(pixels, labels, Channels, Size);
        if (TeacherProbabilities is not { } teacher) return selected;
        int k2 = TeacherClasses;
        var rows = new float[(long)indices.Count * k2];
        for (int k = 0; k < indices.Count; k++) teacher.AsSpan(indices[k] * k2, k2).CopyTo(rows.AsSpan(k * k2, k2));
        return new ImageTensorData(selected, rows, k2);
    }

    /// <summary>The first <paramref name="n"/> images (copy).</summary>
    public ImageTensorData Take(int n)
    {
        n = Math.Clamp(n, 0, Count);
        var taken = new ImageTensorData(Pixels.AsSpan(0, n * ImageLength).ToArray(), Labels.AsSpan(0, n).ToArray(), Channels, Size);
        return TeacherProbabilities is { } teacher ? new ImageTensorData(taken, teacher.AsSpan(0, n * TeacherClasses).ToArray(), TeacherClasses) : taken;
    }
}
