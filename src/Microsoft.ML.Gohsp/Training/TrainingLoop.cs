using System.Diagnostics;
using System.Text;
using Microsoft.ML.Gohsp.Platform;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// The one training loop of the library (pure TorchSharp): AdamW with decoupled weight decay on weight
/// matrices, linear warm-up + cosine learning-rate decay per step, label-smoothed cross-entropy, random
/// crop/flip augmentation, optional bf16 mixed precision, per-epoch validation, resumable checkpoints and
/// <see cref="ITrainingHook"/> extension points. Every step runs inside <c>torch.NewDisposeScope()</c>.
/// </summary>
public sealed partial class TrainingLoop
{
    private readonly ViTTrainingOptions _options;
    private readonly string _stage;
    private readonly Action<string>? _log;
    private readonly IProgress<ViTTrainingProgress>? _progress;
    private readonly List<EpochRecord> _history = new();

    /// <summary>Creates a loop.</summary>
    /// <param name="options">Hyper-parameters (validated by <see cref="Train"/>).</param>
    /// <param name="stage">Name of the stage, used in logs, progress reports and checkpoint matching.</param>
    /// <param name="log">Receives one line per epoch (and resume notices).</param>
    /// <param name="progress">Receives a report after every step and after every epoch.</param>
    public TrainingLoop(ViTTrainingOptions options, string stage = "dense", Action<string>? log = null, IProgress<ViTTrainingProgress>? progress = null)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _stage = stage;
        _log = log;
        _progress = progress;
    }

    /// <summary>Optional hook (soft pruning, masking, distillation…).</summary>
    public ITrainingHook? Hook { get; set; }

    /// <summary>
    /// AdamW's state to start from instead of zero moments (the state of an earlier stage, sliced by the surgery); null starts
    /// fresh. A run that resumes from a checkpoint takes the checkpoint's state instead.
    /// </summary>
    internal OptimizerMoments? InitialMoments { get; init; }

    /// <summary>Whether <see cref="Train"/> keeps AdamW's final state in <see cref="FinalMoments"/>.</summary>
    internal bool CaptureMoments { get; init; }

    /// <summary>AdamW's state after the last <see cref="Train"/> call with <see cref="CaptureMoments"/>; the caller owns it.</summary>
    internal OptimizerMoments? FinalMoments { get; private set; }

    /// <summary>Per-epoch history of the last <see cref="Train"/> call (including epochs restored from a checkpoint).</summary>
    public IReadOnlyList<EpochRecord> History => _history;

    /// <summary>The 0-based epoch the last run started from (0 unless it resumed from a checkpoint).</summary>
    public int StartEpoch { get; private set; }

    /// <summary>Learning rate at a global step for a run of <paramref name="totalSteps"/> steps.</summary>
    public static double LearningRateAt(ViTTrainingOptions o, long step, long stepsPerEpoch, long totalSteps)
    {
        double warm = o.WarmupEpochs * stepsPerEpoch;
        if (step < warm) return o.LearningRate * (step + 1) / warm;
        double span = Math.Max(1.0, totalSteps - warm);
        double t = Math.Clamp((step - warm) / span, 0, 1);
        return o.MinLearningRate + 0.5 * (o.LearningRate - o.MinLearningRate) * (1 + Math.Cos(Math.PI * t));
    }

    /// <summary>Optimiser steps per epoch: one per batch, the last batch may be smaller (a batch larger than the data is one step).</summary>
    public static int StepsPerEpoch(int images, int batchSize)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(images);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        return (int)(((long)images + batchSize - 1) / batchSize);
    }

    /// <summary>Trains <paramref name="model"/> in place and returns it (moved to the training device).</summary>
    public VisionTransformerModel Train(VisionTransformerModel model, ImageTensorData train, ImageTensorData? validation = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(train);
        var o = _options;
        var arch = model.Architecture;
        o.Validate(arch.Channels);
        if (train.Count == 0) throw new ArgumentException("The training data has no rows.", nameof(train));
        CheckCompatible(arch, train, nameof(train));
        if (validation is not null) CheckCompatible(arch, validation, nameof(validation));

        var device = TorchDevices.Resolve(o.Device);
        using var threads = TorchDevices.UseThreads(o.NumberOfThreads);
        cancellationToken.ThrowIfCancellationRequested();
        model.to(device);
        _history.Clear();

        int stepsPerEpoch = StepsPerEpoch(train.Count, o.BatchSize);
        using var optimizer = CreateOptimizer(model, o);
        string fingerprint = $"{_stage}|{arch}|{train.Count}|{DataFingerprint(train)}|{o.Fingerprint()}"
            + (train.TeacherProbabilities is null ? "" : "|" + o.TeacherFingerprint())
            + (Hook is null ? "" : "|hook " + Hook.Fingerprint)
            + (InitialMoments is null ? "" : "|carried optimiser moments");
        var run = new Run(model, optimizer, train, validation, device, stepsPerEpoch, (long)stepsPerEpoch * o.Epochs, cancellationToken);

        DeleteStaleCheckpointTemporaries();
        StartEpoch = TryResume(model, optimizer, fingerprint, o);
        if (StartEpoch == 0) InitialMoments?.LoadInto(model, optimizer);
        Hook?.OnTrainingStart(model, StartEpoch, stepsPerEpoch);

        var previousPrecision = model.Precision;
        model.Precision = o.TrainingPrecision;
        try
        {
            for (int epoch = StartEpoch; epoch < o.Epochs; epoch++)
            {
                var figures = TrainEpoch(run, epoch);
                cancellationToken.ThrowIfCancellationRequested();
                FinishEpoch(run, epoch, figures, fingerprint);
            }
            if (CaptureMoments) FinalMoments = OptimizerMoments.Capture(model, optimizer);
        }
        finally
        {
            model.Precision = previousPrecision;
            model.eval();
        }
        return model;
    }

    /// <summary>What one <see cref="Train"/> call works with, fixed for the whole run.</summary>
    private sealed record Run(VisionTransformerModel Model, AdamW Optimizer, ImageTensorData Data, ImageTensorData? Validation,
        Device Device, int StepsPerEpoch, long TotalSteps, CancellationToken Cancellation);

    /// <summary>The running figures of an epoch: summed loss, images seen and classified right, the last step's learning rate.</summary>
    private sealed class EpochFigures
    {
        public Stopwatch Clock { get; } = Stopwatch.StartNew();
        public double LossSum { get; set; }
        public double TeacherKlSum { get; set; }
        public long Seen { get; set; }
        public long Correct { get; set; }
        public double LearningRate { get; set; }
    }

    /// <summary>
    /// One epoch's optimiser steps: shuffling, augmentation and torch are seeded from (seed, epoch, stage), so that a resumed
    /// run takes the steps an uninterrupted one takes.
    /// </summary>
    private EpochFigures TrainEpoch(Run run, int epoch)
    {
        var o = _options;
        var figures = new EpochFigures();
        run.Model.train();
        var rng = new Random(EpochSeed(o.Seed, epoch, _stage));
        manual_seed(EpochSeed(o.Seed, epoch, _stage));
        int[] order = Enumerable.Range(0, run.Data.Count).ToArray();
        rng.Shuffle(order);
        for (int s = 0; s < run.StepsPerEpoch; s++)
        {
            run.Cancellation.ThrowIfCancellationRequested();
            TrainStep(run, epoch, s, order, rng, figures);
            _progress?.Report(new ViTTrainingProgress(_stage, epoch + 1, o.Epochs, s + 1, run.StepsPerEpoch, figures.LossSum / figures.Seen,
                figures.LearningRate, figures.Seen / figures.Clock.Elapsed.TotalSeconds, EpochCompleted: false));
        }
        return figures;
    }

    /// <summary>One optimiser step on the batch <paramref name="s"/> of <paramref name="order"/>, inside a dispose scope.</summary>
    private void TrainStep(Run run, int epoch, int s, int[] order, Random rng, EpochFigures figures)
    {
        var o = _options;
        var model = run.Model;
        long globalStep = (long)epoch * run.StepsPerEpoch + s;
        double lr = LearningRateAt(o, globalStep, run.StepsPerEpoch, run.TotalSteps);
        figures.LearningRate = lr;
        foreach (var g in run.Optimizer.ParamGroups) g.LearningRate = lr;
        int start = s * o.BatchSize, count = Math.Min(o.BatchSize, run.Data.Count - start);
        using var scope = NewDisposeScope();
        var (x, y) = MakeBatch(run.Data, order.AsSpan(start, count), o, rng, run.Device);
        var logits = model.forward(x);
        var loss = nn.functional.cross_entropy(logits, y, label_smoothing: o.LabelSmoothing);
        var objective = loss;
        Tensor? teacherKl = null;
        if (run.Data.TeacherProbabilities is not null && o.TeacherWeight > 0)
        {
            // α·T²·KL(teacher ‖ student) + (1 − α)·CE, the teacher's rows in the batch's order
            var teacher = TeacherBatch(run.Data, order.AsSpan(start, count), run.Device);
            teacherKl = DistillationLoss.FromProbabilities(logits, teacher, o.TeacherTemperature);
            using var alpha = o.TeacherWeight.ToScalar();
            using var labelWeight = (1 - o.TeacherWeight).ToScalar();
            objective = loss.mul(labelWeight).add(teacherKl, alpha);
        }
        var extra = Hook?.ExtraLoss(model, x, logits, y);
        var total = extra is null ? objective : objective.add(extra, Scalars.One);   // the library's alpha: see Scalars
        run.Optimizer.zero_grad();
        total.backward();
        Hook?.AfterBackward(model, globalStep);
        run.Optimizer.step();
        Hook?.AfterStep(model, globalStep, lr);
        double l = loss.ToDouble();
        if (!double.IsFinite(l))
            throw new InvalidOperationException($"Training diverged in stage '{_stage}' at epoch {epoch + 1}, step {s + 1} (loss {l}). Lower LearningRate.");
        figures.LossSum += l * count;
        if (teacherKl is not null) figures.TeacherKlSum += teacherKl.ToDouble() / (o.TeacherTemperature * o.TeacherTemperature) * count;
        figures.Correct += logits.argmax(1).eq(y).sum().ToInt64();
        figures.Seen += count;
    }

    /// <summary>
    /// Ends an epoch: validation, the hook's figures, the history record, the checkpoint (a finished epoch is a persisted
    /// epoch: it is saved before the epoch is logged and reported), the log line and the progress report.
    /// </summary>
    private void FinishEpoch(Run run, int epoch, EpochFigures figures, string fingerprint)
    {
        var o = _options;
        double trainSeconds = figures.Clock.Elapsed.TotalSeconds;
        double seen = figures.Seen;
        double? valAcc = run.Validation is null ? null : Evaluate(run.Model, run.Validation, o, run.Device);
        var extraFigures = new Dictionary<string, double>();
        if (run.Data.TeacherProbabilities is not null && o.TeacherWeight > 0) extraFigures["teacher KL"] = figures.TeacherKlSum / seen;
        Hook?.OnEpochEnd(run.Model, epoch, extraFigures);
        var rec = new EpochRecord(epoch + 1, figures.LossSum / seen, figures.Correct / seen, valAcc, figures.Clock.Elapsed.TotalSeconds,
            extraFigures.Count > 0 ? extraFigures : null);
        _history.Add(rec);
        SaveCheckpoint(run.Model, run.Optimizer, fingerprint, epoch + 1);
        _log?.Invoke(FormatEpoch(rec, o.Epochs, figures.LearningRate, seen / trainSeconds));
        _progress?.Report(new ViTTrainingProgress(_stage, epoch + 1, o.Epochs, run.StepsPerEpoch, run.StepsPerEpoch, rec.Loss,
            figures.LearningRate, seen / trainSeconds, EpochCompleted: true, rec.TrainAccuracy, valAcc));
    }

    private string FormatEpoch(EpochRecord r, int epochs, double lr, double imagesPerSecond)
    {
        var sb = new StringBuilder();
        sb.Append($"[{_stage}] epoch {r.Epoch}/{epochs}: loss {r.Loss:F4}, train acc {r.TrainAccuracy:P1}");
        if (r.ValidationAccuracy is double v) sb.Append($", validation acc {v:P2}");
        sb.Append($", lr {lr:G3}, {imagesPerSecond:F0} img/s, {r.Seconds:F1} s");
        if (r.Extra is not null) foreach (var kv in r.Extra) sb.Append($", {kv.Key} {kv.Value:G4}");
        return sb.ToString();
    }

    private static void CheckCompatible(ViTArchitecture arch, ImageTensorData data, string name)
    {
        if (data.Channels != arch.Channels || data.Size != arch.ImageSize)
            throw new ArgumentException($"The {name} images are {data.Channels}×{data.Size}×{data.Size}; the model expects {arch.Channels}×{arch.ImageSize}×{arch.ImageSize}.", name);
        foreach (int l in data.Labels)
            if (l >= arch.NumClasses)
                throw new ArgumentException($"The {name} data has label index {l}, but the model has {arch.NumClasses} classes.", name);
        if (data.TeacherProbabilities is not null && data.TeacherClasses != arch.NumClasses)
            throw new ArgumentException($"The {name} data's teacher probabilities have {data.TeacherClasses} classes per image; the model has {arch.NumClasses}.", name);
    }

    /// <summary>AdamW over two parameter groups: weight decay on weight matrices, none on biases, norms, the class token and the position embedding.</summary>
    internal static AdamW CreateOptimizer(VisionTransformerModel model, ViTTrainingOptions o)
    {
        var decay = new List<Parameter>();
        var noDecay = new List<Parameter>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (p.dim() < 2 || name is "cls_token" or "dist_token" or "pos_embed") noDecay.Add(p);
            else decay.Add(p);
        }
        return optim.AdamW(new[]
        {
            new AdamW.ParamGroup(decay, o.LearningRate, 0.9, 0.999, 1e-8, o.WeightDecay),
            new AdamW.ParamGroup(noDecay, o.LearningRate, 0.9, 0.999, 1e-8, 0.0),
        }, o.LearningRate);
    }

    internal static int EpochSeed(int seed, int epoch, string stage)
    {
        unchecked
        {
            uint h = 2166136261;
            foreach (char c in stage) h = (h ^ c) * 16777619;
            return (int)((uint)seed * 1_000_003u + (uint)epoch * 7_919u + h) & int.MaxValue;
        }
    }

    // ---- checkpoints --------------------------------------------------------------------------------------

    /// <summary>
    /// A content hash of the training data (row count, image shape, every label and a strided sample of 65,536 pixels), so
    /// that a checkpoint of a run on other images with the same row count is not resumed.
    /// </summary>
    internal static string DataFingerprint(ImageTensorData data)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        Span<byte> header = stackalloc byte[12];
        BitConverter.TryWriteBytes(header, data.Count);
        BitConverter.TryWriteBytes(header[4..], data.Channels);
        BitConverter.TryWriteBytes(header[8..], data.Size);
        sha.AppendData(header);
        sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.Labels.AsSpan()));
        const int samples = 65_536;
        var pixels = data.Pixels;
        long stride = Math.Max(1, pixels.LongLength / samples);
        var sample = new float[Math.Min(samples, pixels.LongLength)];
        for (int i = 0; i < sample.Length; i++) sample[i] = pixels[i * stride];
        sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(sample.AsSpan()));
        if (data.TeacherProbabilities is { } teacher) sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(teacher.AsSpan()));
        return Convert.ToHexString(sha.GetHashAndReset(), 0, 16);
    }

    /// <summary>Deletes temporary checkpoint files that a killed run left behind (an atomic write it never finished).</summary>
    private void DeleteStaleCheckpointTemporaries()
    {
        var folder = _options.CheckpointFolder;
        if (string.IsNullOrEmpty(folder)) return;
        foreach (var stale in AtomicFile.DeleteStaleTemporaries(Path.Combine(folder, Checkpoint.FileName)))
            _log?.Invoke($"[{_stage}] deleted {stale}, a temporary checkpoint left by an interrupted run.");
    }

    /// <summary>
    /// Resumes from the checkpoint when it belongs to this run (<see cref="Checkpoint.RestoreInto"/>: the model, the optimiser
    /// and the hook change only when the whole checkpoint was read and fits); an unreadable one is ignored with a log line.
    /// </summary>
    /// <returns>The number of epochs the checkpoint finished (0 without a checkpoint of this run).</returns>
    private int TryResume(VisionTransformerModel model, AdamW optimizer, string fingerprint, ViTTrainingOptions o)
    {
        var folder = _options.CheckpointFolder;
        if (string.IsNullOrEmpty(folder)) return 0;
        var path = Path.Combine(folder, Checkpoint.FileName);
        if (!File.Exists(path)) return 0;
        int completed;
        IReadOnlyList<EpochRecord> history;
        try
        {
            using var checkpoint = Checkpoint.Read(path, fingerprint, o.Epochs);
            if (checkpoint is null)
            {
                _log?.Invoke($"[{_stage}] checkpoint in {folder} belongs to another run (different data, architecture or options); starting from epoch 1.");
                return 0;
            }
            checkpoint.RestoreInto(model, optimizer, Hook, m => CreateOptimizer(m, o));
            (completed, history) = (checkpoint.CompletedEpochs, checkpoint.History);
        }
        catch (Exception e) when (e is not (OutOfMemoryException or OperationCanceledException))
        {
            _log?.Invoke($"[{_stage}] ignoring unreadable checkpoint {path} ({e.Message}); starting from epoch 1.");
            return 0;
        }
        _history.AddRange(history);
        _log?.Invoke($"[{_stage}] resumed from checkpoint {path}: {completed} of {_options.Epochs} epochs already done.");
        return completed;
    }

    private void SaveCheckpoint(VisionTransformerModel model, AdamW optimizer, string fingerprint, int completedEpochs)
    {
        var folder = _options.CheckpointFolder;
        if (string.IsNullOrEmpty(folder)) return;
        Directory.CreateDirectory(folder);
        Checkpoint.Save(Path.Combine(folder, Checkpoint.FileName), fingerprint, completedEpochs, _history, model, optimizer, Hook);
    }
}
