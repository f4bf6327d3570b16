using CustomPruningMethod;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.ExtensionTests;

/// <summary>
/// A pruning method compiled outside the library (<see cref="RandomStructuredPruning"/>), registered once, runs through
/// the ML.NET catalog on a tiny data set: selected by its registered name and by its options, fitted and applied.
/// </summary>
public class CustomMethodCatalogTests
{
    private const int Classes = 3, Size = 32, Rows = 48;

    private sealed class Row
    {
        public string Label { get; set; } = "";

        [VectorType(3 * Size * Size)]
        public float[] Pixels { get; set; } = [];
    }

    // Each class a different mean brightness, with seeded noise: 0…255 planar pixels, as ExtractPixels gives them.
    private static IDataView Data(MLContext ml)
    {
        var random = new Random(5);
        var rows = Enumerable.Range(0, Rows).Select(i => new Row
        {
            Label = $"c{i % Classes}",
            Pixels = Enumerable.Range(0, 3 * Size * Size).Select(_ => (float)(60 * (i % Classes) + 60 * random.NextDouble())).ToArray(),
        }).ToArray();
        return ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(rows)).Transform(ml.Data.LoadFromEnumerable(rows));
    }

    private static MulticlassPredictionTransformer<ViTModelParameters> Dense(MLContext ml, IDataView data) =>
        ml.MulticlassClassification.Trainers.ViTClassification(new ViTClassificationTrainer.Options
        {
            Architecture = ViTArchitecture.CifarMicro(),
            ImageColumnName = "Pixels",
            Epochs = 1,
            BatchSize = 16,
            NumberOfThreads = 1,
            Seed = 3,
        }).Fit(data);

    [Fact]
    public void ARegisteredMethodRunsThroughTheCatalogByNameAndByOptions()
    {
        var registration = RandomStructuredPruning.Register();
        Assert.Same(registration, RandomStructuredPruning.Register());
        Assert.Equal("random", registration.Name);
        Assert.Same(registration, PruningMethods.Get("random"));
        Assert.Contains(registration, PruningMethods.All);
        Assert.Equal(1, registration.MinimumTrainingEpochs);
        Assert.Throws<ArgumentException>(() => PruningMethods.Register(new PruningMethodRegistration("Another random", () => new RandomPruningOptions())));

        var ml = new MLContext(seed: 1);
        var data = Data(ml);
        var dense = Dense(ml, data);
        long denseParameters = dense.Model.ParameterCount;

        // by name: the registration's default options, with the sparsity
        var byName = ml.Transforms.Prune("random", 0.4, dense);
        var pruned = byName.Fit(data);
        var report = pruned.Model.PruningReport!;
        Assert.Same(report, byName.LastReport);
        Assert.Equal("random", report.Method);
        Assert.InRange(report.AchievedSparsity, 0.39, 0.41);
        Assert.Equal(denseParameters, report.ParametersBefore);
        Assert.Equal(report.ParametersAfter, pruned.Model.ParameterCount);
        Assert.Equal("FineTune 1", registration.DescribeTraining(registration.CreateOptions()));

        // by options: the method's own settings and the estimator's columns in one object
        var options = new RandomPruningOptions { Sparsity = 0.3, RankingSeed = 2, ValidationSet = data };
        var other = ml.Transforms.Prune(options, dense).Fit(data);
        Assert.InRange(other.Model.PruningReport!.AchievedSparsity, 0.29, 0.31);
        Assert.True(other.Model.PruningReport.ValidationAccuracy.ContainsKey("fine-tuned"));

        // the pruned model scores every row through ML.NET
        var scored = pruned.Transform(data);
        var scores = ml.Data.CreateEnumerable<Scored>(scored, reuseRowObject: false).ToArray();
        Assert.Equal(Rows, scores.Length);
        Assert.All(scores, s => Assert.Equal(1.0, s.Score.Sum(), 3));
        Assert.All(scores, s => Assert.Equal(Classes, s.Score.Length));
    }

    [Fact]
    public void AnUnknownNameIsRefusedNamingTheRegisteredMethods()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentException>(() => ml.Transforms.Prune("magnitude", 0.4));
        Assert.Contains("Unknown pruning method 'magnitude'", e.Message);
        Assert.Contains("gohsp, sgmp, somp", e.Message);
    }

    private sealed class Scored
    {
        public float[] Score { get; set; } = [];
    }
}
