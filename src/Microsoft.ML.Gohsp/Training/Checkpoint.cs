using System.Text;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// The state a <see cref="TrainingLoop"/> run resumes from, and its file (<c>CheckpointFolder/checkpoint.bin</c>).
/// </summary>
/// <remarks>
/// The file holds, in this order: the tag <c>GOHSP-CHECKPOINT-{FormatVersion}</c>, the run fingerprint, the finished epochs,
/// the epoch history, the model (<see cref="VisionTransformerModel.Save"/>), then the AdamW state and the hook state, each
/// prefixed by its length in bytes. <see cref="Serialize"/> is the one writer and <see cref="Deserialize"/> the one reader of
/// that layout; a change of the layout changes <see cref="FormatVersion"/>, and files of another version are refused.
/// </remarks>
internal sealed class Checkpoint : IDisposable
{
    /// <summary>The version of the file layout, part of the tag at the start of the file.</summary>
    public const int FormatVersion = 2;

    /// <summary>The checkpoint's file name inside <see cref="ViTTrainingOptions.CheckpointFolder"/>.</summary>
    public const string FileName = "checkpoint.bin";

    /// <summary>Most figures one history record may carry (a bound for reading a damaged file).</summary>
    private const int MaxFiguresPerRecord = 1024;

    private static readonly string Tag = "GOHSP-CHECKPOINT-" + FormatVersion;

    private readonly bool _ownsModel;

    /// <summary>Creates a checkpoint of the given state; the model is disposed with it only when <paramref name="ownsModel"/>.</summary>
    public Checkpoint(string fingerprint, int completedEpochs, IReadOnlyList<EpochRecord> history, VisionTransformerModel model,
        byte[] optimizerState, byte[] hookState, bool ownsModel = false)
    {
        Fingerprint = fingerprint;
        CompletedEpochs = completedEpochs;
        History = history;
        Model = model;
        OptimizerState = optimizerState;
        HookState = hookState;
        _ownsModel = ownsModel;
    }

    /// <summary>The run it belongs to: stage, architecture, data hash and options (a checkpoint of another run is not resumed).</summary>
    public string Fingerprint { get; }

    /// <summary>The number of finished epochs; the run resumes at the next one.</summary>
    public int CompletedEpochs { get; }

    /// <summary>The records of the finished epochs.</summary>
    public IReadOnlyList<EpochRecord> History { get; }

    /// <summary>The model at the end of the last finished epoch.</summary>
    public VisionTransformerModel Model { get; }

    /// <summary>The AdamW state, as <c>AdamW.save_state_dict</c> writes it.</summary>
    public byte[] OptimizerState { get; }

    /// <summary>The hook's state, as <see cref="ITrainingHook.SaveState"/> writes it (empty without a hook).</summary>
    public byte[] HookState { get; }

    /// <summary>
    /// Writes the checkpoint of a run to <paramref name="path"/> through <see cref="AtomicFile"/>. The optimiser and hook state
    /// are taken inside the atomic write, so a process killed while they are written leaves the previous checkpoint in place.
    /// </summary>
    public static void Save(string path, string fingerprint, int completedEpochs, IReadOnlyList<EpochRecord> history,
        VisionTransformerModel model, AdamW optimizer, ITrainingHook? hook) =>
        AtomicFile.Write(path, stream =>
        {
            var checkpoint = new Checkpoint(fingerprint, completedEpochs, history, model,
                ToBytes(optimizer.save_state_dict), ToBytes(w => hook?.SaveState(w)));
            using var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            checkpoint.Serialize(writer);
        });

    /// <summary>Reads the checkpoint at <paramref name="path"/>; see <see cref="Deserialize"/>.</summary>
    public static Checkpoint? Read(string path, string fingerprint, int maxEpochs)
    {
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream, Encoding.UTF8);
        return Deserialize(reader, fingerprint, maxEpochs);
    }

    /// <summary>Writes the checkpoint in the layout of <see cref="FormatVersion"/>.</summary>
    public void Serialize(BinaryWriter writer)
    {
        writer.Write(Tag);
        writer.Write(Fingerprint);
        writer.Write(CompletedEpochs);
        writer.Write(History.Count);
        foreach (var record in History) WriteRecord(writer, record);
        Model.Save(writer);
        WriteSection(writer, OptimizerState);
        WriteSection(writer, HookState);
    }

    /// <summary>
    /// Reads what <see cref="Serialize"/> wrote, to the end of the stream. Returns <see langword="null"/> when the checkpoint
    /// belongs to another run (its fingerprint is not <paramref name="fingerprint"/>); the rest is then not read.
    /// </summary>
    /// <exception cref="InvalidDataException">
    /// The stream is not a checkpoint of this format, ends early, records more than <paramref name="maxEpochs"/> finished
    /// epochs, has sections longer than what follows them, or has bytes after its last section. The message says which.
    /// </exception>
    public static Checkpoint? Deserialize(BinaryReader reader, string fingerprint, int maxEpochs)
    {
        if (ReadTag(reader) != Tag)
            throw new InvalidDataException($"it does not start with '{Tag}': it is not a checkpoint of format {FormatVersion}");
        string part = "run fingerprint";
        VisionTransformerModel? model = null;
        try
        {
            if (reader.ReadString() != fingerprint) return null;
            part = "history";
            int completed = reader.ReadInt32();
            if (completed < 1 || completed > maxEpochs) throw new InvalidDataException($"it records {completed} finished epochs of {maxEpochs}");
            var history = ReadHistory(reader, completed);
            part = "model";
            model = ReadModel(reader);
            part = "optimiser state";
            var optimizerState = ReadSection(reader, part);
            part = "hook state";
            var hookState = ReadSection(reader, part);
            long after = reader.BaseStream.Length - reader.BaseStream.Position;
            if (after != 0) throw new InvalidDataException($"{after} bytes follow the last section");
            return new Checkpoint(fingerprint, completed, history, model, optimizerState, hookState, ownsModel: true);
        }
        catch (Exception e)
        {
            model?.Dispose();
            if (e is EndOfStreamException) throw new InvalidDataException($"it ends inside its {part}", e);
            throw;
        }
    }

    /// <summary>
    /// Applies the checkpoint to a run. It first checks that the checkpoint's model has the architecture and tensors of
    /// <paramref name="model"/> and that its optimiser state loads into a scratch optimiser from
    /// <paramref name="createOptimizer"/>; only then it restores the hook, the optimiser and the weights, so a checkpoint that
    /// fails a check changes nothing of the run. The hook goes first: its state is the one part not checked before.
    /// </summary>
    /// <exception cref="InvalidDataException">The checkpoint's model or optimiser state does not fit this run.</exception>
    public void RestoreInto(VisionTransformerModel model, AdamW optimizer, ITrainingHook? hook, Func<VisionTransformerModel, AdamW> createOptimizer)
    {
        if (!Model.Architecture.Equals(model.Architecture))
            throw new InvalidDataException($"its model is {Model.Architecture}, this run trains {model.Architecture}");
        var source = Model.state_dict();
        foreach (var (name, t) in model.state_dict())
            if (!source.TryGetValue(name, out var v) || !v.shape.SequenceEqual(t.shape))
                throw new InvalidDataException($"tensor '{name}' is missing or misshaped");
        using (var scratch = createOptimizer(Model))
            LoadOptimizerState(scratch); // throws here, before anything of the run changes, if the state does not fit

        if (hook is not null)
        {
            using var hookReader = new BinaryReader(new MemoryStream(HookState, writable: false));
            hook.LoadState(hookReader);
        }
        LoadOptimizerState(optimizer);
        using (no_grad())
            foreach (var (name, t) in model.state_dict()) t.copy_(source[name]);
    }

    /// <summary>Disposes the model when it was read from a file.</summary>
    public void Dispose()
    {
        if (_ownsModel) Model.Dispose();
    }

    private void LoadOptimizerState(AdamW optimizer)
    {
        using var stream = new MemoryStream(OptimizerState, writable: false);
        using var reader = new BinaryReader(stream);
        optimizer.load_state_dict(reader);
    }

    /// <summary>The tag at the start of the stream, or "" when the stream does not start with a string.</summary>
    private static string ReadTag(BinaryReader reader)
    {
        try
        {
            return reader.ReadString();
        }
        catch (Exception e) when (e is EndOfStreamException or FormatException or DecoderFallbackException)
        {
            return "";
        }
    }

    private static void WriteRecord(BinaryWriter w, EpochRecord record)
    {
        w.Write(record.Epoch);
        w.Write(record.Loss);
        w.Write(record.TrainAccuracy);
        w.Write(record.ValidationAccuracy.HasValue);
        if (record.ValidationAccuracy is double validation) w.Write(validation);
        w.Write(record.Seconds);
        w.Write(record.Extra?.Count ?? 0);
        if (record.Extra is null) return;
        foreach (var (name, value) in record.Extra)
        {
            w.Write(name);
            w.Write(value);
        }
    }

    private static List<EpochRecord> ReadHistory(BinaryReader r, int completed)
    {
        int count = r.ReadInt32();
        if (count < 0 || count > completed) throw new InvalidDataException($"it has {count} history records for {completed} epochs");
        var history = new List<EpochRecord>(count);
        for (int i = 0; i < count; i++)
        {
            int epoch = r.ReadInt32();
            double loss = r.ReadDouble(), accuracy = r.ReadDouble();
            double? validation = r.ReadBoolean() ? r.ReadDouble() : null;
            double seconds = r.ReadDouble();
            int figures = r.ReadInt32();
            if (figures < 0 || figures > MaxFiguresPerRecord) throw new InvalidDataException($"history record {i} has {figures} figures");
            Dictionary<string, double>? extra = figures > 0 ? new() : null;
            for (int j = 0; j < figures; j++) extra![r.ReadString()] = r.ReadDouble();
            history.Add(new EpochRecord(epoch, loss, accuracy, validation, seconds, extra));
        }
        return history;
    }

    private static VisionTransformerModel ReadModel(BinaryReader r)
    {
        try
        {
            return VisionTransformerModel.Load(r);
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"its model is unreadable: {e.Message}", e);
        }
    }

    private static byte[] ToBytes(Action<BinaryWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true)) write(writer);
        return stream.ToArray();
    }

    private static void WriteSection(BinaryWriter w, byte[] section)
    {
        w.Write((long)section.Length);
        w.Write(section);
    }

    private static byte[] ReadSection(BinaryReader r, string what)
    {
        long length = r.ReadInt64();
        long left = r.BaseStream.Length - r.BaseStream.Position;
        if (length < 0 || length > left)
            throw new InvalidDataException($"its {what} claims {length:N0} bytes, but only {left:N0} follow");
        return r.ReadBytes((int)length);
    }
}
