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
    public override PruningMethod? Method => PruningMethod.Somp;

    /// <inheritdoc />
    public override IPruningMethod CreateMethod() => new SompPruner(this);

    /// <inheritdoc />
    protected internal override IReadOnlyList<PruningStage> TrainingStages =>
        [new(nameof(FineTune), () => FineTune, o => FineTune = o)];
}
