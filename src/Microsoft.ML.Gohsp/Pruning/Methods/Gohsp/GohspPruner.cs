using System.Collections.Immutable;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// GOHSP as a pruning method: end to end on a trained dense model (<see cref="Run"/>), or one stage at a time so that a
/// user can inspect or change the model between them: stage 1 <see cref="RankAndMaskHeads"/> (graph-based head ranking and
/// the head mask Mᴴ), stage 2 <see cref="SoftPrune"/> (ADMM soft structured pruning), stage 3
/// <see cref="HardPruneAndFineTune"/> (projection, physical pruning, fine-tuning, optionally distilled). Input models are
/// never modified; every stage returns a new model and a <see cref="PruningReport"/> that carries the earlier stages'
/// findings forward (the next stage's <see cref="PruningContext.Previous"/>).
/// </summary>
public sealed class GohspPruner : IPruningMethod
{
    /// <summary>The report's <see cref="PruningReport.Method"/> for GOHSP.</summary>
    public const string MethodName = "gohsp";

    /// <summary>The report's <see cref="PruningReport.Stage"/> after stage 1 (<see cref="RankAndMaskHeads"/>): heads masked, nothing removed yet.</summary>
    public const string HeadMaskedStage = "head-masked";

    /// <summary>The report's <see cref="PruningReport.Stage"/> after stage 2 (<see cref="SoftPrune"/>): trained towards the sparse set, nothing removed yet.</summary>
    public const string SoftPrunedStage = "soft-pruned";

    /// <summary>Creates the method with its options.</summary>
    public GohspPruner(GohspOptions options) => Options = options ?? throw new ArgumentNullException(nameof(options));

    /// <inheritdoc />
    public string Name => MethodName;

    /// <summary>The GOHSP options every stage reads.</summary>
    public GohspOptions Options { get; }

    PruningOptions IPruningMethod.Options => Options;

    /// <summary>
    /// Runs the three stages on <see cref="PruningContext.Model"/>, the dense model; the fine-tuning (and with
    /// <see cref="PruningOptions.DistillEveryStage"/> the soft pruning) distils from it, or from
    /// <see cref="PruningContext.Teacher"/>, when distillation is on.
    /// </summary>
    public PruningResult Run(PruningContext context)
    {
        var masked = RankAndMaskHeads(context);
        try
        {
            // stage 2 trains the stage-1 copy in place (no third copy of the weights), so its teacher is the dense model
            var teacher = context.Teacher ?? context.Model;
            var (soft, moments) = SoftPruneCore(context.With(masked.Model, masked.Report, teacher), inPlace: true);
            using (moments)
                return HardPruneAndFineTune(context.With(soft.Model, soft.Report, teacher, moments));
        }
        finally
        {
            masked.Model.Dispose();
        }
    }

    /// <summary>
    /// Stage 1: runs <see cref="GohspOptions.CalibrationImages"/> images (the start of the training data) through the
    /// model, builds a head graph per block, ranks heads by the stationary distribution of its Markov chain and chooses
    /// the heads to remove (<see cref="GohspOptions.HeadBudget"/>). Returns a copy of the model — with the head mask set
    /// (saved with the model) for <see cref="HeadPruningMode.Hard"/>, unmasked for <see cref="HeadPruningMode.Soft"/> — and a
    /// report (stage "head-masked") whose blocks name the kept heads, with their stationary probabilities in its
    /// <see cref="GohspDetails"/>.
    /// </summary>
    /// <param name="context">The dense model (without a head mask), data, log and cancellation; its <see cref="PruningContext.Previous"/> is not read.</param>
    public PruningResult RankAndMaskHeads(PruningContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var dense = context.Model;
        if (dense.KeptHeads is not null)
            throw new ArgumentException("The model already has a head mask (GOHSP stage 1 already ran); continue with SoftPrune.", nameof(dense));
        var options = Options;
        var run = PruningRun.Start(context.With(dense, previous: null, teacher: null), this);
        var calibration = context.Train.Take(options.CalibrationImages);
        var ranking = RankHeads(dense, calibration, options);
        var graphImportance = ranking.Select(r => r.Importance(options.Direction)).ToArray();
        StructurePlan plan;
        if (options.HeadPruning == HeadPruningMode.Guided)
        {
            // no head is fixed: the report carries every head's stationary probability for stage 2's projections
            plan = new StructurePlan(dense.Architecture.Blocks.Select(BlockPlan.KeepAll).ToImmutableArray());
        }
        else if (options.HeadBudget == HeadBudget.Global)
        {
            // heads compete with every other structure: magnitude score × graph importance (mean 1 per block)
            plan = run.Budget.Allocate(dense.Architecture, WeightHeads(StructuredProjection.Magnitude(dense), graphImportance, options));
        }
        else
        {
            var kept = HeadGraphRanking.SelectHeads(graphImportance, options.HeadPruningFraction, options.Budget.MinHeads);
            plan = new StructurePlan(dense.Architecture.Blocks.Select((spec, b) =>
                BlockPlan.KeepAll(spec) with { Heads = kept[b].ToImmutableArray() }).ToImmutableArray());
        }
        var keptHeads = plan.Blocks.Select(b => (IReadOnlyList<int>)b.Heads.ToArray()).ToArray();
        run.Log($"stage 1: kept heads per block {string.Join(" | ", keptHeads.Select(k => string.Join(",", k)))} " +
                $"({plan.Blocks.Sum(b => b.Heads.Length)} of {dense.Architecture.Blocks.Sum(b => b.Heads)}; {options.HeadPruning} head pruning)");
        var model = dense.Clone();
        try
        {
            if (options.HeadPruning == HeadPruningMode.Hard) model.SetHeadMasks(keptHeads);
            model.eval();
            run.Measure(HeadMaskedStage, model);
            return new PruningResult(model, run.Report(HeadMaskedStage, model.Architecture, plan, Details(plan, (b, h) => ranking[b].Stationary[h])));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The per-block head rankings of <see cref="GohspOptions.HeadScore"/> on <paramref name="calibration"/>.</summary>
    public static BlockHeadRanking[] RankHeads(VisionTransformerModel model, ImageTensorData calibration, GohspOptions options)
    {
        var teleport = options.HeadScore == HeadScore.SaliencyPersonalizedGraph
            ? HeadGraphRanking.TaylorSaliency(model, calibration, options.SoftPruning)
            : null;
        return HeadGraphRanking.Rank(model, calibration, options.SoftPruning, options.Similarity, options.Damping, options.PowerIterationTolerance, teleport);
    }

    /// <summary>
    /// The heads stage 1 chose: the model's head mask, else (soft head pruning) the kept heads of a stage-1 report; none with
    /// <see cref="HeadPruningMode.Guided"/>.
    /// </summary>
    private static IReadOnlyList<IReadOnlyList<int>>? ChosenHeads(VisionTransformerModel model, PruningReport? previous, GohspOptions options) =>
        model.KeptHeads ?? (options.HeadPruning != HeadPruningMode.Guided && previous is { Stage: HeadMaskedStage } && previous.Blocks.Count == model.Architecture.Depth
            ? previous.Blocks.Select(b => (IReadOnlyList<int>)b.KeptHeads).ToArray()
            : null);

    /// <summary>
    /// Stage 2: trains a copy of the context's model for <see cref="GohspOptions.SoftPruning"/> epochs on the task loss
    /// plus the ADMM term ρ/2·Σ‖W − Z + U‖² towards the structured-sparse set of <see cref="PruningOptions.Sparsity"/>. The
    /// heads of the model's head mask (stage 1) are fixed; a model without a head mask has its heads allocated by magnitude
    /// like every other structure. Returns the soft-pruned copy (still dense-shaped, head mask kept) and a report (stage
    /// "soft-pruned") with the primal residual per epoch and, per block, what the final model will keep.
    /// </summary>
    /// <param name="context">
    /// The model to soft-prune, usually the output of <see cref="RankAndMaskHeads"/>, with that stage's report as
    /// <see cref="PruningContext.Previous"/> (for the head scores and accuracies; null when there is none). Stage 2 reads
    /// Sparsity, SoftPruning, Admm and Budget of the options.
    /// </param>
    public PruningResult SoftPrune(PruningContext context)
    {
        var (result, moments) = SoftPruneCore(context, inPlace: false);
        moments?.Dispose();
        return result;
    }

    // stage 2, and AdamW's final state when the options carry it to the fine-tuning (the caller owns it)
    private (PruningResult, OptimizerMoments?) SoftPruneCore(PruningContext context, bool inPlace)
    {
        var run = PruningRun.Start(context, this);
        var (model, previous, options) = (context.Model, context.Previous, Options);
        var keptHeads = ChosenHeads(model, previous, options);
        var importance = GuidedImportance(previous, options);
        var soft = inPlace ? model : model.Clone();
        try
        {
            using var admm = new AdmmSoftPruning(run.Budget.Fraction, keptHeads, options.Admm, options.Budget, options.SoftPruning.Epochs, importance,
                costModel: run.Budget.Cost);
            run.TrainStage(soft, options.SoftPruning, "soft-pruning", admm);
            soft.to(CPU);
            soft.eval();
            run.Measure(SoftPrunedStage, soft);
            var cut = admm.FinalPlan(soft);                       // the support of ADMM's final Z: what stage 3 keeps
            double overlap = cut.Overlap(Projection(soft, keptHeads, run.Budget, admm.Importance), soft.Architecture);
            run.Log($"soft pruning: residual {admm.ResidualHistory.LastOrDefault():G4} = {admm.ResidualRatio:P1} of its start {admm.ResidualStart:G4}; " +
                    $"Z's support overlaps a fresh projection of W by {overlap:P1}");
            var residuals = (DetailsOf(previous)?.ResidualHistory ?? []).Concat(admm.ResidualHistory);
            var details = Details(cut, HeadScores(previous), residuals) with
            {
                ResidualStart = admm.ResidualStart,
                CutPlan = cut,
                CutPlanOverlap = overlap,
            };
            return (new PruningResult(soft, run.Report(SoftPrunedStage, soft.Architecture, cut, details)), run.DetachMoments());
        }
        catch
        {
            run.DetachMoments()?.Dispose();
            if (!inPlace) soft.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Stage 3: projects the weights onto the structured-sparse set (with the heads of the model's head mask fixed),
    /// physically removes the zero structures — heads, q/k dims, v dims, MLP neurons — giving a smaller heterogeneous ViT,
    /// and fine-tunes it for <see cref="PruningOptions.FineTune"/> epochs, distilling from <see cref="PruningContext.Teacher"/>
    /// when <see cref="PruningOptions.Distillation"/> is on. Returns the pruned model and the final report.
    /// </summary>
    /// <param name="context">
    /// The model to cut, usually the output of <see cref="SoftPrune"/> (not modified), with that stage's report as
    /// <see cref="PruningContext.Previous"/> (head scores, residuals, accuracies; null when there is none) and the dense model
    /// as <see cref="PruningContext.Teacher"/> (null uses the model itself). Stage 3 reads Sparsity, Budget, FineTune and the
    /// distillation options.
    /// </param>
    public PruningResult HardPruneAndFineTune(PruningContext context)
    {
        var run = PruningRun.Start(context, this);
        var (model, previous, options) = (context.Model, context.Previous, Options);
        // The support of ADMM's final Z when stage 2 ran (its report carries it), else the projection Π(W) with the stage-1
        // heads; then the shared tail (surgery, fine-tune, report). The surgery copies only the kept structures (head masks
        // are not parameters), so zeroing first is not needed.
        var plan = CutPlanOf(previous, model.Architecture)
            ?? Projection(model, ChosenHeads(model, previous, options), run.Budget, GuidedImportance(previous, options));
        var earlier = DetailsOf(previous);
        return run.Finish(model, plan, Details(plan, HeadScores(previous), earlier?.ResidualHistory) with
        {
            ResidualStart = earlier?.ResidualStart,
            CutPlan = earlier?.CutPlan,
            CutPlanOverlap = earlier?.CutPlanOverlap,
        });
    }

    /// <summary>
    /// GOHSP's figures of a stage that keeps <paramref name="plan"/>: the kept heads' scores (<paramref name="headScore"/>,
    /// none when null) and the residuals so far.
    /// </summary>
    private static GohspDetails Details(StructurePlan plan, Func<int, int, double>? headScore, IEnumerable<double>? residuals = null) => new()
    {
        StationaryProbabilities = plan.Blocks.Select((p, b) => headScore is null ? [] : p.Heads.Select(h => headScore(b, h)).ToArray()).ToArray(),
        ResidualHistory = residuals?.ToArray() ?? [],
    };

    /// <summary>GOHSP's figures of an earlier stage's report; null when there is none.</summary>
    private static GohspDetails? DetailsOf(PruningReport? previous) => previous?.Details as GohspDetails;

    /// <summary>
    /// The stationary probabilities of each block's kept heads in an earlier stage's report, when it scores every kept head of
    /// every block (its <see cref="BlockReport.KeptHeads"/> order); otherwise null.
    /// </summary>
    private static double[][]? StationaryOf(PruningReport? previous) =>
        DetailsOf(previous) is { } d && d.StationaryProbabilities.Count == previous!.Blocks.Count
            && previous.Blocks.Select((b, i) => d.StationaryProbabilities[i].Length == b.KeptHeads.Length).All(x => x)
            ? d.StationaryProbabilities.ToArray()
            : null;

    private static StructurePlan? CutPlanOf(PruningReport? previous, ViTArchitecture arch)
    {
        if (DetailsOf(previous)?.CutPlan is not { } plan) return null;
        try { plan.Validate(arch); return plan; }
        catch (ArgumentException) { return null; }   // a report of another model: re-plan from W
    }

    private static StructurePlan Projection(VisionTransformerModel model, IReadOnlyList<IReadOnlyList<int>>? keptHeads, PruningBudget budget,
        Func<VisionTransformerModel, Func<TorchSharp.Modules.Parameter, Tensor>, BlockImportance[]>? importance)
        => budget.Allocate(model.Architecture, importance?.Invoke(model, p => p) ?? StructuredProjection.Magnitude(model), fixedHeads: keptHeads);

    /// <summary>
    /// With <see cref="HeadPruningMode.Guided"/> and a stage-1 report that ranks every head: the structure importance of
    /// ADMM's projections, magnitude with each head's score multiplied by its graph importance. Otherwise null (magnitude).
    /// </summary>
    private static Func<VisionTransformerModel, Func<TorchSharp.Modules.Parameter, Tensor>, BlockImportance[]>? GuidedImportance(
        PruningReport? previous, GohspOptions options)
    {
        if (options.HeadPruning != HeadPruningMode.Guided || previous is null) return null;
        if (StationaryOf(previous) is not { } stationary
            || previous.Blocks.Select((b, i) => b.KeptHeads.Length != b.DenseHeads || stationary[i].Any(double.IsNaN)).Any(x => x))
            return null;
        var graph = previous.Blocks.Select((b, i) => BlockHeadRanking.ImportanceOf(
            b.KeptHeads.Zip(stationary[i]).OrderBy(t => t.First).Select(t => t.Second).ToArray(), options.Direction)).ToArray();
        return (model, weightOf) =>
        {
            var imp = StructuredProjection.Magnitude(model, weightOf);
            return imp.Length != graph.Length || imp.Select((b, i) => b.Heads.Length != graph[i].Length).Any(x => x) ? imp : WeightHeads(imp, graph, options);
        };
    }

    /// <summary>
    /// Each head's magnitude score times its graph importance (mean 1 per block) to the power
    /// <see cref="GohspOptions.HeadGraphWeight"/>; with <see cref="HeadGraphScoring.RankWithinBlock"/> that product only orders
    /// each block's heads, which receive the block's magnitude scores in that order. The other structures as they are.
    /// </summary>
    private static BlockImportance[] WeightHeads(IReadOnlyList<BlockImportance> magnitude, IReadOnlyList<double[]> graph, GohspOptions options) =>
        magnitude.Select((b, i) =>
        {
            var weighted = b.Heads.Select((v, h) => (float)(v * Math.Pow(Math.Max(graph[i][h], 0), options.HeadGraphWeight))).ToArray();
            if (options.HeadGraphScoring == HeadGraphScoring.RankWithinBlock)
            {
                var sorted = b.Heads.OrderByDescending(v => v).ToArray();
                var order = Enumerable.Range(0, weighted.Length).OrderByDescending(h => weighted[h]).ThenBy(h => h).ToArray();
                weighted = new float[weighted.Length];
                for (int k = 0; k < order.Length; k++) weighted[order[k]] = sorted[k];
            }
            return new BlockImportance { Heads = weighted, QkDims = b.QkDims, VDims = b.VDims, Mlp = b.Mlp };
        }).ToArray();

    /// <summary>The stationary probability of (block, head) from an earlier stage's report; null when there is none.</summary>
    private static Func<int, int, double>? HeadScores(PruningReport? previous)
    {
        if (StationaryOf(previous) is not { } stationary) return null;
        var scores = previous!.Blocks.Select((b, i) => b.KeptHeads.Zip(stationary[i]).ToDictionary(t => t.First, t => t.Second)).ToArray();
        return (b, h) => scores[b].TryGetValue(h, out var p) ? p : double.NaN;
    }
}
