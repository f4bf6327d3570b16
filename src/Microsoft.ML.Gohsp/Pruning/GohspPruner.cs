using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Options of the whole GOHSP pipeline (pure TorchSharp core; the ML.NET estimators wrap it).</summary>
public class GohspOptions
{
    /// <summary>Fraction of the model's total parameters to remove, in (0, 1). Default 0.4.</summary>
    public double Sparsity { get; set; } = 0.4;
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
    /// <summary>
    /// Training options of the stage-3 fine-tuning. Default 5 epochs, lr 5e-4 with one warm-up epoch (a fresh AdamW
    /// without warm-up moves every weight by ~lr on its first steps, which measurably hurts a just-pruned model).
    /// </summary>
    public ViTTrainingOptions FineTune { get; set; } = new() { Epochs = 5, LearningRate = 5e-4, WarmupEpochs = 1 };
    /// <summary>Distil from the dense model during fine-tuning. Default false.</summary>
    public bool Distillation { get; set; }
    /// <summary>Distillation temperature. Default 4.</summary>
    public double DistillationTemperature { get; set; } = 4;
    /// <summary>Weight of the distillation term. Default 0.5.</summary>
    public double DistillationWeight { get; set; } = 0.5;
    /// <summary>Budget floors and tolerance.</summary>
    public BudgetOptions Budget { get; set; } = new();

    /// <summary>Throws naming the first invalid option.</summary>
    public void Validate()
    {
        if (!(Sparsity > 0 && Sparsity < 1)) throw new ArgumentOutOfRangeException(nameof(Sparsity), Sparsity, "Sparsity (fraction of parameters removed) must be in (0, 1).");
        if (!(HeadPruningFraction >= 0 && HeadPruningFraction < 1)) throw new ArgumentOutOfRangeException(nameof(HeadPruningFraction), HeadPruningFraction, "HeadPruningFraction must be in [0, 1).");
        if (CalibrationImages <= 0) throw new ArgumentOutOfRangeException(nameof(CalibrationImages), CalibrationImages, "CalibrationImages must be positive.");
        if (!(Damping >= 0 && Damping < 1)) throw new ArgumentOutOfRangeException(nameof(Damping), Damping, "Damping must be in [0, 1).");
        Admm.Validate();
    }
}

/// <summary>Per-block line of a <see cref="PruningReport"/>.</summary>
public sealed record BlockReport(int Block, int[] KeptHeads, double[] StationaryProbabilities, int QkDim, int VDim, int MlpWidth,
    int DenseHeads, int DenseQkDim, int DenseVDim, int DenseMlpWidth);

/// <summary>What a pruning run did: per-block shapes, sizes and FLOPs before/after, residuals, accuracies per stage.</summary>
public sealed record PruningReport
{
    /// <summary>Method name ("gohsp", "somp", "sgmp").</summary>
    public required string Method { get; init; }
    /// <summary>Requested fraction of parameters removed.</summary>
    public required double RequestedSparsity { get; init; }
    /// <summary>Achieved fraction of parameters removed.</summary>
    public double AchievedSparsity => 1.0 - (double)ParametersAfter / ParametersBefore;
    /// <summary>Parameters of the dense model.</summary>
    public required long ParametersBefore { get; init; }
    /// <summary>Parameters of the pruned model.</summary>
    public required long ParametersAfter { get; init; }
    /// <summary>Forward FLOPs per image of the dense model.</summary>
    public required long FlopsBefore { get; init; }
    /// <summary>Forward FLOPs per image of the pruned model.</summary>
    public required long FlopsAfter { get; init; }
    /// <summary>Per-block details.</summary>
    public required IReadOnlyList<BlockReport> Blocks { get; init; }
    /// <summary>Primal residual ‖W − Z‖ after each soft-pruning epoch.</summary>
    public IReadOnlyList<double> ResidualHistory { get; init; } = [];
    /// <summary>Validation accuracy after each stage (when a validation set was given): "dense", "head-masked", "soft-pruned", "hard-pruned", "fine-tuned".</summary>
    public IReadOnlyDictionary<string, double> ValidationAccuracy { get; init; } = new Dictionary<string, double>();

    /// <summary>The report as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals });
}

/// <summary>The result of <see cref="GohspPruner.Run"/>.</summary>
/// <param name="Model">The physically pruned, fine-tuned model (float32, evaluation mode).</param>
/// <param name="Report">What happened.</param>
public sealed record PruningResult(VisionTransformerModel Model, PruningReport Report);

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
        ArgumentNullException.ThrowIfNull(dense);
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (train.Count == 0) throw new ArgumentException("The training data has no rows.", nameof(train));
        var arch = dense.Architecture;
        var acc = new Dictionary<string, double>();
        void Measure(string stage, VisionTransformerModel m)
        {
            if (validation is null) return;
            acc[stage] = TrainingLoop.Evaluate(m, validation, options.FineTune);
            log?.Invoke($"[gohsp] validation accuracy {stage}: {acc[stage]:P2}");
        }
        Measure("dense", dense);

        // Stage 1: head graphs on calibration data, stationary distributions, head mask
        var calibration = train.Take(options.CalibrationImages);
        var ranking = HeadGraphRanking.Rank(dense, calibration, options.SoftPruning, options.Similarity, options.Damping, options.PowerIterationTolerance);
        var keptHeads = HeadGraphRanking.SelectHeads(ranking.Select(r => r.Importance(options.Direction)).ToArray(),
            options.HeadPruningFraction, options.Budget.MinHeads);
        log?.Invoke($"[gohsp] stage 1: kept heads per block {string.Join(" | ", keptHeads.Select(k => string.Join(",", k)))}");

        var model = dense.Clone();
        try
        {
            SetHeadMasks(model, keptHeads);
            Measure("head-masked", model);

            // Stage 2: ADMM soft pruning of the masked model
            var admm = new AdmmSoftPruning(options.Sparsity, keptHeads, options.Admm, options.Budget);
            var soft = new TrainingLoop(options.SoftPruning, "gohsp-soft-pruning", log, progress) { Hook = admm };
            soft.Train(model, train, null, cancellationToken);
            Measure("soft-pruned", model);

            // Stage 3: project W onto the set, remove the zero structures, fine-tune
            var plan = StructuredProjection.Allocate(arch, StructuredProjection.Magnitude(model), options.Sparsity, options.Budget, keptHeads);
            StructuredProjection.Apply(model, plan);
            ClearHeadMasks(model);
            var pruned = HardPruning.Prune(model, plan);
            Measure("hard-pruned", pruned);
            var fine = new TrainingLoop(options.FineTune, "gohsp-fine-tune", log, progress);
            if (options.Distillation) fine.Hook = new Distillation(dense, options.DistillationTemperature, options.DistillationWeight);
            fine.Train(pruned, train, null, cancellationToken);
            pruned.to(CPU);
            Measure("fine-tuned", pruned);

            var report = new PruningReport
            {
                Method = "gohsp",
                RequestedSparsity = options.Sparsity,
                ParametersBefore = arch.ParameterCount,
                ParametersAfter = pruned.Architecture.ParameterCount,
                FlopsBefore = arch.ForwardFlops,
                FlopsAfter = pruned.Architecture.ForwardFlops,
                Blocks = plan.Blocks.Select((p, b) => new BlockReport(b, p.Heads.ToArray(), p.Heads.Select(h => ranking[b].Stationary[h]).ToArray(),
                    p.QkDims[0].Length, p.VDims[0].Length, p.MlpNeurons.Length,
                    arch.Blocks[b].Heads, arch.Blocks[b].QkDim, arch.Blocks[b].VDim, arch.Blocks[b].MlpHidden)).ToArray(),
                ResidualHistory = admm.ResidualHistory.ToArray(),
                ValidationAccuracy = acc,
            };
            log?.Invoke($"[gohsp] {report.ParametersBefore:N0} → {report.ParametersAfter:N0} parameters ({report.AchievedSparsity:P1} removed), " +
                        $"{report.FlopsBefore / 1e6:F1} → {report.FlopsAfter / 1e6:F1} MFLOPs/image");
            return new PruningResult(pruned, report);
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
