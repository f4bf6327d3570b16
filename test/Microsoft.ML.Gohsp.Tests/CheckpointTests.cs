using System.Text;
using FluentAssertions;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// The checkpoint file of <see cref="TrainingLoop"/>: its writer and reader agree on every field and byte, a file of the
/// current format written earlier still reads and restores, and a damaged file fails with a message saying what is wrong.
/// </summary>
public class CheckpointTests
{
    private static readonly ViTArchitecture Micro = ViTArchitecture.Uniform(8, 4, 8, 1, 2, 16, 3);

    /// <summary>The fingerprint stored in Fixtures/checkpoint/format2.bin (see the README beside it).</summary>
    private const string FixtureFingerprint =
        "fixture|ViT(img=8, patch=4, ch=3, dim=8, depth=1, classes=3, heads=2 qk=4 v=4 mlp=16)|6|D67594168B96F410C70872A2EF2DCA7D|" +
        "2|4|0.001|1E-05|1|0.05|0.1|4|True|0.003921569|0.4914,0.4822,0.4465|0.247,0.2435,0.2616|3|Float32";

    private static readonly EpochRecord[] History =
    [
        new(1, 2.5, 0.25, null, 1.5),
        new(2, 2.0, 0.5, 0.375, 1.25, new Dictionary<string, double> { ["residual"] = 0.125, ["kept"] = 3 }),
    ];

    [Fact]
    public void ACheckpointReadsBackWithEveryFieldAndRestoresARun()
    {
        using var folder = new TempFolder();
        using var model = new VisionTransformerModel(Micro, seed: 1);
        using var optimizer = TrainingLoop.CreateOptimizer(model, new ViTTrainingOptions());
        TakeOneStep(model, optimizer);
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        Checkpoint.Save(path, "run-a", 2, History, model, optimizer, new StateHook { Text = "admm", Number = 7 });

        using var read = Checkpoint.Read(path, "run-a", maxEpochs: 2);
        read.Should().NotBeNull();
        read!.Fingerprint.Should().Be("run-a");
        read.CompletedEpochs.Should().Be(2);
        read.History.Should().HaveCount(2);
        for (int i = 0; i < History.Length; i++)
        {
            var (expected, actual) = (History[i], read.History[i]);
            (actual.Epoch, actual.Loss, actual.TrainAccuracy, actual.ValidationAccuracy, actual.Seconds)
                .Should().Be((expected.Epoch, expected.Loss, expected.TrainAccuracy, expected.ValidationAccuracy, expected.Seconds));
            if (expected.Extra is null) actual.Extra.Should().BeNull();
            else actual.Extra.Should().BeEquivalentTo(expected.Extra);
        }
        read.Model.Architecture.Should().Be(Micro);
        AssertSameWeights(read.Model, model);
        read.OptimizerState.Should().Equal(OptimizerBytes(optimizer));

        // the reader consumed exactly what the writer wrote: written again, it is the same file
        using (var again = new MemoryStream())
        {
            using (var w = new BinaryWriter(again, Encoding.UTF8, leaveOpen: true)) read.Serialize(w);
            again.ToArray().Should().Equal(File.ReadAllBytes(path));
        }

        using var resumed = new VisionTransformerModel(Micro, seed: 9);
        using var resumedOptimizer = TrainingLoop.CreateOptimizer(resumed, new ViTTrainingOptions());
        var hook = new StateHook();
        read.RestoreInto(resumed, resumedOptimizer, hook, m => TrainingLoop.CreateOptimizer(m, new ViTTrainingOptions()));
        AssertSameWeights(resumed, model);
        OptimizerBytes(resumedOptimizer).Should().Equal(OptimizerBytes(optimizer));
        (hook.Text, hook.Number).Should().Be(("admm", 7));

        Checkpoint.Read(path, "run-b", maxEpochs: 2).Should().BeNull("a checkpoint of another run is not resumed");
    }

    [Fact]
    public void ACheckpointOfFormat2WrittenEarlierStillReadsAndRestores()
    {
        var fixture = Path.Combine(AppContext.BaseDirectory, "Fixtures", "checkpoint", "format2.bin");
        using var read = Checkpoint.Read(fixture, FixtureFingerprint, maxEpochs: 2);
        read.Should().NotBeNull();
        read!.CompletedEpochs.Should().Be(2);
        read.History.Select(h => h.Epoch).Should().Equal(1, 2);
        read.History.Should().OnlyContain(h => h.ValidationAccuracy != null);
        read.History[0].Extra.Should().BeNull();
        read.History[1].Extra.Should().BeEquivalentTo(new Dictionary<string, double> { ["figure"] = 0.25 });
        read.Model.Architecture.Should().Be(Micro);

        var o = new ViTTrainingOptions();
        using var model = new VisionTransformerModel(Micro, seed: 5);
        using var optimizer = TrainingLoop.CreateOptimizer(model, o);
        var hook = new StateHook();
        read.RestoreInto(model, optimizer, hook, m => TrainingLoop.CreateOptimizer(m, o));
        model.state_dict()["head.bias"].data<float>().ToArray().Should().Equal(-0.0003026491f, 0.0002806381f, 0.00032434554f);
        (hook.Text, hook.Number).Should().Be(("hook-state", 42));
        OptimizerBytes(optimizer).Should().Equal(read.OptimizerState);
    }

    [Fact]
    public void ATruncatedOrDamagedCheckpointFailsSayingWhatIsWrong()
    {
        using var folder = new TempFolder();
        using var model = new VisionTransformerModel(Micro, seed: 1);
        using var optimizer = TrainingLoop.CreateOptimizer(model, new ViTTrainingOptions());
        TakeOneStep(model, optimizer);
        var hook = new StateHook { Text = "state", Number = 3 };
        var path = Path.Combine(folder.Path, Checkpoint.FileName);
        Checkpoint.Save(path, "run-a", 2, History, model, optimizer, hook);
        byte[] file = File.ReadAllBytes(path);
        int hookStart = file.Length - hook.Bytes().Length - sizeof(long);

        string Failure(byte[] bytes, int maxEpochs = 2)
        {
            var damaged = Path.Combine(folder.Path, "damaged.bin");
            File.WriteAllBytes(damaged, bytes);
            Action read = () => Checkpoint.Read(damaged, "run-a", maxEpochs)?.Dispose();
            return read.Should().Throw<InvalidDataException>().Which.Message;
        }

        Failure([]).Should().Be("it does not start with 'GOHSP-CHECKPOINT-2': it is not a checkpoint of format 2");
        var otherTag = (byte[])file.Clone();
        otherTag[1] = (byte)'X';
        Failure(otherTag).Should().StartWith("it does not start with 'GOHSP-CHECKPOINT-2'");
        Failure(file[..22]).Should().Be("it ends inside its run fingerprint");
        Failure(file[..25]).Should().Be("it ends inside its history");
        Failure(file[..^1]).Should().Be($"its hook state claims {hook.Bytes().Length:N0} bytes, but only {hook.Bytes().Length - 1:N0} follow");
        Failure(file[..(hookStart + 3)]).Should().Be("it ends inside its hook state");
        Failure([.. file, 1, 2, 3]).Should().Be("3 bytes follow the last section");
        Failure(file, maxEpochs: 1).Should().Be("it records 2 finished epochs of 1");

        // cut anywhere, the file fails with one of the reader's messages, never with an exception of another type
        for (int cut = 0; cut < file.Length; cut += 97)
            Failure(file[..cut]).Should().MatchRegex(
                "^(it does not start with|it ends inside its (run fingerprint|history|optimiser state|hook state)$|its model is unreadable: |its (optimiser|hook) state claims )",
                $"a file cut after {cut} of {file.Length} bytes");
    }

    private static void TakeOneStep(VisionTransformerModel model, AdamW optimizer)
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        var logits = model.forward(rand(2, 3, 8, 8));
        nn.functional.cross_entropy(logits, tensor(new long[] { 0, 2 })).backward();
        optimizer.step();
    }

    private static byte[] OptimizerBytes(AdamW optimizer)
    {
        using var stream = new MemoryStream();
        using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(w);
        return stream.ToArray();
    }

    private static void AssertSameWeights(VisionTransformerModel actual, VisionTransformerModel expected)
    {
        var weights = actual.state_dict();
        foreach (var (name, t) in expected.state_dict())
            weights[name].data<float>().ToArray().Should().Equal(t.data<float>().ToArray(), name);
    }

    /// <summary>A hook whose checkpoint state is a string and a number.</summary>
    private sealed class StateHook : ITrainingHook
    {
        public string Text { get; set; } = "";
        public int Number { get; set; }

        public void SaveState(BinaryWriter writer)
        {
            writer.Write(Text);
            writer.Write(Number);
        }

        public void LoadState(BinaryReader reader)
        {
            Text = reader.ReadString();
            Number = reader.ReadInt32();
        }

        public byte[] Bytes()
        {
            using var stream = new MemoryStream();
            using (var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true)) SaveState(w);
            return stream.ToArray();
        }
    }

    private sealed class TempFolder : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("gohsp-checkpoint-").FullName;

        public void Dispose() => Directory.Delete(Path, true);
    }
}
