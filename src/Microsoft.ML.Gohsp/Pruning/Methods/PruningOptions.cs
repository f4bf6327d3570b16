using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The names of this library's structured pruning methods (for a command line or a configuration file;
/// <see cref="PruningOptions.Create"/> gives their options). A method is a type (<see cref="IPruningMethod"/>); a method
/// defined elsewhere has no name here, and is named by its registration (<see cref="PruningMethods"/>).
/// </summary>
public enum PruningMethod
{
    /// <summary>GOHSP: graph-based head ranking, ADMM soft pruning, hard pruning and fine-tuning (<see cref="GohspPruner"/>).</summary>
    Gohsp = 0,
    /// <summary>Structured one-shot magnitude pruning: rank once by ℓ2 magnitude, hard-prune, fine-tune (<see cref="SompPruner"/>).</summary>
    Somp = 1,
    /// <summary>Structured gradual magnitude pruning: cubic sparsity ramp during training, then hard prune and fine-tune (<see cref="SgmpPruner"/>).</summary>
    Sgmp = 2,
}

/// <summary>
/// What every structured pruning method shares (<see cref="GohspOptions"/>, <see cref="SompOptions"/>,
/// <see cref="SgmpOptions"/>): the parameter budget, its floors, the fine-tuning stage and optional distillation from the
/// dense model. The budget is a fraction of the parameters (<see cref="Sparsity"/>) or a latency on this machine
/// (<see cref="TargetLatencyMs"/>, <see cref="TargetLatencyFraction"/>). The methods also share the code behind these options
/// (budget allocation, surgery, counting, report). The ML.NET pruning estimators read the columns, validation data and
/// progress that MLNet/PruningOptions.Estimator.cs adds to this class, so every method's options are its estimator's options.
/// </summary>
public abstract partial class PruningOptions
{
    /// <summary>Creates the shared options with a fine-tuning stage of <paramref name="fineTuneEpochs"/> epochs.</summary>
    /// <param name="fineTuneEpochs">Epochs of <see cref="FineTune"/>.</param>
    protected PruningOptions(int fineTuneEpochs) =>
        FineTune = new() { Epochs = fineTuneEpochs, LearningRate = 5e-4, WarmupEpochs = 1 };

    /// <summary>New default options of the library's method <paramref name="method"/>.</summary>
    /// <param name="method">The method's name.</param>
    public static PruningOptions Create(PruningMethod method) =>
        (Enum.IsDefined(method) ? PruningMethods.Find(method.ToString()) : null)?.CreateOptions()
        ?? throw new ArgumentOutOfRangeException(nameof(method), method, "Unknown pruning method.");

    /// <summary>The library's method these options configure; null for a method defined elsewhere.</summary>
    public virtual PruningMethod? Method => null;

    /// <summary>The method these options configure, holding these options: what <see cref="PruningProtocol.Run"/> and the pruning estimators run.</summary>
    public abstract IPruningMethod CreateMethod();

    private double? _sparsity;

    /// <summary>
    /// Fraction of the model's total parameters to remove, in (0, 1). Default 0.4. The budget is either this or a latency
    /// target (<see cref="TargetLatencyMs"/>, <see cref="TargetLatencyFraction"/>): setting both is an error.
    /// </summary>
    public double Sparsity { get => _sparsity ?? 0.4; set => _sparsity = value; }

    /// <summary>
    /// Prune to a latency instead of a parameter fraction: the pruned model's time for one forward of
    /// <see cref="LatencyBatchSize"/> images on this machine, in milliseconds, positive and below the dense model's. The
    /// budget allocation spends the latency of a measured table (<see cref="LatencyTable"/>) instead of parameters. Null
    /// (default) prunes by <see cref="Sparsity"/>. Set at most one of <see cref="Sparsity"/>, this and
    /// <see cref="TargetLatencyFraction"/>.
    /// </summary>
    public double? TargetLatencyMs { get; set; }

    /// <summary>
    /// Prune to a latency given as a fraction of the dense model's, in (0, 1): 0.5 asks for a model that runs a batch of
    /// <see cref="LatencyBatchSize"/> images in half the dense model's time on this machine (about 2× faster). Like
    /// <see cref="TargetLatencyMs"/> but independent of the machine's speed. Null (default) prunes by <see cref="Sparsity"/>.
    /// </summary>
    public double? TargetLatencyFraction { get; set; }

    /// <summary>Images per forward that a latency target is for, ≥ 1. Default 64.</summary>
    public int LatencyBatchSize { get; set; } = 64;

    /// <summary>
    /// The latency table that a latency target is spent against. Null (default) measures one on this machine at the first
    /// run for the dense architecture and <see cref="LatencyBatchSize"/> (a few seconds) and reuses it from its disk cache
    /// afterwards (<see cref="LatencyModel.LoadOrMeasure"/>, keyed by the CPU, its flags, the torch threads and the
    /// configuration). Pass a table measured on the machine that will run the model (<see cref="LatencyModel.Measure"/>)
    /// to prune for that machine elsewhere; its <see cref="LatencyModel.Batch"/> must equal <see cref="LatencyBatchSize"/>.
    /// </summary>
    public LatencyModel? LatencyTable { get; set; }

    /// <summary>
    /// Plans timed on this machine, before any training, to correct a latency target's budget: ≥ 0, default 3. The latency
    /// table estimates a block from its parts, each timed alone, so a plan spent against the table alone can miss the
    /// target when the pruned model is re-timed. With a latency target and a value above 0, a run first calibrates
    /// (<see cref="LatencyBudget.Calibrate"/>): it allocates against the table with the magnitude importance of the
    /// model's weights, times the planned architecture against the dense one (random weights, float32 inference without
    /// autograd on the CPU of this process, batches of <see cref="LatencyBatchSize"/>, 5 interleaved rounds), scales the
    /// share of the table's latency it keeps by target / measured until the timed share is within 3% of the target or this
    /// many plans were timed, and then spends the calibrated share of the table's latency in every allocation. 0 spends the
    /// table's estimate alone. Ignored for a <see cref="Sparsity"/> budget, and for a <see cref="LatencyTable"/> of another
    /// machine or thread count. A later stage of a staged GOHSP run whose <see cref="PruningContext.Previous"/> report has
    /// the same target spends that report's budget and times nothing. The report records the calibration
    /// (<see cref="PruningReport.LatencyCalibration"/>); a run that must be reproducible passes its
    /// <see cref="LatencyCalibrationSummary.TableLatencyFraction"/> as <see cref="TargetLatencyFraction"/> with this set to
    /// 0 and the same table, which allocates exactly the same plan. docs/benchmarks.md ("Latency budget") has the measurements.
    /// </summary>
    public int LatencyCalibrationIterations { get; set; } = 3;

    /// <summary>Whether the budget is a latency (<see cref="TargetLatencyMs"/> or <see cref="TargetLatencyFraction"/>) rather than <see cref="Sparsity"/>.</summary>
    public bool HasLatencyTarget => TargetLatencyMs is not null || TargetLatencyFraction is not null;

    /// <summary>
    /// Training options of the fine-tuning after hard pruning. Default lr 5e-4 with one warm-up epoch (a fresh AdamW
    /// without warm-up moves every weight by ~lr on its first steps, which measurably hurts a just-pruned model); 5 epochs
    /// for GOHSP and SGMP, 10 for SOMP (so that every method gets 10 epochs after the dense model by default).
    /// </summary>
    public ViTTrainingOptions FineTune { get; set; }

    /// <summary>
    /// Distil from the dense model during fine-tuning. Default false. A teacher's probabilities carried by the training
    /// data (<see cref="ImageTensorData.TeacherProbabilities"/>, an estimator's <c>TeacherScoreColumnName</c>) replace the
    /// dense-model teacher in every training stage; a run with both is refused.
    /// </summary>
    public bool Distillation { get; set; }

    /// <summary>
    /// With <see cref="Distillation"/> on, distil from the dense model in every training stage of the method (GOHSP's soft
    /// pruning, SGMP's gradual stage) as well as in fine-tuning. Default false: fine-tuning only. Setting it without
    /// <see cref="Distillation"/> is an error.
    /// </summary>
    public bool DistillEveryStage { get; set; }

    /// <summary>
    /// Carry AdamW's state across the surgery: the fine-tuning starts from the step counts and moments the stage before the
    /// cut (GOHSP's soft pruning, SGMP's gradual stage) ended with, sliced as the weights are, instead of from zero moments.
    /// Within one run (<c>GohspPrune</c>, <c>SgmpPrune</c>, <see cref="PruningProtocol.Run"/>); a stage run on its own starts
    /// fresh. A method without a stage before the cut (SOMP) ignores it. Default false.
    /// </summary>
    public bool CarryOptimizerMoments { get; set; }

    /// <summary>Distillation temperature T, positive. Default 4.</summary>
    public double DistillationTemperature { get; set; } = 4;

    /// <summary>Weight α of the distillation term α·T²·KL, non-negative. Default 0.5.</summary>
    public double DistillationWeight { get; set; } = 0.5;

    /// <summary>Budget floors and tolerance.</summary>
    public BudgetOptions Budget { get; set; } = new();

    /// <summary>Training epochs this method spends after the dense model (the sum over its training stages).</summary>
    public int TotalTrainingEpochs => TrainingStages.Sum(s => s.Options?.Epochs ?? 0);

    /// <summary>
    /// The training stages in the order they run, with the option names used in error messages; the last is
    /// <see cref="FineTune"/>. <see cref="PruningProtocol.ApplyEpochBudget"/> splits an epoch budget over them.
    /// </summary>
    protected internal abstract IReadOnlyList<PruningStage> TrainingStages { get; }

    /// <summary>Throws naming the first invalid option (training stages are checked against the model when a run starts).</summary>
    public virtual void Validate()
    {
        if (TargetLatencyMs is not null && TargetLatencyFraction is not null)
            throw new ArgumentException("Set TargetLatencyMs (milliseconds) or TargetLatencyFraction (a fraction of the dense model's latency), not both.", nameof(TargetLatencyFraction));
        if (HasLatencyTarget && _sparsity is not null)
            throw new ArgumentException($"Sparsity (a fraction of the parameters) and {(TargetLatencyMs is null ? nameof(TargetLatencyFraction) : nameof(TargetLatencyMs))} " +
                "(a latency) are two ways to set the pruning budget: set one of them.", nameof(Sparsity));
        if (TargetLatencyMs is double ms && !(ms > 0 && double.IsFinite(ms)))
            throw new ArgumentOutOfRangeException(nameof(TargetLatencyMs), ms, "TargetLatencyMs (milliseconds per forward of LatencyBatchSize images) must be a positive finite number.");
        if (TargetLatencyFraction is double f && !(f > 0 && f < 1))
            throw new ArgumentOutOfRangeException(nameof(TargetLatencyFraction), f, "TargetLatencyFraction (the pruned model's latency over the dense model's) must be in (0, 1).");
        if (LatencyBatchSize < 1)
            throw new ArgumentOutOfRangeException(nameof(LatencyBatchSize), LatencyBatchSize, "LatencyBatchSize (images per forward of the latency target) must be ≥ 1.");
        if (LatencyCalibrationIterations < 0)
            throw new ArgumentOutOfRangeException(nameof(LatencyCalibrationIterations), LatencyCalibrationIterations,
                "LatencyCalibrationIterations (plans timed to calibrate a latency target) must be ≥ 0; 0 spends the latency table's estimate alone.");
        if (LatencyTable is not null && !HasLatencyTarget)
            throw new ArgumentException("LatencyTable is set but there is no latency target: set TargetLatencyMs or TargetLatencyFraction, or remove LatencyTable.", nameof(LatencyTable));
        if (LatencyTable is { } table && table.Batch != LatencyBatchSize)
            throw new ArgumentOutOfRangeException(nameof(LatencyBatchSize), LatencyBatchSize,
                $"LatencyTable is for batches of {table.Batch} images; LatencyBatchSize is {LatencyBatchSize}. Set LatencyBatchSize = {table.Batch}, or measure a table for {LatencyBatchSize}.");
        if (!HasLatencyTarget && !(Sparsity > 0 && Sparsity < 1)) throw new ArgumentOutOfRangeException(nameof(Sparsity), Sparsity, "Sparsity (fraction of parameters removed) must be in (0, 1).");
        if (!(DistillationTemperature > 0) || double.IsInfinity(DistillationTemperature))
            throw new ArgumentOutOfRangeException(nameof(DistillationTemperature), DistillationTemperature, "DistillationTemperature must be a positive finite number.");
        if (!(DistillationWeight >= 0) || double.IsInfinity(DistillationWeight))
            throw new ArgumentOutOfRangeException(nameof(DistillationWeight), DistillationWeight, "DistillationWeight must be a non-negative finite number.");
        if (DistillEveryStage && !Distillation)
            throw new ArgumentException("DistillEveryStage distils from the dense model in every training stage, but Distillation is off: set Distillation = true, or DistillEveryStage = false.", nameof(DistillEveryStage));
        if (Budget is null) throw new ArgumentNullException(nameof(Budget), "Budget must be set.");
        if (Budget.Granularity < 1)
            throw new ArgumentOutOfRangeException("Budget.Granularity", Budget.Granularity, "Budget.Granularity must be ≥ 1 (1 prunes one structure at a time).");
        if (!(Budget.Tolerance >= 0 && Budget.Tolerance < 1))
            throw new ArgumentOutOfRangeException("Budget.Tolerance", Budget.Tolerance, "Budget.Tolerance must be in [0, 1).");
        foreach (var (name, o) in TrainingStages)
            if (o is null) throw new ArgumentNullException(name, $"{name} (training options) must be set.");
    }

    /// <summary>Validates every training stage for a model with <paramref name="channels"/> input channels; the message names the stage.</summary>
    internal void ValidateStages(int channels)
    {
        foreach (var (name, o) in TrainingStages)
        {
            try { o.Validate(channels); }
            catch (ArgumentException e) { throw new ArgumentException($"Invalid {name} options: {e.Message}", $"{name}.{e.ParamName}", e); }
        }
    }
}

/// <summary>One training stage of a pruning method: its option's name (as error messages name it) and that option.</summary>
public sealed class PruningStage
{
    private readonly Func<ViTTrainingOptions> _get;
    private readonly Action<ViTTrainingOptions> _set;

    /// <summary>Creates a stage that reads and replaces its options through <paramref name="get"/> and <paramref name="set"/>.</summary>
    /// <param name="name">The option's name, e.g. <c>nameof(FineTune)</c>.</param>
    /// <param name="get">Reads the option.</param>
    /// <param name="set">Replaces the option.</param>
    public PruningStage(string name, Func<ViTTrainingOptions> get, Action<ViTTrainingOptions> set)
    {
        Name = name ?? throw new ArgumentNullException(nameof(name));
        _get = get ?? throw new ArgumentNullException(nameof(get));
        _set = set ?? throw new ArgumentNullException(nameof(set));
    }

    /// <summary>The option's name, e.g. "SoftPruning", "FineTune".</summary>
    public string Name { get; }

    /// <summary>The stage's training options (null when unset; the option checks report it).</summary>
    public ViTTrainingOptions Options { get => _get(); set => _set(value); }

    /// <summary>Deconstructs into (<see cref="Name"/>, <see cref="Options"/>).</summary>
    public void Deconstruct(out string name, out ViTTrainingOptions options) => (name, options) = (Name, Options);
}
