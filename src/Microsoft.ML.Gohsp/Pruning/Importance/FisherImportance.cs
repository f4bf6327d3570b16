using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>The metric in which a pruner measures a structure's importance when it chooses what to keep.</summary>
public enum ProjectionMetric
{
    /// <summary>Euclidean: a structure's importance is the squared norm of its weights (magnitude).</summary>
    Euclidean = 0,
    /// <summary>
    /// Fisher-weighted: Σ F·W² with F a running mean of the squared task gradients (a diagonal Fisher estimate), so a
    /// structure's importance is the loss increase its removal costs to second order (Optimal Brain Damage), measured on
    /// the training batches of the stage. Until the first gradient, Euclidean.
    /// </summary>
    Fisher = 1,
}

/// <summary>
/// The diagonal empirical Fisher of a model's prunable matrices, for <see cref="ProjectionMetric.Fisher"/>: per parameter,
/// F is a running mean (decay <see cref="Decay"/>) of the squared task gradients, updated after every backward pass of a
/// training stage (no extra forward or backward pass). GOHSP's ADMM projection and SGMP's ranking both measure in it.
/// </summary>
internal sealed class FisherImportance : IDisposable
{
    /// <summary>Weight of the previous estimate in each update (0.95: about the last 20 batches).</summary>
    internal const double Decay = 0.95;

    private readonly Dictionary<Tensor, Tensor> _of = new(ReferenceEqualityComparer.Instance);
    private readonly List<(Parameter W, Tensor F)> _f = new();

    /// <summary>Creates a zero estimate for every prunable matrix of <paramref name="model"/>.</summary>
    public FisherImportance(VisionTransformerModel model)
    {
        using var _ = no_grad();
        foreach (var p in StructuredProjection.Prunable(model))
        {
            var f = zeros_like(p, dtype: ScalarType.Float32).DetachFromDisposeScope();
            _f.Add((p, f));
            _of[p] = f;
        }
    }

    /// <summary>Backward passes the estimate has seen (0: no gradient yet, the metric is still Euclidean).</summary>
    public long Steps { get; private set; }

    /// <summary>Matrices estimated.</summary>
    public int Count => _f.Count;

    /// <summary>F ← Decay·F + (1 − Decay)·g² for every matrix with a gradient; call after the backward pass.</summary>
    public void Accumulate()
    {
        using var _ = no_grad();
        using var keep = Decay.ToScalar();
        using var add = (1 - Decay).ToScalar();
        foreach (var (w, f) in _f)
            if (w.grad is { } grad)
                using (var g = grad.to(ScalarType.Float32))
                    f.mul_(keep).addcmul_(g, g, add);
        Steps++;
    }

    /// <summary>
    /// The importance of every structure in this metric, measured on the tensors <paramref name="weightOf"/> gives (default
    /// the weights): Σ F·t² per structure is the magnitude importance of t·√F. Euclidean while <see cref="Steps"/> is 0.
    /// </summary>
    public BlockImportance[] Measure(VisionTransformerModel model, Func<Parameter, Tensor>? weightOf = null,
        Func<VisionTransformerModel, Func<Parameter, Tensor>, BlockImportance[]>? importance = null)
    {
        weightOf ??= p => p;
        importance ??= (m, f) => StructuredProjection.Magnitude(m, f);
        if (Steps == 0) return importance(model, weightOf);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        return importance(model, p => weightOf(p).mul(_of[p].sqrt().to(p.dtype)));
    }

    /// <summary>
    /// The importance of every structure in the Fisher metric of <paramref name="model"/>'s gradients on calibration
    /// images, before any training (SOMP's <see cref="SompImportance.Fisher"/>): F accumulates the squared gradient of
    /// each training-size batch as in a training stage, and Σ F·W² is measured on the weights. The model's weights are
    /// not changed; its gradients are cleared afterwards.
    /// </summary>
    public static BlockImportance[] OneShot(VisionTransformerModel model, ImageTensorData calibration, ViTTrainingOptions preprocessing)
    {
        using var fisher = new FisherImportance(model);
        return TaylorImportance.Backward(model, calibration, preprocessing, accumulate: false, fisher.Accumulate, () => fisher.Measure(model));
    }

    /// <summary>Writes <see cref="Steps"/> and every F (the format <see cref="Read"/> reads; a null estimate writes none).</summary>
    public static void Write(BinaryWriter writer, FisherImportance? fisher)
    {
        writer.Write(fisher?.Steps ?? 0);
        writer.Write(fisher?.Count ?? 0);
        foreach (var (_, f) in fisher?._f ?? []) f.Save(writer);
    }

    /// <summary>An estimate read from a checkpoint, kept until the model's matrices are known (<see cref="Restore"/>).</summary>
    internal sealed class Saved(long steps, IReadOnlyList<Tensor> f) : IDisposable
    {
        /// <summary>The backward passes the estimate had seen.</summary>
        public long Steps { get; } = steps;
        /// <summary>One F per matrix.</summary>
        public IReadOnlyList<Tensor> F { get; } = f;
        /// <summary>Releases the tensors.</summary>
        public void Dispose() { foreach (var t in F) t.Dispose(); }
    }

    /// <summary>Reads what <see cref="Write"/> wrote; the caller owns the result (dispose it after <see cref="Restore"/>).</summary>
    public static Saved Read(BinaryReader reader, string owner)
    {
        long steps = reader.ReadInt64();
        int n = reader.ReadInt32();
        if (n < 0) throw new InvalidDataException($"Corrupted {owner} state ({n} Fisher matrices).");
        var f = new List<Tensor>();
        try
        {
            for (int i = 0; i < n; i++) f.Add(Tensor.Load(reader).DetachFromDisposeScope());
        }
        catch
        {
            foreach (var t in f) t.Dispose();
            throw;
        }
        return new Saved(steps, f);
    }

    /// <summary>Copies a state <see cref="Read"/> returned into this estimate, checking its matrix count and shapes.</summary>
    public void Restore(Saved saved, string owner)
    {
        var f = saved.F;
        if (f.Count != _f.Count)
            throw new InvalidDataException($"The checkpoint has Fisher state for {f.Count} matrices; this run's Fisher metric needs {_f.Count} ({owner}).");
        using var _ = no_grad();
        for (int i = 0; i < f.Count; i++)
        {
            if (!f[i].shape.SequenceEqual(_f[i].F.shape))
                throw new InvalidDataException($"The checkpoint's Fisher state for matrix {i} has shape [{string.Join(", ", f[i].shape)}]; the model's is [{string.Join(", ", _f[i].F.shape)}] ({owner}).");
            _f[i].F.copy_(f[i]);
        }
        Steps = saved.Steps;
    }

    /// <summary>Releases the estimates.</summary>
    public void Dispose()
    {
        foreach (var (_, f) in _f) f.Dispose();
        _f.Clear();
        _of.Clear();
    }
}
