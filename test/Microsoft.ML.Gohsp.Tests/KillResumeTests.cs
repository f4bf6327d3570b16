using FluentAssertions;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// A real kill: test/Microsoft.ML.Gohsp.FaultCheck trains dense (3 epochs) → GOHSP soft pruning (2) → fine-tune (2) with
/// checkpoints, and is killed with Process.Kill inside an atomic checkpoint write, then mid-epoch in each stage. Every rerun
/// resumes at the right epoch, and the final weights equal those of an uninterrupted run.
/// </summary>
public class KillResumeTests
{
    [Fact]
    public void KilledRunsResumeAtTheRightEpochAndEndWithTheWeightsOfAnUninterruptedRun()
    {
        var root = Directory.CreateTempSubdirectory("gohsp-kill-").FullName;
        try
        {
            string reference = Path.Combine(root, "reference"), work = Path.Combine(root, "killed");
            var (refLines, _) = FaultApp.Train(reference);
            refLines.Should().Contain("DONE");

            // 1. killed inside the atomic write of the dense epoch-2 checkpoint: epoch 1's checkpoint stays, the temp file is left
            var (lines, killed) = FaultApp.Train(work, killAt: "IN-ATOMIC-WRITE", blockAtEpoch: 2);
            killed.Should().BeTrue();
            var denseDir = Path.Combine(work, "dense");
            File.Exists(Path.Combine(denseDir, "checkpoint.bin")).Should().BeTrue();
            Directory.GetFiles(denseDir, "*.tmp").Should().ContainSingle("the kill came between creating the temp file and renaming it");

            // 2. resumes after dense epoch 1, deletes the stale temp file; killed mid-way through dense epoch 3
            (lines, killed) = FaultApp.Train(work, killAt: "STEP dense 3 2");
            killed.Should().BeTrue();
            lines.Should().Contain(l => l.StartsWith("LOG [dense] deleted ", StringComparison.Ordinal) && l.EndsWith(".tmp, a temporary checkpoint left by an interrupted run.", StringComparison.Ordinal));
            lines.Should().Contain(l => l.StartsWith("LOG [dense] resumed", StringComparison.Ordinal) && l.EndsWith(": 1 of 3 epochs already done.", StringComparison.Ordinal));
            lines.Should().NotContain("STEP dense 1 1").And.Contain("STEP dense 2 1");
            Directory.GetFiles(denseDir, "*.tmp").Should().BeEmpty();

            // 3. dense resumes after epoch 2; killed mid-way through soft-pruning epoch 2
            (lines, killed) = FaultApp.Train(work, killAt: "STEP gohsp-soft-pruning 2 2");
            killed.Should().BeTrue();
            lines.Should().Contain(l => l.StartsWith("LOG [dense] resumed", StringComparison.Ordinal) && l.EndsWith(": 2 of 3 epochs already done.", StringComparison.Ordinal));
            lines.Should().Contain("STEP dense 3 1").And.NotContain("STEP dense 2 1");

            // 4. soft pruning resumes after its epoch 1; killed mid-way through fine-tune epoch 2
            (lines, killed) = FaultApp.Train(work, killAt: "STEP gohsp-fine-tune 2 2");
            killed.Should().BeTrue();
            lines.Should().Contain(l => l.EndsWith("dense/checkpoint.bin: 3 of 3 epochs already done.", StringComparison.Ordinal));
            lines.Should().Contain(l => l.StartsWith("LOG [gohsp-soft-pruning] resumed", StringComparison.Ordinal) && l.EndsWith(": 1 of 2 epochs already done.", StringComparison.Ordinal));
            lines.Should().NotContain(l => l.StartsWith("STEP dense", StringComparison.Ordinal));

            // 5. fine-tuning resumes after its epoch 1 and the run finishes
            (lines, killed) = FaultApp.Train(work);
            killed.Should().BeFalse();
            lines.Should().Contain(l => l.StartsWith("LOG [gohsp-soft-pruning] resumed", StringComparison.Ordinal) && l.EndsWith(": 2 of 2 epochs already done.", StringComparison.Ordinal));
            lines.Should().Contain(l => l.StartsWith("LOG [gohsp-fine-tune] resumed", StringComparison.Ordinal) && l.EndsWith(": 1 of 2 epochs already done.", StringComparison.Ordinal));
            lines.Should().Contain("STEP gohsp-fine-tune 2 1").And.NotContain("STEP gohsp-fine-tune 1 1").And.Contain("DONE");

            Directory.GetFiles(work, "*.tmp", SearchOption.AllDirectories).Should().BeEmpty();
            using var expected = Load(Path.Combine(reference, "final.bin"));
            using var actual = Load(Path.Combine(work, "final.bin"));
            actual.Architecture.Should().Be(expected.Architecture);
            var e = expected.state_dict();
            foreach (var (name, t) in actual.state_dict())
                t.data<float>().ToArray().Should().Equal(e[name].data<float>().ToArray(), $"tensor {name} of the resumed run equals the uninterrupted run's");
        }
        finally
        {
            Directory.Delete(root, true);
        }
    }

    private static VisionTransformerModel Load(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path));
        return VisionTransformerModel.Load(r);
    }
}
