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
public sealed class TrainingLoop
{
    private const string CheckpointFile = "checkpoint.bin";
    private const string CheckpointMagic = "GOHSP-CHECKPOINT-2";

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
        long totalSteps = (long)stepsPerEpoch * o.Epochs;
        using var optimizer = CreateOptimizer(model, o);
        string fingerprint = $"{_stage}|{arch}|{train.Count}|{DataFingerprint(train)}|{o.Fingerprint()}";

        DeleteStaleCheckpointTemporaries();
        int startEpoch = TryResume(model, optimizer, fingerprint, o);
        StartEpoch = startEpoch;
        Hook?.OnTrainingStart(model, startEpoch, stepsPerEpoch);

        var previousPrecision = model.Precision;
        model.Precision = o.TrainingPrecision;
        try
        {
            for (int epoch = startEpoch; epoch < o.Epochs; epoch++)
            {
                var sw = Stopwatch.StartNew();
                model.train();
                var rng = new Random(EpochSeed(o.Seed, epoch, _stage));
                manual_seed(EpochSeed(o.Seed, epoch, _stage));
                int[] order = Enumerable.Range(0, train.Count).ToArray();
                rng.Shuffle(order);
                double lossSum = 0; long seen = 0, correct = 0;
                double lr = 0;
                for (int s = 0; s < stepsPerEpoch; s++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    long globalStep = (long)epoch * stepsPerEpoch + s;
                    lr = LearningRateAt(o, globalStep, stepsPerEpoch, totalSteps);
                    foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
                    int start = s * o.BatchSize, count = Math.Min(o.BatchSize, train.Count - start);
                    using (var scope = NewDisposeScope())
                    {
                        var (x, y) = MakeBatch(train, order.AsSpan(start, count), o, rng, device);
                        var logits = model.forward(x);
                        var loss = nn.functional.cross_entropy(logits, y, label_smoothing: o.LabelSmoothing);
                        var extra = Hook?.ExtraLoss(model, x, logits, y);
                        var total = extra is null ? loss : loss.add(extra, Scalars.One);   // the library's alpha: see Scalars
                        optimizer.zero_grad();
                        total.backward();
                        Hook?.AfterBackward(model, globalStep);
                        optimizer.step();
                        Hook?.AfterStep(model, globalStep, lr);
                        double l = loss.ToDouble();
                        if (!double.IsFinite(l))
                            throw new InvalidOperationException($"Training diverged in stage '{_stage}' at epoch {epoch + 1}, step {s + 1} (loss {l}). Lower LearningRate.");
                        lossSum += l * count;
                        correct += logits.argmax(1).eq(y).sum().ToInt64();
                        seen += count;
                    }
                    _progress?.Report(new ViTTrainingProgress(_stage, epoch + 1, o.Epochs, s + 1, stepsPerEpoch, lossSum / seen, lr,
                        seen / sw.Elapsed.TotalSeconds, EpochCompleted: false));
                }

                cancellationToken.ThrowIfCancellationRequested();
                double trainSeconds = sw.Elapsed.TotalSeconds;
                double? valAcc = validation is null ? null : Evaluate(model, validation, o, device);
                var extraFigures = new Dictionary<string, double>();
                Hook?.OnEpochEnd(model, epoch, extraFigures);
                var rec = new EpochRecord(epoch + 1, lossSum / seen, (double)correct / seen, valAcc, sw.Elapsed.TotalSeconds,
                    extraFigures.Count > 0 ? extraFigures : null);
                _history.Add(rec);
                SaveCheckpoint(model, optimizer, fingerprint, epoch + 1); // a finished epoch is a persisted epoch
                _log?.Invoke(FormatEpoch(rec, o.Epochs, lr, seen / trainSeconds));
                _progress?.Report(new ViTTrainingProgress(_stage, epoch + 1, o.Epochs, stepsPerEpoch, stepsPerEpoch, rec.Loss, lr,
                    seen / trainSeconds, EpochCompleted: true, rec.TrainAccuracy, valAcc));
            }
        }
        finally
        {
            model.Precision = previousPrecision;
            model.eval();
        }
        return model;
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
    }

    private static AdamW CreateOptimizer(VisionTransformerModel model, ViTTrainingOptions o)
    {
        var decay = new List<Parameter>();
        var noDecay = new List<Parameter>();
        foreach (var (name, p) in model.named_parameters())
        {
            if (p.dim() < 2 || name is "cls_token" or "pos_embed") noDecay.Add(p);
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

    /// <summary>
    /// Builds a normalised batch [n, C, S, S] (and labels) from raw pixels, applying random crop with zero
    /// padding and horizontal flips when <paramref name="augment"/> is given.
    /// </summary>
    internal static (Tensor images, Tensor labels) MakeBatch(ImageTensorData data, ReadOnlySpan<int> indices, ViTTrainingOptions o,
        Random? augment, Device device)
    {
        int n = indices.Length, c = data.Channels, s = data.Size, len = data.ImageLength, plane = s * s;
        var buffer = new float[(long)n * len];
        var labels = new long[n];
        var scale = new float[c]; var shift = new float[c];
        for (int ch = 0; ch < c; ch++) { scale[ch] = o.PixelScale / o.Std[ch]; shift[ch] = o.Mean[ch] / o.Std[ch]; }
        int pad = augment is null ? 0 : o.RandomCropPadding;
        var src = data.Pixels;
        for (int i = 0; i < n; i++)
        {
            int idx = indices[i];
            labels[i] = data.Labels[idx];
            int dx = 0, dy = 0; bool flip = false;
            if (augment is not null)
            {
                if (pad > 0) { dx = augment.Next(-pad, pad + 1); dy = augment.Next(-pad, pad + 1); }
                if (o.HorizontalFlip) flip = augment.Next(2) == 1;
            }
            long srcBase = (long)idx * len, dstBase = (long)i * len;
            for (int ch = 0; ch < c; ch++)
            {
                float a = scale[ch], b = shift[ch];
                float padValue = -b; // a zero (black) raw pixel after normalisation
                long sp = srcBase + (long)ch * plane, dp = dstBase + (long)ch * plane;
                if (dx == 0 && dy == 0 && !flip)
                {
                    for (int k = 0; k < plane; k++) buffer[dp + k] = src[sp + k] * a - b;
                    continue;
                }
                for (int y = 0; y < s; y++)
                {
                    int sy = y + dy;
                    long row = dp + (long)y * s;
                    if ((uint)sy >= (uint)s) { buffer.AsSpan((int)row, s).Fill(padValue); continue; }
                    for (int x = 0; x < s; x++)
                    {
                        int sx = (flip ? s - 1 - x : x) + dx;
                        buffer[row + x] = (uint)sx >= (uint)s ? padValue : src[sp + (long)sy * s + sx] * a - b;
                    }
                }
            }
        }
        var images = tensor(buffer, new long[] { n, c, s, s });
        var labelTensor = tensor(labels);
        if (device.type != DeviceType.CPU)
        {
            images = images.to(device);
            labelTensor = labelTensor.to(device);
        }
        return (images, labelTensor);
    }

    /// <summary>Top-1 accuracy of <paramref name="model"/> on labelled data (no augmentation, no gradients).</summary>
    public static double Evaluate(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device? device = null)
    {
        if (data.Count == 0) return double.NaN;
        device ??= model.parameters().First().device;
        long correct = 0;
        ForEachBatch(model, data, options, device, (logits, labels) => correct += logits.argmax(1).eq(labels).sum().ToInt64());
        return (double)correct / data.Count;
    }

    /// <summary>Class probabilities [Count, classes] for every image (no augmentation, no gradients), on the CPU.</summary>
    public static float[] PredictProbabilities(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device? device = null)
        => PerClassRows(model, data, options, logits => logits.softmax(1), device);

    /// <summary>
    /// <paramref name="rows"/>(logits) of every image, [Count, classes] as float32 on the CPU, in evaluation batches (no
    /// augmentation, no gradients).
    /// </summary>
    internal static float[] PerClassRows(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options,
        Func<Tensor, Tensor> rows, Device? device = null)
    {
        device ??= model.parameters().First().device;
        int k = model.Architecture.NumClasses;
        var result = new float[(long)data.Count * k];
        int offset = 0;
        ForEachBatch(model, data, options, device, (logits, _) =>
        {
            using var p = rows(logits).to(ScalarType.Float32).cpu();
            var values = p.data<float>().ToArray();
            values.CopyTo(result, offset);
            offset += values.Length;
        });
        return result;
    }

    /// <summary>Runs the model over data in evaluation batches inside dispose scopes: <paramref name="onBatch"/> gets (logits, labels).</summary>
    internal static void ForEachBatch(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device device,
        Action<Tensor, Tensor> onBatch)
        => ForEachInputBatch(model, data, options, device, (x, y) => onBatch(model.forward(x), y));

    /// <summary>
    /// Cuts <paramref name="data"/> into normalised evaluation batches (no augmentation) and calls
    /// <paramref name="onBatch"/>(images, labels) with the model in eval mode, without gradients, each batch in its own
    /// dispose scope; the model's train/eval mode is restored afterwards.
    /// </summary>
    internal static void ForEachInputBatch(VisionTransformerModel model, ImageTensorData data, ViTTrainingOptions options, Device device,
        Action<Tensor, Tensor> onBatch)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            var all = Enumerable.Range(0, data.Count).ToArray();
            for (long start = 0; start < data.Count; start += options.EvaluationBatchSize)
            {
                int count = (int)Math.Min(options.EvaluationBatchSize, data.Count - start);
                using var scope = NewDisposeScope();
                var (x, y) = MakeBatch(data, all.AsSpan((int)start, count), options, null, device);
                onBatch(x, y);
            }
        }
        finally
        {
            if (wasTraining) model.train();
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
        return Convert.ToHexString(sha.GetHashAndReset(), 0, 16);
    }

    /// <summary>Deletes temporary checkpoint files that a killed run left behind (an atomic write it never finished).</summary>
    private void DeleteStaleCheckpointTemporaries()
    {
        var folder = _options.CheckpointFolder;
        if (string.IsNullOrEmpty(folder)) return;
        foreach (var stale in AtomicFile.DeleteStaleTemporaries(Path.Combine(folder, CheckpointFile)))
            _log?.Invoke($"[{_stage}] deleted {stale}, a temporary checkpoint left by an interrupted run.");
    }

    /// <summary>
    /// Resumes from the checkpoint when it belongs to this run. Everything is read and checked into scratch objects first
    /// (weights into a scratch model, optimiser state into a scratch AdamW, hook state into memory); the model, the optimiser
    /// and the hook are changed only after the whole file has been read, so an unreadable checkpoint leaves them untouched.
    /// </summary>
    private int TryResume(VisionTransformerModel model, AdamW optimizer, string fingerprint, ViTTrainingOptions o)
    {
        var folder = _options.CheckpointFolder;
        if (string.IsNullOrEmpty(folder)) return 0;
        var path = Path.Combine(folder, CheckpointFile);
        if (!File.Exists(path)) return 0;
        int completed;
        List<EpochRecord> history;
        byte[] optimizerState, hookState;
        VisionTransformerModel? saved = null;
        try
        {
            using (var fs = File.OpenRead(path))
            using (var r = new BinaryReader(fs, Encoding.UTF8))
            {
                if (r.ReadString() != CheckpointMagic) throw new InvalidDataException("not a checkpoint file of this version");
                string fp = r.ReadString();
                if (fp != fingerprint)
                {
                    _log?.Invoke($"[{_stage}] checkpoint in {folder} belongs to another run (different data, architecture or options); starting from epoch 1.");
                    return 0;
                }
                completed = r.ReadInt32();
                if (completed < 1 || completed > o.Epochs) throw new InvalidDataException($"it records {completed} finished epochs of {o.Epochs}");
                int n = r.ReadInt32();
                if (n < 0 || n > completed) throw new InvalidDataException($"it has {n} history records for {completed} epochs");
                history = new List<EpochRecord>(n);
                for (int i = 0; i < n; i++)
                {
                    int e = r.ReadInt32(); double loss = r.ReadDouble(), acc = r.ReadDouble();
                    double? val = r.ReadBoolean() ? r.ReadDouble() : null;
                    double sec = r.ReadDouble();
                    int extraCount = r.ReadInt32();
                    if (extraCount < 0 || extraCount > 1024) throw new InvalidDataException($"history record {i} has {extraCount} figures");
                    Dictionary<string, double>? extra = extraCount > 0 ? new() : null;
                    for (int j = 0; j < extraCount; j++) extra![r.ReadString()] = r.ReadDouble();
                    history.Add(new EpochRecord(e, loss, acc, val, sec, extra));
                }
                saved = VisionTransformerModel.Load(r);
                if (!saved.Architecture.Equals(model.Architecture))
                    throw new InvalidDataException($"its model is {saved.Architecture}, this run trains {model.Architecture}");
                optimizerState = ReadSection(r, "optimiser state");
                hookState = ReadSection(r, "hook state");
                if (fs.Position != fs.Length) throw new InvalidDataException($"{fs.Length - fs.Position} bytes follow the last section");
            }
            var source = saved.state_dict();
            foreach (var (name, t) in model.state_dict())
                if (!source.TryGetValue(name, out var v) || !v.shape.SequenceEqual(t.shape))
                    throw new InvalidDataException($"tensor '{name}' is missing or misshaped");
            using (var scratch = CreateOptimizer(saved, o))
            using (var ms = new MemoryStream(optimizerState, writable: false))
            using (var or = new BinaryReader(ms))
                scratch.load_state_dict(or); // throws here, before anything of this run changes, if the state does not fit

            // Everything was read: apply it. The hook goes first (it is the only part whose content is not checked yet).
            if (Hook is not null)
            {
                using var hs = new BinaryReader(new MemoryStream(hookState, writable: false));
                Hook.LoadState(hs);
            }
            using (var ms = new MemoryStream(optimizerState, writable: false))
            using (var or = new BinaryReader(ms))
                optimizer.load_state_dict(or);
            using (no_grad())
                foreach (var (name, t) in model.state_dict()) t.copy_(source[name]);
        }
        catch (Exception e) when (e is not (OutOfMemoryException or OperationCanceledException))
        {
            _log?.Invoke($"[{_stage}] ignoring unreadable checkpoint {path} ({e.Message}); starting from epoch 1.");
            return 0;
        }
        finally
        {
            saved?.Dispose();
        }
        _history.AddRange(history);
        _log?.Invoke($"[{_stage}] resumed from checkpoint {path}: {completed} of {_options.Epochs} epochs already done.");
        return completed;
    }

    private static byte[] ReadSection(BinaryReader r, string what)
    {
        long length = r.ReadInt64();
        long left = r.BaseStream.Length - r.BaseStream.Position;
        if (length < 0 || length > left)
            throw new InvalidDataException($"its {what} claims {length:N0} bytes, but only {left:N0} follow");
        return r.ReadBytes((int)length);
    }

    private static void WriteSection(BinaryWriter w, Action<BinaryWriter> write)
    {
        using var ms = new MemoryStream();
        using (var sw = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true)) write(sw);
        w.Write(ms.Length);
        w.Write(ms.GetBuffer(), 0, (int)ms.Length);
    }

    private void SaveCheckpoint(VisionTransformerModel model, AdamW optimizer, string fingerprint, int completedEpochs)
    {
        var folder = _options.CheckpointFolder;
        if (string.IsNullOrEmpty(folder)) return;
        Directory.CreateDirectory(folder);
        AtomicFile.Write(Path.Combine(folder, CheckpointFile), fs =>
        {
            using var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true);
            w.Write(CheckpointMagic);
            w.Write(fingerprint);
            w.Write(completedEpochs);
            w.Write(_history.Count);
            foreach (var h in _history)
            {
                w.Write(h.Epoch); w.Write(h.Loss); w.Write(h.TrainAccuracy);
                w.Write(h.ValidationAccuracy.HasValue); if (h.ValidationAccuracy.HasValue) w.Write(h.ValidationAccuracy.Value);
                w.Write(h.Seconds);
                w.Write(h.Extra?.Count ?? 0);
                if (h.Extra is not null) foreach (var kv in h.Extra) { w.Write(kv.Key); w.Write(kv.Value); }
            }
            model.Save(w);
            WriteSection(w, optimizer.save_state_dict);
            WriteSection(w, hw => Hook?.SaveState(hw));
        });
    }
}
