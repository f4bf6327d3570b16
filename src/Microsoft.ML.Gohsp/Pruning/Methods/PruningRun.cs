using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// The part every pruning method shares (GOHSP, SOMP, SGMP, and any other <see cref="IPruningMethod"/>): argument and option checks, validation accuracy per stage,
/// training stages through the one <see cref="TrainingLoop"/>, and the common tail — physical pruning with
/// <see cref="HardPruning"/>, fine-tuning (optionally distilled from the dense model), parameter/FLOP counting from the
/// pruned <see cref="ViTArchitecture"/> and the <see cref="PruningReport"/>.
/// </summary>
public sealed class PruningRun
{
    private readonly PruningContext _context;
    private readonly PruningOptions _options;
    private readonly Dictionary<string, double> _accuracy = new();
    private readonly Dictionary<string, double> _nll = new();
    private OptimizerMoments? _moments;
    private string? _lastStage;

    private PruningRun(PruningContext context, IPruningMethod method, PruningBudget budget)
    {
        _context = context; _options = method.Options;
        Dense = context.Model; Teacher = context.Teacher ?? context.Model; Train = context.Train; Budget = budget;
        Name = method.Name;
    }

    /// <summary>
    /// Rejects, before any work, a model that carries a GOHSP head mask (the output of GOHSP stage 1) where a method
    /// expects a dense model: dropping the mask silently would bring back heads the user had already removed.
    /// </summary>
    /// <param name="context">The run's context.</param>
    /// <param name="method">The method's name in the message ("SOMP", "SGMP").</param>
    internal static void RequireDense(PruningContext context, string method)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Model.KeptHeads is not null)
            throw new ArgumentException($"{method} prunes a dense model, but this one carries a GOHSP head mask (the output of GOHSP stage 1, " +
                "GohspRankHeads); continue it with GohspSoftPrune / GohspHardPrune, or call ClearHeadMasks() on it first.", "dense");
    }

    /// <summary>
    /// Checks the context and the method's options (before any work) and measures the model the run starts from — or, for
    /// a later stage of a staged run (<see cref="PruningContext.Previous"/> given), carries the earlier stages' accuracies
    /// over instead.
    /// </summary>
    /// <param name="context">Model, data, sinks, cancellation; the previous stage's report and the teacher of a staged run.</param>
    /// <param name="method">The method: its name and options.</param>
    /// <param name="planImportance">
    /// For a method that ranks the structures once, before any training (SOMP): computes that ranking after the checks,
    /// so that a latency target is calibrated by timing the plans the method itself allocates (<see cref="PlanImportance"/>
    /// keeps the result). Null calibrates with the magnitude of the weights.
    /// </param>
    public static PruningRun Start(PruningContext context, IPruningMethod method, Func<IReadOnlyList<BlockImportance>>? planImportance = null)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(method);
        var options = method.Options ?? throw new ArgumentNullException(nameof(method), "The method has no options.");
        options.Validate();
        options.ValidateStages(context.Model.Architecture.Channels);
        if (context.Train.Count == 0) throw new ArgumentException("The training data has no rows.", "train");
        if (options.Distillation && context.Train.TeacherProbabilities is not null)
            throw new ArgumentException("The training data carries a teacher's probabilities and Distillation (the dense model as teacher) is on: " +
                "the teacher's probabilities replace the dense-model teacher, so set Distillation = false, or train without them.", nameof(PruningOptions.Distillation));
        // the one place a run's budget is built: a latency target is calibrated here, before any training (or carried from the previous stage)
        var importance = planImportance?.Invoke();
        var budget = PruningBudget.Resolve(options, context.Model, context.Previous, context.LatencyTimer, importance);
        var run = new PruningRun(context, method, budget) { PlanImportance = importance };
        if (budget.CalibrationNote is { } note) run.Log(note);
        if (budget.Latency is not null) run.Log(budget.Describe());
        if (context.Previous is not { } previous) run.Measure("dense", context.Model);
        else
        {
            foreach (var (stage, accuracy) in previous.ValidationAccuracy) run._accuracy[stage] = accuracy;
            foreach (var (stage, nll) in previous.ValidationNll) run._nll[stage] = nll;
            run._lastStage = previous.Stage;
        }
        return run;
    }

    /// <summary>The dense model (never modified).</summary>
    public VisionTransformerModel Dense { get; }
    /// <summary>The distillation teacher of the fine-tuning (the dense model unless a staged run says otherwise).</summary>
    public VisionTransformerModel Teacher { get; }
    /// <summary>The training data.</summary>
    public ImageTensorData Train { get; }
    /// <summary>What the run's allocations spend: parameters, or the latency a table estimates.</summary>
    public PruningBudget Budget { get; }
    /// <summary>The ranking <see cref="Start"/> computed for the plan and the latency calibration; null when none was given.</summary>
    public IReadOnlyList<BlockImportance>? PlanImportance { get; private init; }
    /// <summary>The method's <see cref="IPruningMethod.Name"/>: report method, log prefix and training-stage prefix.</summary>
    public string Name { get; }

    /// <summary>Logs one line with the method prefix.</summary>
    public void Log(string message) => _context.Log?.Invoke($"[{Name}] {message}");

    /// <summary>Records the validation accuracy of <paramref name="model"/> after <paramref name="stage"/> (when a validation set was given).</summary>
    public void Measure(string stage, VisionTransformerModel model)
    {
        _lastStage = stage;
        if (_context.Validation is null) return;
        var m = Fidelity.Measure(model, _context.Validation, _options.FineTune);
        _accuracy[stage] = m.Top1;
        _nll[stage] = m.Nll;
        Log($"validation {stage}: top-1 {m.Top1:P2}, NLL {m.Nll:F4}");
    }

    /// <summary>
    /// Trains <paramref name="model"/> in place on the training data (stage name "<see cref="Name"/>-<paramref name="stage"/>"),
    /// distilling from <see cref="Teacher"/> as well when <see cref="PruningOptions.DistillEveryStage"/> is on.
    /// </summary>
    /// <remarks>
    /// With <see cref="PruningOptions.CarryOptimizerMoments"/> the run keeps AdamW's state at the end of the stage, and
    /// <see cref="Finish"/> starts the fine-tuning from it, sliced by the surgery.
    /// </remarks>
    public void TrainStage(VisionTransformerModel model, ViTTrainingOptions options, string stage, ITrainingHook? hook = null)
    {
        var moments = RunStage(model, options, stage, hook, _options.Distillation && _options.DistillEveryStage, null, _options.CarryOptimizerMoments);
        if (moments is null) return;
        _moments?.Dispose();
        _moments = moments;
    }

    private OptimizerMoments? RunStage(VisionTransformerModel model, ViTTrainingOptions options, string stage, ITrainingHook? hook, bool distil,
        OptimizerMoments? initial, bool capture)
    {
        var kd = distil ? new Distillation(Teacher, _options.DistillationTemperature, _options.DistillationWeight) : null;
        var loop = new TrainingLoop(options, $"{Name}-{stage}", _context.Log, _context.Progress)
        { Hook = CombinedTrainingHook.Of(hook, kd), InitialMoments = initial, CaptureMoments = capture };
        loop.Train(model, Train, null, _context.CancellationToken);
        return loop.FinalMoments;
    }

    /// <summary>
    /// Hands AdamW's state at the end of the last <see cref="TrainStage"/> to the caller (to carry it to the next stage of a
    /// staged run, <see cref="PruningContext.Moments"/>); null without <see cref="PruningOptions.CarryOptimizerMoments"/>.
    /// </summary>
    internal OptimizerMoments? DetachMoments()
    {
        var moments = _moments;
        _moments = null;
        return moments;
    }

    /// <summary>
    /// The common tail: removes what <paramref name="plan"/> drops from <paramref name="model"/> (not modified), fine-tunes
    /// the pruned model, measures it and builds the report.
    /// </summary>
    /// <param name="model">The model to cut (the dense model for SOMP, the soft/gradually pruned copy otherwise).</param>
    /// <param name="plan">What every block keeps (allocated against the dense architecture).</param>
    /// <param name="details">The method's own figures (<see cref="PruningReport.Details"/>); null for none.</param>
    public PruningResult Finish(VisionTransformerModel model, StructurePlan plan, PruningDetails? details = null)
    {
        var pruned = HardPruning.Prune(model, plan);
        try
        {
            string? preCut = _lastStage;
            Measure(PruningReport.HardPrunedStage, pruned);
            // AdamW's state before the cut (this run's stage, or the previous stage's of a staged run), cut as the weights are
            var before = _moments ?? _context.Moments;
            using (var carried = before is null ? null : HardPruning.SliceMoments(before, model.Architecture, plan))
            {
                if (carried is not null) Log($"fine-tuning starts from the optimiser's moments of the {preCut} stage (step {carried.Entries.Values.Max(e => e.Step)})");
                RunStage(pruned, _options.FineTune, "fine-tune", null, _options.Distillation, carried, capture: false);
            }
            pruned.to(CPU);
            Measure("fine-tuned", pruned);
            var report = Report(PruningReport.FinalStage, pruned.Architecture, plan, details) with { PreCutStage = preCut };
            if (report.CutShockTop1 is double shock)
                Log($"cut shock ({preCut} → hard-pruned): top-1 −{shock * 100:F2} points, NLL +{report.CutShockNll:F4}");
            Log($"{report.ParametersBefore:N0} → {report.ParametersAfter:N0} parameters ({report.AchievedSparsity:P1} removed), " +
                $"{report.FlopsBefore / 1e6:F1} → {report.FlopsAfter / 1e6:F1} MFLOPs/image" +
                (report.EstimatedLatencyMs is double ms ? $", estimated {report.DenseLatencyMs:F2} → {ms:F2} ms per batch of {report.LatencyBatchSize} (target {report.TargetLatencyMs:F2})" : ""));
            return new PruningResult(pruned, report);
        }
        catch
        {
            pruned.Dispose();
            throw;
        }
        finally
        {
            _moments?.Dispose();
            _moments = null;
        }
    }

    /// <summary>
    /// The report of this run after <paramref name="stage"/>: <paramref name="plan"/> says what every block keeps (for an
    /// intermediate stage, what the final model will keep), <paramref name="after"/> is the model's current shape.
    /// </summary>
    /// <param name="stage">The stage just finished (<see cref="PruningReport.Stage"/>).</param>
    /// <param name="after">The model's current shape.</param>
    /// <param name="plan">What every block keeps, or will keep after the cut.</param>
    /// <param name="details">The method's own figures (<see cref="PruningReport.Details"/>); null for none.</param>
    public PruningReport Report(string stage, ViTArchitecture after, StructurePlan plan, PruningDetails? details = null)
    {
        var arch = Dense.Architecture;
        return new PruningReport
        {
            Method = Name,
            Stage = stage,
            RequestedSparsity = Budget.Latency is null ? _options.Sparsity : null,
            TargetLatencyMs = Budget.TargetMs,
            LatencyBatchSize = Budget.Latency?.Batch,
            DenseLatencyMs = Budget.DenseMs,
            EstimatedLatencyMs = Budget.EstimateMs(plan.PrunedArchitecture(arch)),
            LatencyDevice = Budget.Latency?.Device,
            LatencyCalibration = Budget.Calibration,
            ParametersBefore = arch.ParameterCount,
            ParametersAfter = after.ParameterCount,
            FlopsBefore = arch.ForwardFlops,
            FlopsAfter = after.ForwardFlops,
            Blocks = plan.Blocks.Select((p, b) => new BlockReport(b, p.Heads.ToArray(), p.QkDims[0].Length, p.VDims[0].Length, p.MlpNeurons.Length,
                arch.Blocks[b].Heads, arch.Blocks[b].QkDim, arch.Blocks[b].VDim, arch.Blocks[b].MlpHidden)).ToArray(),
            ValidationAccuracy = new Dictionary<string, double>(_accuracy),
            ValidationNll = new Dictionary<string, double>(_nll),
            Details = details,
        };
    }
}
