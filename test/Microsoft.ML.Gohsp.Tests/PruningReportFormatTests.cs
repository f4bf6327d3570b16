using System.Text.Json;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// The pruning report's stored form: reports and a model zip written before the report had a per-method
/// <see cref="PruningReport.Details"/> (Fixtures/report, see the README beside them) read with every value — each checked
/// against the stored JSON field by field — and write back the same JSON; the stored cut plan still drives the cut.
/// </summary>
public class PruningReportFormatTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "report", name);

    [Theory]
    [InlineData("gohsp-every-field.json")]
    [InlineData("gohsp-soft-pruned.json")]
    [InlineData("gohsp-fine-tuned.json")]
    [InlineData("somp-fine-tuned.json")]
    public void ReportsOfTheEarlierFormatReadWithEveryValueAndWriteBackTheSameJson(string name)
    {
        var json = File.ReadAllText(Fixture(name));
        var report = PruningReport.FromJson(json);
        using var stored = JsonDocument.Parse(json);
        CheckAgainst(report, stored.RootElement);
        report.ToJson().Should().Be(json, "a report writes the fields, order and numbers of the earlier format");
    }

    [Fact]
    public void TheReportWithEveryFieldReadsItsValues()
    {
        var report = PruningReport.FromJson(File.ReadAllText(Fixture("gohsp-every-field.json")));
        (report.Method, report.Stage).Should().Be(("gohsp", "fine-tuned"));
        report.RequestedSparsity.Should().BeNull("the budget was a latency target");
        report.TargetLatencyMs.Should().Be(1.25);
        report.LatencyBatchSize.Should().Be(32);
        report.LatencyCalibration.Should().Be(new LatencyCalibrationSummary(0.4375, 0.5, 0.5078125, 0.5625, 2.5, 3));
        report.AchievedSparsity.Should().Be(0.625);
        report.CutShockTop1.Should().Be(0.125);
        report.CutShockNll.Should().Be(0.375);
        var gohsp = report.Gohsp();
        gohsp.StationaryProbabilities.Should().BeEquivalentTo(new[] { new[] { 0.75 }, new[] { 0.375, 0.625 } }, o => o.WithStrictOrdering());
        gohsp.ResidualHistory.Should().Equal(0.5, 0.25, 0.125);
        gohsp.ResidualStart.Should().Be(4);
        gohsp.ResidualRatio.Should().Be(0.03125);
        gohsp.CutPlanOverlap.Should().Be(0.96875);
        gohsp.CutPlan!.Blocks[1].QkDims.Select(d => d.ToArray()).Should().BeEquivalentTo(new[] { new[] { 0 }, new[] { 3 } }, o => o.WithStrictOrdering());
    }

    [Fact]
    public void TheSoftPrunedZipOfTheEarlierFormatLoadsAndItsCutPlanDrivesTheCut()
    {
        var ml = new MLContext(1);
        var loaded = ml.Model.Load(Fixture("gohsp-soft-pruned.zip"), out _);
        var vit = ViTLocator.FindViT(loaded)!.Model;
        var json = File.ReadAllText(Fixture("gohsp-soft-pruned.json"));
        vit.PruningReportJson.Should().Be(json);
        using (var stored = JsonDocument.Parse(json)) CheckAgainst(vit.PruningReport!, stored.RootElement);
        var soft = vit.PruningReport!.Gohsp();
        vit.PruningReport.Stage.Should().Be(GohspPruner.SoftPrunedStage);
        soft.ResidualHistory.Should().HaveCount(2);
        soft.CutPlan.Should().NotBeNull();

        // stage 3 continues from the loaded model: it cuts what the stored plan keeps (50%), not a fresh projection at the
        // 25% these options ask for, and carries stage 2's figures into the final report
        var train = Cifar10.ToDataView(ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 64));
        var options = new GohspPruningEstimator.Options
        {
            Sparsity = 0.25,
            FineTune = new ViTTrainingOptions { Epochs = 1, BatchSize = 32, NumberOfThreads = 2, Device = ViTDevice.Cpu },
        };
        var final = ml.Transforms.GohspHardPrune(options, loaded).Fit(loaded.Transform(train));
        final.Model.Architecture.Should().Be(soft.CutPlan!.PrunedArchitecture(vit.Model.Architecture));
        final.Model.PruningReport!.AchievedSparsity.Should().BeApproximately(0.5, 0.02);
        var carried = final.Model.PruningReport.Gohsp();
        carried.ResidualHistory.Should().Equal(soft.ResidualHistory);
        (carried.ResidualStart, carried.CutPlanOverlap).Should().Be((soft.ResidualStart, soft.CutPlanOverlap));
        carried.StationaryProbabilities.Should().BeEquivalentTo(soft.StationaryProbabilities, o => o.WithStrictOrdering());
    }

    [Fact]
    public void TheReportOfAFormat1ZipReadsAsGohspDetails()
    {
        var vit = ViTLocator.FindViT(new MLContext(1).Model.Load(ModelFormatTests.Fixture("vit-format1-masked.zip"), out _))!.Model;
        var report = vit.PruningReport!;
        (report.Method, report.Stage, report.ParametersBefore).Should().Be(("gohsp", GohspPruner.HeadMaskedStage, 24234L));
        report.Gohsp().StationaryProbabilities.Should().BeEquivalentTo(new[] { new[] { 0.5 }, new[] { 0.5, 0.5 } }, o => o.WithStrictOrdering());
        report.Gohsp().ResidualHistory.Should().BeEmpty();
        report.ValidationNll.Should().BeEmpty("format 1 wrote no NLL");
    }

    /// <summary>Every value of <paramref name="report"/> against the stored JSON, read field by field without the report's types.</summary>
    private static void CheckAgainst(PruningReport report, JsonElement json)
    {
        report.Method.Should().Be(json.GetProperty("Method").GetString());
        report.Stage.Should().Be(json.GetProperty("Stage").GetString());
        report.RequestedSparsity.Should().Be(Number(json, "RequestedSparsity"));
        report.TargetLatencyMs.Should().Be(Number(json, "TargetLatencyMs"));
        ((double?)report.LatencyBatchSize).Should().Be(Number(json, "LatencyBatchSize"));
        report.DenseLatencyMs.Should().Be(Number(json, "DenseLatencyMs"));
        report.EstimatedLatencyMs.Should().Be(Number(json, "EstimatedLatencyMs"));
        report.LatencyDevice.Should().Be(json.GetProperty("LatencyDevice").GetString());
        var calibration = json.GetProperty("LatencyCalibration");
        if (calibration.ValueKind == JsonValueKind.Null) report.LatencyCalibration.Should().BeNull();
        else
            report.LatencyCalibration.Should().Be(new LatencyCalibrationSummary(Number(calibration, "TableLatencyFraction")!.Value,
                Number(calibration, "TargetRatio")!.Value, Number(calibration, "MeasuredRatio")!.Value, Number(calibration, "TableOnlyRatio")!.Value,
                Number(calibration, "DenseMs")!.Value, calibration.GetProperty("Iterations").GetInt32()));
        report.ParametersBefore.Should().Be(json.GetProperty("ParametersBefore").GetInt64());
        report.ParametersAfter.Should().Be(json.GetProperty("ParametersAfter").GetInt64());
        report.FlopsBefore.Should().Be(json.GetProperty("FlopsBefore").GetInt64());
        report.FlopsAfter.Should().Be(json.GetProperty("FlopsAfter").GetInt64());
        report.AchievedSparsity.Should().Be(Number(json, "AchievedSparsity"));
        var blocks = json.GetProperty("Blocks").EnumerateArray().ToArray();
        report.Blocks.Should().HaveCount(blocks.Length).And.NotBeEmpty();
        for (int i = 0; i < blocks.Length; i++)
        {
            var (b, stored) = (report.Blocks[i], blocks[i]);
            b.Should().BeEquivalentTo(new
            {
                Block = stored.GetProperty("Block").GetInt32(),
                KeptHeads = Ints(stored.GetProperty("KeptHeads")),
                QkDim = stored.GetProperty("QkDim").GetInt32(),
                VDim = stored.GetProperty("VDim").GetInt32(),
                MlpWidth = stored.GetProperty("MlpWidth").GetInt32(),
                DenseHeads = stored.GetProperty("DenseHeads").GetInt32(),
                DenseQkDim = stored.GetProperty("DenseQkDim").GetInt32(),
                DenseVDim = stored.GetProperty("DenseVDim").GetInt32(),
                DenseMlpWidth = stored.GetProperty("DenseMlpWidth").GetInt32(),
            }, o => o.WithStrictOrdering());
        }
        report.ValidationAccuracy.Should().Equal(Dictionary(json.GetProperty("ValidationAccuracy")));
        report.ValidationNll.Should().Equal(Dictionary(json.GetProperty("ValidationNll")));
        report.PreCutStage.Should().Be(json.GetProperty("PreCutStage").GetString());
        report.CutShockTop1.Should().Be(Number(json, "CutShockTop1"));
        report.CutShockNll.Should().Be(Number(json, "CutShockNll"));

        var stationary = blocks.Select(b => Doubles(b.GetProperty("StationaryProbabilities"))).ToArray();
        var residuals = Doubles(json.GetProperty("ResidualHistory"));
        var cutPlan = json.GetProperty("CutPlan");
        if (report.Method != GohspPruner.MethodName)
        {
            report.Details.Should().BeNull();
            stationary.Should().OnlyContain(s => s.Length == 0);
            residuals.Should().BeEmpty();
            cutPlan.ValueKind.Should().Be(JsonValueKind.Null);
            return;
        }
        var gohsp = report.Gohsp();
        gohsp.StationaryProbabilities.Should().BeEquivalentTo(stationary, o => o.WithStrictOrdering());
        gohsp.ResidualHistory.Should().Equal(residuals);
        gohsp.ResidualStart.Should().Be(Number(json, "ResidualStart"));
        gohsp.ResidualRatio.Should().Be(Number(json, "ResidualRatio"));
        gohsp.CutPlanOverlap.Should().Be(Number(json, "CutPlanOverlap"));
        if (cutPlan.ValueKind == JsonValueKind.Null) gohsp.CutPlan.Should().BeNull();
        else
        {
            var planBlocks = cutPlan.GetProperty("Blocks").EnumerateArray().ToArray();
            gohsp.CutPlan!.Blocks.Should().HaveCount(planBlocks.Length);
            for (int i = 0; i < planBlocks.Length; i++)
            {
                var p = gohsp.CutPlan.Blocks[i];
                p.Heads.ToArray().Should().Equal(Ints(planBlocks[i].GetProperty("Heads")));
                p.QkDims.Select(d => d.ToArray()).Should().BeEquivalentTo(planBlocks[i].GetProperty("QkDims").EnumerateArray().Select(Ints), o => o.WithStrictOrdering());
                p.VDims.Select(d => d.ToArray()).Should().BeEquivalentTo(planBlocks[i].GetProperty("VDims").EnumerateArray().Select(Ints), o => o.WithStrictOrdering());
                p.MlpNeurons.ToArray().Should().Equal(Ints(planBlocks[i].GetProperty("MlpNeurons")));
            }
        }
    }

    private static double? Number(JsonElement e, string name) => e.GetProperty(name) switch
    {
        { ValueKind: JsonValueKind.Null } => null,
        { ValueKind: JsonValueKind.String } s => double.Parse(s.GetString()!, System.Globalization.CultureInfo.InvariantCulture),
        var n => n.GetDouble(),
    };

    private static double Double(JsonElement e) => e.ValueKind == JsonValueKind.String
        ? double.Parse(e.GetString()!, System.Globalization.CultureInfo.InvariantCulture) : e.GetDouble();

    private static double[] Doubles(JsonElement e) => e.EnumerateArray().Select(Double).ToArray();

    private static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();

    private static Dictionary<string, double> Dictionary(JsonElement e) => e.EnumerateObject().ToDictionary(p => p.Name, p => Double(p.Value));
}
