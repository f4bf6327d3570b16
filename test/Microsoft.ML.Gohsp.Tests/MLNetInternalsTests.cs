using System.Diagnostics;
using FluentAssertions;
using Microsoft.ML.Gohsp.MLNet;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// The library compiles against ML.NET internals (MLNet/MLNetInternals.cs). These tests fail, naming the member, when
/// the Microsoft.ML the tests run on no longer has one of them.
/// </summary>
public class MLNetInternalsTests(TrainedModelFixture fixture, ITestOutputHelper output) : IClassFixture<TrainedModelFixture>
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
        var scored = fixture.Model.Transform(fixture.Test);
        var found = MLNetInternals.ScoringPredictor(scored);
        found.Should().NotBeNull("the ViT's scored view is the multiclass scorer's output");
        found!.Value.Predictor.Should().BeSameAs(fixture.Predictor.Model);
        found.Value.FeatureColumnName.Should().Be("Pixels");
        MLNetInternals.ScoringPredictor(fixture.Test).Should().BeNull("unscored data has no predictor");
    }
}
