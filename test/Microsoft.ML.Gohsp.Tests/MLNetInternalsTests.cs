using System.Diagnostics;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// The library compiles against ML.NET internals (MLNet/MLNetInternals.cs). These tests fail, naming the member, when
/// the Microsoft.ML the tests run on no longer has one of them.
/// </summary>
public class MLNetInternalsTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryReferencedMLNetTypeAndMemberResolves()
    {
        var sw = Stopwatch.StartNew();
        var missing = MLNetInternals.MissingMembers(out int count);
        output.WriteLine($"{count} ML.NET type and member references checked in {sw.Elapsed.TotalMilliseconds:F0} ms");
        missing.Should().BeEmpty("every ML.NET type and member the library was compiled against must exist in the loaded Microsoft.ML");
        count.Should().BeGreaterThan(100, "the library references hundreds of ML.NET types and members; fewer means the scan reads the wrong assembly");
    }

    [Fact]
    public void ScorerInternalsLeadFromAScoredViewToTheViTAndItsFeatureColumn()
    {
        var ml = new MLContext(1);
        var data = Cifar10.ToDataView(ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 64));
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 1;
        o.ImageColumnName = "Pixels";
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(data);
        var found = MLNetInternals.ScoringPredictor(model.Transform(data));
        found.Should().NotBeNull("the ViT's scored view is the multiclass scorer's output");
        found!.Value.Predictor.Should().BeSameAs(model.LastTransformer.Model);
        found.Value.FeatureColumnName.Should().Be("Pixels");
        MLNetInternals.ScoringPredictor(data).Should().BeNull("unscored data has no predictor");
    }
}
