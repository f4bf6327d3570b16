using FluentAssertions;
using Microsoft.ML.Gohsp.Pruning;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>GOHSP's part of a report, asserting that the report has one.</summary>
internal static class ReportAssert
{
    /// <summary>The report's <see cref="GohspDetails"/>; fails the test when it has none.</summary>
    public static GohspDetails Gohsp(this PruningReport report) => report.Details.Should().BeOfType<GohspDetails>().Subject;

    /// <summary>The stationary probabilities of <paramref name="block"/>'s kept heads in <paramref name="report"/>.</summary>
    public static double[] Stationary(this PruningReport report, BlockReport block) => report.Gohsp().StationaryProbabilities[block.Block];
}
