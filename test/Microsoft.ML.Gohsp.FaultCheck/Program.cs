// usage:
//   Microsoft.ML.Gohsp.FaultCheck open-checkpoint <file>     import a pretrained checkpoint (.safetensors / .pth)
//   Microsoft.ML.Gohsp.FaultCheck open-model <zip>           ML.NET Model.Load of a model zip
//   Microsoft.ML.Gohsp.FaultCheck open-cifar <path>          read the CIFAR-10 test split
//   Microsoft.ML.Gohsp.FaultCheck train <cifar> <work> [pause-at-line | write:<dense epoch>]
// The open-* verbs print "REFUSED <exception type>: <message>" and exit 3 when the file is refused with an exception, "OPENED"
// and exit 0 when it loads. "train" runs dense training (3 epochs), GOHSP soft pruning (2) and fine-tuning (2) with
// checkpoints under <work>, printing every step ("STEP <stage> <epoch> <step>") and log line ("LOG ..."), and saves the final
// weights to <work>/final.bin. With a third argument it stops after printing that line (e.g. "STEP dense 2 1": in the
// middle of dense epoch 2), or, given "write:N", inside the atomic checkpoint write of dense epoch N after printing
// "IN-ATOMIC-WRITE", and waits to be killed: so the kill always lands at the same point of the run.
using Microsoft.ML;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

var stdout = new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = true };
try
{
    switch (args[0])
    {
        case "open-checkpoint":
            using (var imported = PretrainedViT.Import(args[1], new PretrainedImportOptions { NumClasses = 10 }).Model) { }
            break;
        case "open-model":
            new MLContext().Model.Load(args[1], out _);
            break;
        case "open-cifar":
            Cifar10.Read(args[1], Cifar10Split.Test);
            break;
        case "train":
            Train(args[1], args[2], args.Length > 3 ? args[3] : null, stdout);
            break;
        default:
            throw new ArgumentException($"unknown verb {args[0]}");
    }
    stdout.WriteLine("OPENED");
    return 0;
}
catch (Exception e) when (args[0].StartsWith("open-", StringComparison.Ordinal))
{
    while (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) e = inner; // ML.NET's loader invokes by reflection
    stdout.WriteLine($"REFUSED {e.GetType().Name}: {e.Message}");
    return 3;
}

static void Train(string cifar, string work, string? pauseAt, StreamWriter stdout)
{
    int blockAtEpoch = pauseAt is not null && pauseAt.StartsWith("write:", StringComparison.Ordinal)
        ? int.Parse(pauseAt["write:".Length..], System.Globalization.CultureInfo.InvariantCulture) : 0;
    var data = Cifar10.Read(cifar, Cifar10Split.Train, 48).ToTensorData();
    ViTTrainingOptions Stage(string folder, int epochs) => new()
    {
        Epochs = epochs, BatchSize = 16, LearningRate = 1e-3, WarmupEpochs = 0, NumberOfThreads = 1, Device = ViTDevice.Cpu, Seed = 5,
        CheckpointFolder = Path.Combine(work, folder),
    };
    var progress = new Reporter(p =>
    {
        string line = $"STEP {p.Stage} {p.Epoch} {(p.EpochCompleted ? "end" : p.Step.ToString(System.Globalization.CultureInfo.InvariantCulture))}";
        stdout.WriteLine(line);
        if (line == pauseAt) Thread.Sleep(Timeout.Infinite); // waits to be killed in the middle of the epoch
    });
    Action<string> log = line => stdout.WriteLine("LOG " + line);

    using var model = new VisionTransformerModel(ViTArchitecture.Uniform(32, 8, 32, 2, 2, 64, 10), seed: 5);
    new TrainingLoop(Stage("dense", 3), "dense", log, progress) { Hook = new BlockInWrite(blockAtEpoch, stdout) }.Train(model, data);
    var gohsp = new GohspOptions
    {
        Sparsity = 0.5, CalibrationImages = 16,
        SoftPruning = Stage("soft", 2), FineTune = Stage("fine-tune", 2),
    };
    gohsp.SoftPruning.MinLearningRate = gohsp.SoftPruning.LearningRate;
    var result = new GohspPruner(gohsp).Run(new PruningContext(model, data) { Log = log, Progress = progress });
    using var pruned = result.Model;
    AtomicFile.Write(Path.Combine(work, "final.bin"), s =>
    {
        using var w = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
        pruned.Save(w);
    });
    stdout.WriteLine("DONE");
}

/// <summary>Reports synchronously on the training thread.</summary>
internal sealed class Reporter(Action<ViTTrainingProgress> report) : IProgress<ViTTrainingProgress>
{
    public void Report(ViTTrainingProgress value) => report(value);
}

/// <summary>A hook with no state whose SaveState — called inside the atomic checkpoint write — can wait to be killed.</summary>
internal sealed class BlockInWrite(int epoch, StreamWriter stdout) : ITrainingHook
{
    private int _epochsEnded;

    public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch) => _epochsEnded = startEpoch;

    public void OnEpochEnd(VisionTransformerModel model, int e, IDictionary<string, double> extra) => _epochsEnded = e + 1;

    public void SaveState(BinaryWriter writer)
    {
        writer.Write(_epochsEnded);
        if (_epochsEnded != epoch) return;
        writer.Flush();
        stdout.WriteLine("IN-ATOMIC-WRITE");
        Thread.Sleep(Timeout.Infinite);
    }

    public void LoadState(BinaryReader reader) => reader.ReadInt32();
}
