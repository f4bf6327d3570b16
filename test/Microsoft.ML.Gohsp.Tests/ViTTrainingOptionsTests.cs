using System.Reflection;
using FluentAssertions;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// The training options have one list of their fields (<see cref="ViTTrainingOptions.Declared"/>): every option is copied
/// into the protocol's stages and changes the checkpoint fingerprint unless it is listed as not determining the run, and the
/// fingerprint of the existing options is the string earlier checkpoints stored.
/// </summary>
public class ViTTrainingOptionsTests
{
    private static PropertyInfo[] PublicProperties() => typeof(ViTTrainingOptions).GetProperties(BindingFlags.Public | BindingFlags.Instance);

    /// <summary>A value of <paramref name="p"/> other than <paramref name="current"/>, valid for <see cref="ViTTrainingOptions.Validate"/>.</summary>
    private static object? Other(PropertyInfo p, object? current) => current switch
    {
        int i => i + 3,
        double d => d * 0.75,
        float f => f * 2,
        bool b => !b,
        float[] a => a.Select(x => x / 2 + 0.125f).ToArray(),
        Enum e => Enum.GetValues(e.GetType()).Cast<object>().First(v => !v.Equals(e)),
        string s => s + "-other",
        null when p.PropertyType == typeof(string) => "other",
        _ => throw new InvalidOperationException($"The test has no other value for ViTTrainingOptions.{p.Name} ({p.PropertyType.Name}): add one to Other."),
    };

    private static ViTTrainingOptions EveryOptionChanged()
    {
        var o = new ViTTrainingOptions();
        foreach (var p in PublicProperties()) p.SetValue(o, Other(p, p.GetValue(o)));
        return o;
    }

    [Fact]
    public void TheOneListHoldsEveryPublicOptionAndTheCopyCopiesEachWithoutSharingArrays()
    {
        ViTTrainingOptions.Declared.Select(p => p.Name).Should().BeEquivalentTo(PublicProperties().Select(p => p.Name));
        ViTTrainingOptions.Declared.Should().HaveCountGreaterThanOrEqualTo(20).And.OnlyContain(p => p.CanRead && p.CanWrite);

        var changed = EveryOptionChanged();
        var defaults = new ViTTrainingOptions();
        var copy = changed.Copy();
        foreach (var p in PublicProperties())
        {
            p.GetValue(changed).Should().NotBeEquivalentTo(p.GetValue(defaults), "the test changes {0}", p.Name);
            p.GetValue(copy).Should().BeEquivalentTo(p.GetValue(changed), o => o.WithStrictOrdering(), "the copy copies {0}", p.Name);
        }
        copy.Mean.Should().NotBeSameAs(changed.Mean);
        copy.Std.Should().NotBeSameAs(changed.Std);

        // a derived options object (the trainer's) copies as the training options alone
        var trainer = new ViTClassificationTrainer.Options { LearningRate = 3e-4, Seed = 9 };
        trainer.Copy().Should().BeOfType<ViTTrainingOptions>().Which.Should().Match<ViTTrainingOptions>(o => o.LearningRate == 3e-4 && o.Seed == 9);
    }

    [Fact]
    public void EveryOptionReachesTheProtocolsStagesButEpochsWarmupAndCheckpointFolder()
    {
        var b = EveryOptionChanged();
        var sgmp = (SgmpOptions)PruningProtocol.ForEpochBudget(PruningMethod.Sgmp, 0.5, 8, b);
        var somp = (SompOptions)PruningProtocol.ForEpochBudget(PruningMethod.Somp, 0.5, 8, b);
        string[] perStage = [nameof(ViTTrainingOptions.Epochs), nameof(ViTTrainingOptions.WarmupEpochs), nameof(ViTTrainingOptions.CheckpointFolder)];
        string[] perSchedule = [nameof(ViTTrainingOptions.LearningRate), nameof(ViTTrainingOptions.MinLearningRate)];
        foreach (var p in PublicProperties().Where(p => !perStage.Contains(p.Name)))
        {
            p.GetValue(somp.FineTune).Should().BeEquivalentTo(p.GetValue(b), o => o.WithStrictOrdering(), "SOMP's one stage gets {0}", p.Name);
            if (!perSchedule.Contains(p.Name))
                p.GetValue(sgmp.Gradual).Should().BeEquivalentTo(p.GetValue(b), o => o.WithStrictOrdering(), "SGMP's first stage gets {0}", p.Name);
        }
        somp.FineTune.CheckpointFolder.Should().Be(Path.Combine(b.CheckpointFolder!, "somp-fine-tune"));
        sgmp.Gradual.CheckpointFolder.Should().Be(Path.Combine(b.CheckpointFolder!, "sgmp-gradual"));
    }

    [Fact]
    public void EveryOptionChangesTheFingerprintUnlessItIsListedAsNotDeterminingTheRun()
    {
        ViTTrainingOptions.NotFingerprinted.Should().BeEquivalentTo(
            nameof(ViTTrainingOptions.Device), nameof(ViTTrainingOptions.NumberOfThreads), nameof(ViTTrainingOptions.CheckpointFolder),
            nameof(ViTTrainingOptions.EvaluationBatchSize));
        ViTTrainingOptions.TeacherOptions.Should().BeEquivalentTo(nameof(ViTTrainingOptions.TeacherWeight), nameof(ViTTrainingOptions.TeacherTemperature));
        foreach (var p in PublicProperties())
        {
            var a = new ViTTrainingOptions();
            var b = new ViTTrainingOptions();
            p.SetValue(b, Other(p, p.GetValue(b)));
            bool teacher = ViTTrainingOptions.TeacherOptions.Contains(p.Name), run = !teacher && !ViTTrainingOptions.NotFingerprinted.Contains(p.Name);
            (b.Fingerprint() != a.Fingerprint()).Should().Be(run, "{0} {1} the run's fingerprint", p.Name, run ? "changes" : "does not change");
            (b.TeacherFingerprint() != a.TeacherFingerprint()).Should().Be(teacher, "{0} {1} the teacher's fingerprint", p.Name, teacher ? "changes" : "does not change");
        }
    }

    [Fact]
    public void TheFingerprintOfTheExistingOptionsIsTheStringEarlierCheckpointsStored()
    {
        // the options part of the fingerprint in Fixtures/checkpoint/format2.bin (CheckpointTests)
        new ViTTrainingOptions { Epochs = 2, BatchSize = 4, Seed = 3 }.Fingerprint()
            .Should().Be("2|4|0.001|1E-05|1|0.05|0.1|4|True|0.003921569|0.4914,0.4822,0.4465|0.247,0.2435,0.2616|3|Float32");
        new ViTTrainingOptions().TeacherFingerprint().Should().Be("teacher 0.5 1");
        // with every option changed, the same as the hand-kept list of the earlier versions
        var o = EveryOptionChanged();
        o.Fingerprint().Should().Be(string.Join("|", o.Epochs, o.BatchSize, o.LearningRate.ToString("R"), o.MinLearningRate.ToString("R"),
            o.WarmupEpochs.ToString("R"), o.WeightDecay.ToString("R"), o.LabelSmoothing.ToString("R"), o.RandomCropPadding, o.HorizontalFlip,
            o.PixelScale.ToString("R"), string.Join(",", o.Mean), string.Join(",", o.Std), o.Seed, o.TrainingPrecision));
        o.TeacherFingerprint().Should().Be($"teacher {o.TeacherWeight:R} {o.TeacherTemperature:R}");
    }
}
