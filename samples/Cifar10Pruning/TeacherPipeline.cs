using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Transforms;
using Microsoft.ML.Transforms.Image;

namespace Cifar10Pruning;

/// <summary>
/// The teacher of <c>--teacher</c>: an ordinary ML.NET pipeline fitted on the training images, whose class probabilities
/// the ViT distils from (<c>TeacherScoreColumnName</c>). <c>resnet18</c> is ML.NET's pretrained ResNet18 featurizer
/// (<c>Microsoft.ML.DnnImageFeaturizer.ResNet18</c>, its ONNX files shipped in the NuGet package: nothing is downloaded) on
/// images resized to 224×224, then <c>LbfgsMaximumEntropy</c>. The training images are scored once, and the scores travel
/// with them as the <see cref="ScoreColumn"/> column: with augmentation the teacher saw the un-augmented image.
/// </summary>
internal static class TeacherPipeline
{
    /// <summary>The column of the teacher's class probabilities in the training data.</summary>
    public const string ScoreColumn = "TeacherScore";

    /// <summary>The teachers <c>--teacher</c> knows.</summary>
    public static readonly string[] Names = ["resnet18"];

    /// <summary>
    /// Fits the teacher on the training images (<paramref name="prep"/> gives the key-typed label the ViT trains on, so the
    /// teacher's score slots are in the ViT's class order), measures its top-1 on the test images, and returns the training
    /// data with the teacher's scores as a column, prepared for the ViT. With <paramref name="folds"/> K &gt; 1 each training
    /// image is scored by a classifier fitted on the other K − 1 folds (image i is in fold i mod K), so that its soft target
    /// is a prediction rather than a recollection of its own label; the test images are scored by the classifier fitted on
    /// all the training images either way. With <paramref name="cacheDirectory"/> the results are read from
    /// <see cref="TeacherCache"/> when it holds them for the same teacher, folds and images, and stored there otherwise.
    /// </summary>
    public static (TeacherSummary Summary, IDataView PreparedTrain) Fit(MLContext ml, string name, int folds, ImageSet trainSet, ImageSet testSet,
        ITransformer prep, ConsoleUi ui, string? cacheDirectory)
    {
        if (!Names.Contains(name)) throw new ArgumentException($"Option '--teacher': unknown teacher '{name}'. Known: {string.Join(", ", Names)}.");
        if (folds < 1 || folds > trainSet.Count) throw new ArgumentException($"Option '--teacher-folds': {folds} folds for {trainSet.Count} training images.");
        string? key = cacheDirectory is null ? null : TeacherCache.Key(name, folds, trainSet, testSet);
        var cached = key is null ? null : TeacherCache.TryRead(cacheDirectory!, key, trainSet.Count);
        var entry = cached ?? Compute(ml, name, folds, trainSet, testSet, prep, ui);
        if (key is not null && cached is null) TeacherCache.Write(cacheDirectory!, key, entry);
        string how = folds == 1 ? "in-sample" : $"out-of-fold, {folds} folds";
        string source = cached is null ? "" : $" (read from the cache in {cacheDirectory}; the times are those of the fit that stored it)";
        ui.Line(Text.Invariant($"Teacher {name}: test top-1 {entry.Top1:P2}; its scores of the training images ({how}) top-1 {entry.TrainingScoresTop1:P2}; fit {entry.FitSeconds:F0} s (featurising the training images included), scoring them {entry.ScoreSeconds:F0} s{source}."));
        var summary = new TeacherSummary(name, entry.Top1, entry.FitSeconds, entry.ScoreSeconds)
        {
            Folds = folds, TrainingScoresTop1 = entry.TrainingScoresTop1, Cached = cached is not null,
        };
        return (summary, prep.Transform(WithScores(ml, trainSet, entry.Scores)));
    }

    private static TeacherCache.Entry Compute(MLContext ml, string name, int folds, ImageSet trainSet, ImageSet testSet, ITransformer prep, ConsoleUi ui)
    {
        var preparedTrain = prep.Transform(trainSet.ToDataView(ml));
        var sw = Stopwatch.StartNew();
        ui.Line($"Teacher {name}: fitting the ResNet18 featurizer + LbfgsMaximumEntropy on {trainSet.Count:N0} images (224×224)…");
        // The featurizer has nothing to learn; the training images are featurised once, cached, and L-BFGS passes over the
        // cached features, from which the training images are also scored.
        var featurizer = ml.Transforms.ResizeImages("Image224", 224, 224, "Image")
            .Append(ml.Transforms.ExtractPixels("Pixels224", "Image224"))
            .Append(ml.Transforms.DnnFeaturizeImage("Features", m => m.ModelSelector.ResNet18(ml, m.OutputColumn, m.InputColumn), "Pixels224"))
            .Fit(preparedTrain);
        var featurized = featurizer.Transform(preparedTrain);
        var features = ml.Data.Cache(ml.Transforms.SelectColumns("Label", "Features").Fit(featurized).Transform(featurized));
        var trainer = ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy("Label", "Features");
        var classifier = trainer.Fit(features);
        double fitSeconds = sw.Elapsed.TotalSeconds;

        sw.Restart();
        var scores = folds == 1
            ? classifier.Transform(features).GetColumn<float[]>("Score").ToArray()   // once, in the images' order
            : CrossFittedScores(ml, features, folds, trainer);
        double scoreSeconds = sw.Elapsed.TotalSeconds;
        if (scores.Length != trainSet.Count)
            throw new InvalidOperationException($"The teacher scored {scores.Length} of {trainSet.Count} training images.");
        // the top-1 of the scores the ViT learns from (a key's raw value is 1-based; score slot j is key j + 1)
        var classes = features.GetColumn<uint>("Label").Select(k => (int)k - 1).ToArray();
        var logScores = scores.SelectMany(row => row.Select(p => MathF.Log(MathF.Max(p, 1e-30f)))).ToArray();
        double trainTop1 = Fidelity.Compute(logScores, [], classes, scores[0].Length).Top1;
        var teacher = featurizer.Append(classifier);
        double top1 = ml.MulticlassClassification.Evaluate(teacher.Transform(prep.Transform(testSet.ToDataView(ml)))).MicroAccuracy;
        return new TeacherCache.Entry(scores, top1, trainTop1, fitSeconds, scoreSeconds);
    }

    /// <summary>
    /// Each row's scores from <paramref name="trainer"/> fitted on the rows of the other folds (row i is in fold i mod
    /// <paramref name="folds"/>), in the rows' order.
    /// </summary>
    private static float[][] CrossFittedScores(MLContext ml, IDataView features, int folds, IEstimator<ITransformer> trainer)
    {
        var keys = features.GetColumn<uint>("Label").ToArray();
        var vectors = features.GetColumn<float[]>("Features").ToArray();
        var schema = SchemaDefinition.Create(typeof(FeatureRow));
        schema[nameof(FeatureRow.Label)].ColumnType = features.Schema["Label"].Type;
        schema[nameof(FeatureRow.Features)].ColumnType = features.Schema["Features"].Type;
        // GetColumn<uint> gives a key's raw value (1-based, 0: missing); LoadFromEnumerable reads a key field 0-based.
        IDataView Rows(IEnumerable<int> rows) => ml.Data.LoadFromEnumerable(
            rows.Select(i => new FeatureRow { Label = keys[i] - 1, Features = vectors[i] }).ToArray(), schema);
        var scores = new float[keys.Length][];
        for (int fold = 0; fold < folds; fold++)
        {
            int k = fold;
            var held = Enumerable.Range(0, keys.Length).Where(i => i % folds == k).ToArray();
            var model = trainer.Fit(Rows(Enumerable.Range(0, keys.Length).Where(i => i % folds != k)));
            var heldScores = model.Transform(Rows(held)).GetColumn<float[]>("Score").ToArray();
            for (int j = 0; j < held.Length; j++) scores[held[j]] = heldScores[j];
        }
        return scores;
    }

    private sealed class FeatureRow
    {
        public uint Label { get; set; }
        public float[] Features { get; set; } = [];
    }

    /// <summary>The training images (Image, Label) with the teacher's probabilities of each as <see cref="ScoreColumn"/>.</summary>
    private static IDataView WithScores(MLContext ml, ImageSet images, float[][] scores)
    {
        var schema = SchemaDefinition.Create(typeof(TaughtImage));
        schema[nameof(TaughtImage.Image)].ColumnType = new ImageDataViewType(images.Size, images.Size);
        schema[nameof(TaughtImage.TeacherScore)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, scores.Length == 0 ? 1 : scores[0].Length);
        return ml.Data.LoadFromEnumerable(Rows(images, scores), schema);
    }

    private static IEnumerable<TaughtImage> Rows(ImageSet images, float[][] scores)
    {
        for (int i = 0; i < images.Count; i++)
            yield return new TaughtImage { Image = images.CreateImage(i), Label = images.GetClassName(i), TeacherScore = scores[i] };
    }

    private sealed class TaughtImage
    {
        /// <summary>Size×Size; the schema sets the actual size (as <see cref="ImageSet.InputSchema"/> does).</summary>
        [ImageType(32, 32)]
        public MLImage Image { get; set; } = null!;
        public string Label { get; set; } = "";
        public float[] TeacherScore { get; set; } = [];
    }
}

/// <summary>
/// The teacher of a run: its name, its own test top-1, how long fitting it and scoring the training images took, and the
/// weight α and temperature T the ViT distilled with (absent in reports written before they were recorded: 0.5 and 4).
/// </summary>
internal sealed record TeacherSummary(string Name, double Top1, double FitSeconds, double ScoreSeconds)
{
    public double Weight { get; init; } = 0.5;
    public double Temperature { get; init; } = 4;
    /// <summary>Folds of the cross-fitted training scores; 1 (and in older reports): in-sample.</summary>
    public int Folds { get; init; } = 1;
    /// <summary>Top-1 of the teacher's scores of the training images against their labels (null in older reports).</summary>
    public double? TrainingScoresTop1 { get; init; }
    /// <summary>Whether the run read the teacher's results from <see cref="TeacherCache"/> (the seconds are then those of the fit that stored them).</summary>
    public bool Cached { get; init; }
}
