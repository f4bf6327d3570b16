using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>The criterion by which SOMP ranks the structures once, before its cut (<see cref="SompOptions.Importance"/>).</summary>
public enum SompImportance
{
    /// <summary>The ℓ2 magnitude of the dense weights: SOMP, the one-shot magnitude baseline.</summary>
    Magnitude = 0,
    /// <summary>
    /// GOHSP's Fisher metric (<see cref="ProjectionMetric.Fisher"/>): Σ F·W² per structure, F the squared gradients of the
    /// calibration batches (<see cref="SompOptions.CalibrationImages"/>), accumulated as a training stage does.
    /// </summary>
    Fisher = 1,
    /// <summary>
    /// First-order Taylor importance: Σ|W·∂L/∂W| per structure, ∂L/∂W the gradient of the mean cross-entropy over the
    /// calibration images (the criterion Torch-Pruning's <c>TaylorImportance</c> computes).
    /// </summary>
    Taylor = 2,
}

/// <summary>
/// Options of SOMP (structured one-shot pruning): the shared <see cref="PruningOptions"/> (the budget, its floors, the
/// fine-tuning stage — default 10 epochs, GOHSP's default 5 soft-pruning + 5 fine-tuning epochs — and distillation) and the
/// criterion of its one ranking (<see cref="Importance"/>).
/// </summary>
public class SompOptions : PruningOptions
{
    /// <summary>Creates the default options (10 fine-tuning epochs).</summary>
    public SompOptions() : base(fineTuneEpochs: 10) { }

    /// <inheritdoc />
    public override PruningMethod? Method => PruningMethod.Somp;

    /// <inheritdoc />
    public override IPruningMethod CreateMethod() => new SompPruner(this);

    /// <summary>
    /// How the structures are ranked before the cut. Default <see cref="SompImportance.Magnitude"/> (the magnitude baseline);
    /// <see cref="SompImportance.Fisher"/> and <see cref="SompImportance.Taylor"/> run the model forward and backward on
    /// <see cref="CalibrationImages"/> training images first.
    /// </summary>
    public SompImportance Importance { get; set; } = SompImportance.Magnitude;

    /// <summary>
    /// Training images (the start of the training data, without augmentation) whose gradients the
    /// <see cref="SompImportance.Fisher"/> and <see cref="SompImportance.Taylor"/> criteria measure, ≥ 1; more than the
    /// data holds uses all of it. Batches follow <see cref="PruningOptions.FineTune"/>'s batch sizes. Default 1024.
    /// </summary>
    public int CalibrationImages { get; set; } = 1024;

    /// <inheritdoc />
    protected internal override IReadOnlyList<PruningStage> TrainingStages =>
        [new(nameof(FineTune), () => FineTune, o => FineTune = o)];

    /// <summary>Throws naming the first invalid option.</summary>
    public override void Validate()
    {
        base.Validate();
        if (!Enum.IsDefined(Importance))
            throw new ArgumentOutOfRangeException(nameof(Importance), Importance, "Importance must be Magnitude, Fisher or Taylor.");
        if (CalibrationImages < 1)
            throw new ArgumentOutOfRangeException(nameof(CalibrationImages), CalibrationImages, "CalibrationImages (training images the Fisher and Taylor criteria measure) must be ≥ 1.");
    }
}
