using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// AdamW's per-parameter state, by parameter name, on the CPU: the step count and the first and second moments. A
/// <see cref="TrainingLoop"/> captures it at the end of a stage (<see cref="TrainingLoop.CaptureMoments"/>), the surgery
/// slices it as it slices the weights (<see cref="Pruning.HardPruning.SliceMoments"/>), and the next stage's optimiser
/// starts from it (<see cref="TrainingLoop.InitialMoments"/>) instead of from zero moments.
/// </summary>
internal sealed class OptimizerMoments : IDisposable
{
    /// <summary>One parameter's state.</summary>
    internal sealed record Entry(long Step, Tensor ExpAvg, Tensor ExpAvgSq);

    private readonly Dictionary<string, Entry> _entries;

    internal OptimizerMoments(Dictionary<string, Entry> entries) => _entries = entries;

    /// <summary>The state of every parameter the optimiser held, by the model's parameter names.</summary>
    public IReadOnlyDictionary<string, Entry> Entries => _entries;

    /// <summary>Copies <paramref name="optimizer"/>'s state (of <paramref name="model"/>'s parameters) to the CPU.</summary>
    public static OptimizerMoments Capture(VisionTransformerModel model, AdamW optimizer)
    {
        var entries = new Dictionary<string, Entry>();
        using var _ = no_grad();
        foreach (var (name, p, state) in States(model, optimizer))
            entries[name] = new Entry(state.step, state.exp_avg.detach().cpu().clone().DetachFromDisposeScope(),
                state.exp_avg_sq.detach().cpu().clone().DetachFromDisposeScope());
        return new OptimizerMoments(entries);
    }

    /// <summary>
    /// Writes the state into <paramref name="optimizer"/> (created for <paramref name="model"/>, before its first step): every
    /// parameter with an entry gets its step count and moments; a parameter without one keeps the fresh state.
    /// </summary>
    /// <exception cref="InvalidOperationException">An entry's moments do not have its parameter's shape.</exception>
    public void LoadInto(VisionTransformerModel model, AdamW optimizer)
    {
        using var _ = no_grad();
        foreach (var (name, p, state) in States(model, optimizer))
        {
            if (!_entries.TryGetValue(name, out var e)) continue;
            if (!e.ExpAvg.shape.SequenceEqual(p.shape))
                throw new InvalidOperationException($"The carried optimiser state of '{name}' has shape [{string.Join(", ", e.ExpAvg.shape)}]; the parameter has [{string.Join(", ", p.shape)}].");
            state.step = e.Step;
            state.exp_avg.copy_(e.ExpAvg);
            state.exp_avg_sq.copy_(e.ExpAvgSq);
        }
    }

    // the optimiser's live state objects, in its parameter order, with each parameter's name in the model
    private static IEnumerable<(string Name, Parameter Parameter, AdamW.State State)> States(VisionTransformerModel model, AdamW optimizer)
    {
        var names = new Dictionary<IntPtr, string>();
        foreach (var (name, p) in model.named_parameters()) names[p.Handle] = name;
        var parameters = optimizer.ParamGroups.Cast<ParamGroup>().SelectMany(g => g.Parameters).ToList();
        var states = optimizer.state_dict().State;
        for (int i = 0; i < parameters.Count; i++)
            yield return (names[parameters[i].Handle], parameters[i], (AdamW.State)states[i]);
    }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        foreach (var e in _entries.Values)
        {
            e.ExpAvg.Dispose();
            e.ExpAvgSq.Dispose();
        }
        _entries.Clear();
    }
}
