using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
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
    /// data with the teacher's scores as a column, prepared for the ViT.
    /// </summary>
    public static (TeacherSummary Summary, IDataView PreparedTrain) Fit(MLContext ml, string name, ImageSet trainSet, ImageSet testSet,
        ITransformer prep, ConsoleUi ui)
    {
        if (!Names.Contains(name)) throw new ArgumentException($"Option '--teacher': unknown teacher '{name}'. Known: {string.Join(", ", Names)}.");
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
        var classifier = ml.MulticlassClassification.Trainers.LbfgsMaximumEntropy("Label", "Features").Fit(features);
        double fitSeconds = sw.Elapsed.TotalSeconds;

        sw.Restart();
        var scores = classifier.Transform(features).GetColumn<float[]>("Score").ToArray();   // once, in the images' order
        double scoreSeconds = sw.Elapsed.TotalSeconds;
        if (scores.Length != trainSet.Count)
            throw new InvalidOperationException($"The teacher scored {scores.Length} of {trainSet.Count} training images.");
        var teacher = featurizer.Append(classifier);
        double top1 = ml.MulticlassClassification.Evaluate(teacher.Transform(prep.Transform(testSet.ToDataView(ml)))).MicroAccuracy;
        ui.Line(Text.Invariant($"Teacher {name}: test top-1 {top1:P2}; fit {fitSeconds:F0} s (featurising the training images included), scoring them {scoreSeconds:F0} s."));
        return (new TeacherSummary(name, top1, fitSeconds, scoreSeconds), prep.Transform(WithScores(ml, trainSet, scores)));
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
}
