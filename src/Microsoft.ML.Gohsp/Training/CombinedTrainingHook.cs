using Microsoft.ML.Gohsp.VisionTransformer;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// Several <see cref="ITrainingHook"/>s as one (e.g. ADMM soft pruning with distillation): every call goes to each hook
/// in order, the extra losses are summed, and each hook's checkpoint state is written and read in that order.
/// </summary>
internal sealed class CombinedTrainingHook : ITrainingHook
{
    private readonly ITrainingHook[] _hooks;

    private CombinedTrainingHook(ITrainingHook[] hooks) => _hooks = hooks;

    /// <summary>The hooks that are not null, as one hook; null when there is none, the hook itself when there is one.</summary>
    public static ITrainingHook? Of(params ITrainingHook?[] hooks)
    {
        var present = hooks.OfType<ITrainingHook>().ToArray();
        return present.Length switch { 0 => null, 1 => present[0], _ => new CombinedTrainingHook(present) };
    }

    public void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch)
    {
        foreach (var h in _hooks) h.OnTrainingStart(model, startEpoch, stepsPerEpoch);
    }

    public Tensor? ExtraLoss(VisionTransformerModel model, Tensor images, Tensor logits, Tensor labels)
    {
        Tensor? sum = null;
        foreach (var h in _hooks)
            if (h.ExtraLoss(model, images, logits, labels) is { } extra) sum = sum is null ? extra : sum.add(extra);
        return sum;
    }

    public void AfterBackward(VisionTransformerModel model, long globalStep)
    {
        foreach (var h in _hooks) h.AfterBackward(model, globalStep);
    }

    public void AfterStep(VisionTransformerModel model, long globalStep, double learningRate)
    {
        foreach (var h in _hooks) h.AfterStep(model, globalStep, learningRate);
    }

    public void OnEpochEnd(VisionTransformerModel model, int epoch, IDictionary<string, double> extra)
    {
        foreach (var h in _hooks) h.OnEpochEnd(model, epoch, extra);
    }

    public void SaveState(BinaryWriter writer)
    {
        foreach (var h in _hooks) h.SaveState(writer);
    }

    public void LoadState(BinaryReader reader)
    {
        foreach (var h in _hooks) h.LoadState(reader);
    }

    public string Fingerprint => string.Join(" + ", _hooks.Select(h => h.Fingerprint));
}
