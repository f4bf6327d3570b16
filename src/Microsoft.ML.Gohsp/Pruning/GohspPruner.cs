using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Options of the whole GOHSP pipeline (pure TorchSharp core; the ML.NET estimators wrap it).</summary>
public class GohspOptions : PruningOptions
{
    /// <summary>Creates the default options (5 soft-pruning + 5 fine-tuning epochs).</summary>
    public GohspOptions() : base(fineTuneEpochs: 5) { }

    /// <inheritdoc />
    public override PruningMethod Method => PruningMethod.Gohsp;
    /// <summary>Fraction of all attention heads removed by stage 1, in [0, 1). Default 0.25.</summary>
    public double HeadPruningFraction { get; set; } = 0.25;
    /// <summary>Calibration images (taken from the start of the training data) for the head graphs. Default 256.</summary>
    public int CalibrationImages { get; set; } = 256;
    /// <summary>Edge weights of the head graph. Default <see cref="HeadSimilarity.ContributionCosine"/>.</summary>
    public HeadSimilarity Similarity { get; set; } = HeadSimilarity.ContributionCosine;
    /// <summary>How stationary probability is read (see docs/gohsp.md for the measured comparison).</summary>
    public HeadRankingDirection Direction { get; set; } = HeadRankingDirection.CentralIsImportant;
    /// <summary>PageRank damping of the head chains, in [0, 1). Default 0.85.</summary>
    public double Damping { get; set; } = 0.85;
    /// <summary>Power-iteration tolerance (L1 change of π). Default 1e-10.</summary>
    public double PowerIterationTolerance { get; set; } = 1e-10;
    /// <summary>
    /// Training options of stage 2 (soft pruning). Default 5 epochs at a constant lr of 5e-4 (no warm-up, no decay):
    /// every ADMM iteration needs the W-subproblem actually optimised, which a learning rate decayed to ~0 prevents.
    /// </summary>
    public ViTTrainingOptions SoftPruning { get; set; } = new() { Epochs = 5, LearningRate = 5e-4, MinLearningRate = 5e-4, WarmupEpochs = 0 };
    /// <summary>ADMM penalty schedule of stage 2.</summary>
    public AdmmOptions Admm { get; set; } = new();

    internal override IReadOnlyList<(string Name, ViTTrainingOptions Options)> TrainingStages =>
        [(nameof(SoftPruning), SoftPruning), (nameof(FineTune), FineTune)];

    /// <summary>Throws naming the first invalid option.</summary>
    public override void Validate()
    {
        base.Validate();
        if (!(HeadPruningFraction >= 0 && HeadPruningFraction < 1)) throw new ArgumentOutOfRangeException(nameof(HeadPruningFraction), HeadPruningFraction, "HeadPruningFraction must be in [0, 1).");
        if (CalibrationImages <= 0) throw new ArgumentOutOfRangeException(nameof(CalibrationImages), CalibrationImages, "CalibrationImages must be positive.");
        if (!(Damping >= 0 && Damping < 1)) throw new ArgumentOutOfRangeException(nameof(Damping), Damping, "Damping must be in [0, 1).");
        if (Admm is null) throw new ArgumentNullException(nameof(Admm), "Admm must be set.");
        Admm.Validate();
    }
}

/// <summary>
/// GOHSP end to end on a trained dense model: stage 1 graph-based head ranking and masking, stage 2 ADMM soft
/// structured pruning, stage 3 projection, physical pruning and fine-tuning (optionally distilled from the dense model).
/// The dense model is not modified.
/// </summary>
public static class GohspPruner
{
    /// <summary>Runs the three stages.</summary>
    public static PruningResult Run(VisionTransformerModel dense, ImageTensorData train, ImageTensorData? validation, GohspOptions options,
        Action<string>? log = null, IProgress<ViTTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var run = PruningRun.Start(dense, train, validation, options, log, progress, cancellationToken);

        // Stage 1: head graphs on calibration data, stationary distributions, head mask
        var calibration = train.Take(options.CalibrationImages);
        var ranking = HeadGraphRanking.Rank(dense, calibration, options.SoftPruning, options.Similarity, options.Damping, options.PowerIterationTolerance);
        var keptHeads = HeadGraphRanking.SelectHeads(ranking.Select(r => r.Importance(options.Direction)).ToArray(),
            options.HeadPruningFraction, options.Budget.MinHeads);
        run.Log($"stage 1: kept heads per block {string.Join(" | ", keptHeads.Select(k => string.Join(",", k)))}");

        var model = dense.Clone();
        try
        {
            SetHeadMasks(model, keptHeads);
            run.Measure("head-masked", model);

            // Stage 2: ADMM soft pruning of the masked model
            var admm = new AdmmSoftPruning(options.Sparsity, keptHeads, options.Admm, options.Budget);
            run.TrainStage(model, options.SoftPruning, "soft-pruning", admm);
            run.Measure("soft-pruned", model);

            // Stage 3: the Z-free projection Π(W) with the stage-1 heads, then the shared tail (surgery, fine-tune, report).
            // The surgery copies only the kept structures (head masks are not parameters), so zeroing first is not needed.
            var plan = StructuredProjection.Allocate(dense.Architecture, StructuredProjection.Magnitude(model), options.Sparsity, options.Budget, keptHeads);
            return run.Finish(model, plan, (b, h) => ranking[b].Stationary[h], admm.ResidualHistory);
        }
        finally
        {
            model.Dispose();
        }
    }

    /// <summary>Applies the binary head mask Mᴴ (element-wise on each head's output) to every block.</summary>
    public static void SetHeadMasks(VisionTransformerModel model, IReadOnlyList<IReadOnlyList<int>> keptHeads) => model.SetHeadMasks(keptHeads);

    /// <summary>Removes all head masks.</summary>
    public static void ClearHeadMasks(VisionTransformerModel model) => model.ClearHeadMasks();
}
