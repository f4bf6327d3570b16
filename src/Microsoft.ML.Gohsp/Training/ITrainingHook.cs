using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// Extension points of <see cref="TrainingLoop"/>: how soft pruning (ADMM), gradual magnitude pruning,
/// masking and distillation plug into the one training loop. All methods are optional.
/// </summary>
public interface ITrainingHook
{
    /// <summary>Called once before the first step (after a resume, with the epoch to start from, 0-based).</summary>
    void OnTrainingStart(VisionTransformerModel model, int startEpoch, int stepsPerEpoch) { }

    /// <summary>An extra loss term added to the task loss (e.g. distillation); null for none.</summary>
    Tensor? ExtraLoss(VisionTransformerModel model, Tensor images, Tensor logits, Tensor labels) => null;

    /// <summary>Called after backward, before the optimiser step (e.g. add ρ(W − Z + U) to gradients).</summary>
    void AfterBackward(VisionTransformerModel model, long globalStep) { }

    /// <summary>Called after the optimiser step (e.g. re-apply masks, update Z/U every k steps).</summary>
    void AfterStep(VisionTransformerModel model, long globalStep) { }

    /// <summary>
    /// Called after the optimiser step with the step's learning rate (what <see cref="TrainingLoop"/> calls); by default
    /// forwards to <see cref="AfterStep(VisionTransformerModel, long)"/>. ADMM's decoupled proximal step uses the rate.
    /// </summary>
    void AfterStep(VisionTransformerModel model, long globalStep, double learningRate) => AfterStep(model, globalStep);

    /// <summary>Called after each epoch; may add figures to the epoch record.</summary>
    void OnEpochEnd(VisionTransformerModel model, int epoch, IDictionary<string, double> extra) { }

    /// <summary>Writes the hook's own state into a checkpoint.</summary>
    void SaveState(BinaryWriter writer) { }

    /// <summary>Restores what <see cref="SaveState"/> wrote.</summary>
    void LoadState(BinaryReader reader) { }

    /// <summary>
    /// What the hook adds to its training run's checkpoint fingerprint: a checkpoint written with another hook, or with the
    /// same hook under other settings, is not resumed, since its hook state and weights belong to another run. By default the
    /// hook's type name; a hook with settings of its own includes them.
    /// </summary>
    string Fingerprint => GetType().FullName ?? GetType().Name;
}
