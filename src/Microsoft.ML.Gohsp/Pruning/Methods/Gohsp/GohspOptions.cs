using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>Options of the whole GOHSP pipeline (pure TorchSharp core; the ML.NET estimators wrap it).</summary>
public class GohspOptions : PruningOptions
{
    /// <summary>Creates the default options (5 soft-pruning + 5 fine-tuning epochs).</summary>
    public GohspOptions() : base(fineTuneEpochs: 5) { }

    /// <inheritdoc />
    public override PruningMethod? Method => PruningMethod.Gohsp;

    /// <inheritdoc />
    public override IPruningMethod CreateMethod() => new GohspPruner(this);

    /// <summary>
    /// How many heads stage 1 removes. Default <see cref="HeadBudget.Global"/>: heads compete with q/k dims, v dims and MLP
    /// neurons in the global allocation of the parameter budget, so the number removed follows the sparsity.
    /// </summary>
    public HeadBudget HeadBudget { get; set; } = HeadBudget.Global;
    /// <summary>Fraction of all attention heads removed by stage 1 with <see cref="HeadBudget.Fraction"/>, in [0, 1). Default 0.25.</summary>
    public double HeadPruningFraction { get; set; } = 0.25;
    /// <summary>
    /// How stage 1's head ranking acts in stage 2. Default <see cref="HeadPruningMode.Guided"/>: the graph importance weights
    /// every head in each ADMM projection and no head is fixed in advance. On the validation split at 70% and 90% it gave
    /// the lowest NLL of the three modes on average (docs/gohsp.md).
    /// </summary>
    public HeadPruningMode HeadPruning { get; set; } = HeadPruningMode.Guided;
    /// <summary>
    /// Exponent γ of the graph importance in a head's score: magnitude × importance^γ, wherever heads compete in the global
    /// allocation (<see cref="HeadPruningMode.Guided"/> projections, <see cref="HeadBudget.Global"/> at stage 1). Default 1;
    /// 0.5 tempers the graph's say, 0 scores heads by magnitude alone (the graph is still ranked and reported). Must be
    /// finite and ≥ 0.
    /// </summary>
    public double HeadGraphWeight { get; set; } = 1;
    /// <summary>
    /// What the graph-weighted head scores decide wherever heads compete in the global allocation. Default
    /// <see cref="HeadGraphScoring.RankWithinBlock"/>: the graph-weighted score (magnitude × importance^<see cref="HeadGraphWeight"/>)
    /// only orders the heads of each block, and each block's magnitude scores are handed out in that order, so the
    /// magnitudes decide how many heads a block keeps and the graph which ones. <see cref="HeadGraphScoring.Scaled"/>: the
    /// graph-weighted score competes as it is, so the graph decides how many heads as well; from dense models trained 16
    /// epochs it removed more heads and scored a higher validation NLL (docs/gohsp.md).
    /// </summary>
    public HeadGraphScoring HeadGraphScoring { get; set; } = HeadGraphScoring.RankWithinBlock;
    /// <summary>What the head chains' stationary distribution is computed from. Default <see cref="Pruning.HeadScore.Graph"/>.</summary>
    public HeadScore HeadScore { get; set; } = HeadScore.Graph;
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

    /// <inheritdoc />
    protected internal override IReadOnlyList<PruningStage> TrainingStages =>
        [new(nameof(SoftPruning), () => SoftPruning, o => SoftPruning = o), new(nameof(FineTune), () => FineTune, o => FineTune = o)];

    /// <summary>Throws naming the first invalid option.</summary>
    public override void Validate()
    {
        base.Validate();
        if (!Enum.IsDefined(HeadBudget)) throw new ArgumentOutOfRangeException(nameof(HeadBudget), HeadBudget, "HeadBudget must be Global or Fraction.");
        if (!Enum.IsDefined(HeadPruning)) throw new ArgumentOutOfRangeException(nameof(HeadPruning), HeadPruning, "HeadPruning must be Soft, Hard or Guided.");
        if (HeadPruning == HeadPruningMode.Guided && HeadBudget == HeadBudget.Fraction)
            throw new ArgumentException("HeadBudget.Fraction fixes a fraction of the heads at stage 1, which HeadPruning = Guided does not do " +
                "(guided heads compete in the global budget at every projection). Set HeadPruning to Hard or Soft to use HeadBudget.Fraction.", nameof(HeadBudget));
        if (!Enum.IsDefined(HeadScore)) throw new ArgumentOutOfRangeException(nameof(HeadScore), HeadScore, "HeadScore must be Graph or SaliencyPersonalizedGraph.");
        if (!(HeadPruningFraction >= 0 && HeadPruningFraction < 1)) throw new ArgumentOutOfRangeException(nameof(HeadPruningFraction), HeadPruningFraction, "HeadPruningFraction must be in [0, 1).");
        if (!(HeadGraphWeight >= 0 && double.IsFinite(HeadGraphWeight)))
            throw new ArgumentOutOfRangeException(nameof(HeadGraphWeight), HeadGraphWeight, "HeadGraphWeight must be a finite number ≥ 0 (1: magnitude × graph importance; 0: magnitude alone).");
        if (!Enum.IsDefined(HeadGraphScoring)) throw new ArgumentOutOfRangeException(nameof(HeadGraphScoring), HeadGraphScoring, "HeadGraphScoring must be Scaled or RankWithinBlock.");
        if (CalibrationImages <= 0) throw new ArgumentOutOfRangeException(nameof(CalibrationImages), CalibrationImages, "CalibrationImages must be positive.");
        if (!(Damping >= 0 && Damping < 1)) throw new ArgumentOutOfRangeException(nameof(Damping), Damping, "Damping must be in [0, 1).");
        if (Admm is null) throw new ArgumentNullException(nameof(Admm), "Admm must be set.");
        Admm.Validate();
    }
}

/// <summary>What the graph-weighted head scores decide in the global allocation (<see cref="GohspOptions.HeadGraphScoring"/>).</summary>
public enum HeadGraphScoring
{
    /// <summary>A head's score is its magnitude score × graph importance^<see cref="GohspOptions.HeadGraphWeight"/>.</summary>
    Scaled = 0,
    /// <summary>
    /// Per block, the heads are ordered by magnitude × graph importance^<see cref="GohspOptions.HeadGraphWeight"/>, and the
    /// block's magnitude scores, sorted, are given to the heads in that order: the block's scores as a set are its
    /// magnitudes (which decide how many heads it keeps against the other structures), the graph decides which.
    /// </summary>
    RankWithinBlock = 1,
}

/// <summary>How many heads GOHSP stage 1 removes.</summary>
public enum HeadBudget
{
    /// <summary>
    /// Heads compete in the global allocation of the parameter budget (<see cref="StructuredProjection.Allocate"/>) with q/k
    /// dims, v dims and MLP neurons; a head's score is its magnitude score times its graph importance (mean 1 per block).
    /// </summary>
    Global = 0,
    /// <summary>A fixed fraction of all heads (<see cref="GohspOptions.HeadPruningFraction"/>), the least important by the graph.</summary>
    Fraction = 1,
}

/// <summary>How GOHSP stage 1's head ranking acts in stage 2 (soft pruning).</summary>
public enum HeadPruningMode
{
    /// <summary>The chosen heads are zero in Z, and the ADMM term drives their weights to zero during stage 2.</summary>
    Soft = 0,
    /// <summary>The chosen heads' outputs are masked (multiplied by 0) from the first step of stage 2.</summary>
    Hard = 1,
    /// <summary>
    /// Stage 1 fixes no heads. Its graph importance (mean 1 per block) weights every head's magnitude score in each of
    /// ADMM's projections, so the heads to remove are chosen again at every Z update from the head graph and the current
    /// weights (W + U), competing with q/k dims, v dims and MLP neurons in the global budget
    /// (<see cref="GohspOptions.HeadBudget"/> does not apply).
    /// </summary>
    Guided = 2,
}
