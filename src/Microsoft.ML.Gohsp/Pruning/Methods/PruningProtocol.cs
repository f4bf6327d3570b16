using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The fair comparison protocol of GOHSP, SOMP and SGMP (and of any method with one or two training stages): every method starts from the same dense model and gets the same
/// number of training epochs after it, with the same optimiser, augmentation, pre-processing and seed, and — when the
/// training data carries a teacher's probabilities (<see cref="ImageTensorData.TeacherProbabilities"/>) — the same teacher in
/// every training stage, with the base options' <see cref="ViTTrainingOptions.TeacherWeight"/> and
/// <see cref="ViTTrainingOptions.TeacherTemperature"/>. The split:
/// <list type="bullet">
/// <item>GOHSP: ⌊E/2⌋ soft-pruning epochs, then E − ⌊E/2⌋ fine-tuning epochs;</item>
/// <item>SGMP: ⌊E/2⌋ gradual-pruning epochs, then E − ⌊E/2⌋ fine-tuning epochs;</item>
/// <item>SOMP: E fine-tuning epochs.</item>
/// </list>
/// Every method follows one learning-rate schedule over its E epochs: a warm-up capped at a quarter of the stage
/// (<see cref="WarmupFor"/>), then a cosine decay. SOMP and the dense reference run it in one stage; GOHSP and SGMP run its
/// first half as their first stage (down to the rate at the boundary, <see cref="BoundaryRate"/>) and its second half as the
/// fine-tuning after the cut, which starts with a short warm-up of its own (a fresh optimiser on the pruned model). The
/// first stage thus ends at about half the base rate, never near zero (docs/gohsp.md: ADMM needs the W-subproblem optimised
/// between updates), and SGMP gets the same schedule so that the two differ only in how they prune.
/// </summary>
public static class PruningProtocol
{
    /// <summary>
    /// New options of <paramref name="method"/> for <paramref name="sparsity"/> with <paramref name="totalEpochs"/>
    /// training epochs after the dense model, split as described on <see cref="PruningProtocol"/>.
    /// </summary>
    /// <param name="method">The method.</param>
    /// <param name="sparsity">Fraction of parameters to remove, in (0, 1).</param>
    /// <param name="totalEpochs">Training epochs after the dense model: ≥ 2 for GOHSP and SGMP (one per stage), ≥ 1 for SOMP.</param>
    /// <param name="baseOptions">
    /// Optimiser, schedule, augmentation, pre-processing, device and seed of every stage (copied; its <c>Epochs</c> is ignored).
    /// Default: lr 5e-4 with one warm-up epoch, otherwise <see cref="ViTTrainingOptions"/>' defaults.
    /// </param>
    public static PruningOptions ForEpochBudget(PruningMethod method, double sparsity, int totalEpochs, ViTTrainingOptions? baseOptions = null)
    {
        var options = PruningOptions.Create(method);
        options.Sparsity = sparsity;
        return ApplyEpochBudget(options, totalEpochs, baseOptions);
    }

    /// <summary>
    /// Runs the method that <paramref name="options"/> configure (<see cref="PruningOptions.CreateMethod"/>: GOHSP, SOMP,
    /// SGMP or any other <see cref="IPruningMethod"/>) — one entry point for comparisons over the options
    /// <see cref="ForEpochBudget"/> returns.
    /// </summary>
    /// <param name="context">The trained dense model (not modified), the data of every stage, log, progress and cancellation.</param>
    /// <param name="options">The method's options.</param>
    public static PruningResult Run(PruningContext context, PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(options);
        return options.CreateMethod().Run(context);
    }

    /// <summary>
    /// Sets the training stages of existing <paramref name="options"/> (for example an ML.NET estimator's
    /// <c>Options</c>) to the protocol's split of <paramref name="totalEpochs"/>; other options are left as they are. A
    /// method with one training stage gets all of them; a method with two gets ⌊E/2⌋ before the cut (or
    /// <paramref name="firstStageEpochs"/>) and the rest after it.
    /// </summary>
    /// <param name="options">The method's options.</param>
    /// <param name="totalEpochs">Training epochs after the dense model.</param>
    /// <param name="baseOptions">As for <see cref="ForEpochBudget"/>.</param>
    /// <param name="firstStageEpochs">
    /// For a method with two training stages: the epochs before the cut (soft pruning, gradual pruning), from 1 to
    /// <paramref name="totalEpochs"/> − 1; null: ⌊E/2⌋. The learning-rate schedule over all E epochs is the same; only the
    /// boundary moves. A method with one stage ignores it.
    /// </param>
    /// <returns><paramref name="options"/>, validated.</returns>
    public static TOptions ApplyEpochBudget<TOptions>(TOptions options, int totalEpochs, ViTTrainingOptions? baseOptions = null, int? firstStageEpochs = null)
        where TOptions : PruningOptions
    {
        ArgumentNullException.ThrowIfNull(options);
        var stages = options.TrainingStages;
        string name = options.CreateMethod().Name;
        if (stages.Count is < 1 or > 2)
            throw new ArgumentException($"The protocol splits an epoch budget over one or two training stages; {name} has {stages.Count}.", nameof(options));
        int minimum = stages.Count;
        if (totalEpochs < minimum)
            throw new ArgumentOutOfRangeException(nameof(totalEpochs), totalEpochs,
                $"totalEpochs must be ≥ {minimum} for {options.Method?.ToString() ?? name} ({(minimum == 2 ? "one per training stage" : "one fine-tuning epoch")}).");
        var b = baseOptions ?? new ViTTrainingOptions { LearningRate = 5e-4, WarmupEpochs = 1 };
        if (stages.Count == 1)
            stages[0].Options = Stage(b, totalEpochs, StageFolder(name, stages[0]));
        else
        {
            if (firstStageEpochs is int f && (f < 1 || f > totalEpochs - 1))
                throw new ArgumentOutOfRangeException(nameof(firstStageEpochs), f,
                    $"firstStageEpochs must leave each of {name}'s two training stages at least one of the {totalEpochs} epochs: between 1 and {totalEpochs - 1}.");
            int first = firstStageEpochs ?? totalEpochs / 2;
            // the learning rate the one schedule over all E epochs reaches at the stage boundary
            double boundary = BoundaryRate(b, first, totalEpochs);
            stages[0].Options = FirstStage(b, first, totalEpochs, boundary, StageFolder(name, stages[0]));
            stages[1].Options = SecondStage(b, totalEpochs - first, boundary, StageFolder(name, stages[1]));
        }
        options.Validate();
        return options;
    }

    // "gohsp" + SoftPruning → "gohsp-soft-pruning": each method and stage checkpoints into its own sub-folder
    private static string StageFolder(string method, PruningStage stage) =>
        method + string.Concat(stage.Name.Select(c => char.IsUpper(c) ? "-" + char.ToLowerInvariant(c) : c.ToString()));

    /// <summary>
    /// The warm-up of a training stage of <paramref name="epochs"/> epochs: the base warm-up, but at most a quarter of the
    /// stage. A warm-up as long as the stage would end it at the peak learning rate with no decay at all (a 1-epoch
    /// fine-tuning with a 1-epoch warm-up), which hurts whichever method has the shortest stage; every method, and the dense
    /// reference, gets the same rule.
    /// </summary>
    public static double WarmupFor(int epochs, double baseWarmupEpochs) => Math.Min(baseWarmupEpochs, epochs / 4.0);

    /// <summary>
    /// The learning rate that one warm-up + cosine schedule over <paramref name="totalEpochs"/> epochs (the base options',
    /// with <see cref="WarmupFor"/>) reaches after <paramref name="epochs"/> epochs.
    /// </summary>
    public static double BoundaryRate(ViTTrainingOptions b, int epochs, int totalEpochs)
    {
        var whole = Stage(b, totalEpochs, "");
        const long steps = 1000;   // per epoch: any resolution gives the same rate at an epoch boundary
        return TrainingLoop.LearningRateAt(whole, epochs * steps, steps, totalEpochs * steps);
    }

    // The first stage of GOHSP and SGMP (soft pruning, gradual pruning): the one schedule's warm-up, then a cosine from the
    // base rate down to the boundary rate (about half of it at E/2), so the W-subproblem keeps a working learning rate.
    private static ViTTrainingOptions FirstStage(ViTTrainingOptions b, int epochs, int totalEpochs, double boundary, string stage)
    {
        var o = Stage(b, epochs, stage);
        o.WarmupEpochs = WarmupFor(totalEpochs, b.WarmupEpochs);
        o.MinLearningRate = Math.Min(o.LearningRate, Math.Max(b.MinLearningRate, boundary));
        return o;
    }

    // The fine-tuning after the cut: from the boundary rate down to the base minimum, after a short warm-up (a fresh AdamW
    // on the pruned model), so that the two stages together follow the one schedule SOMP and the dense reference get.
    private static ViTTrainingOptions SecondStage(ViTTrainingOptions b, int epochs, double boundary, string stage)
    {
        var o = Stage(b, epochs, stage);
        o.LearningRate = Math.Max(b.MinLearningRate, boundary);
        return o;
    }

    // The base options with the stage's epochs, warm-up and checkpoint folder (each method and stage checkpoints into its
    // own sub-folder: they would otherwise overwrite each other's file).
    private static ViTTrainingOptions Stage(ViTTrainingOptions b, int epochs, string stage)
    {
        var o = b.Copy();
        o.Epochs = epochs;
        o.WarmupEpochs = WarmupFor(epochs, b.WarmupEpochs);
        o.CheckpointFolder = b.CheckpointFolder is null ? null : Path.Combine(b.CheckpointFolder, stage);
        return o;
    }
}
