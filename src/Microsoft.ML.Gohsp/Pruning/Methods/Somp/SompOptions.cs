using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Options of SOMP (structured one-shot magnitude pruning). Only the shared <see cref="PruningOptions"/>: the budget, its
/// floors, the fine-tuning stage (default 10 epochs — GOHSP's default 5 soft-pruning + 5 fine-tuning epochs) and
/// distillation.
/// </summary>
public class SompOptions : PruningOptions
{
    /// <summary>Creates the default options (10 fine-tuning epochs).</summary>
    public SompOptions() : base(fineTuneEpochs: 10) { }

    /// <inheritdoc />
    public override PruningMethod Method => PruningMethod.Somp;

    internal override IReadOnlyList<(string Name, ViTTrainingOptions Options)> TrainingStages => [(nameof(FineTune), FineTune)];
}
