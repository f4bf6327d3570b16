using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// SOMP, the one-shot baseline: ranks the structures GOHSP prunes (heads, q/k dims, v dims, MLP neurons) once — by the ℓ2
/// magnitude of the dense weights (<see cref="StructuredProjection.Magnitude"/>), or by the Fisher or Taylor criterion on
/// calibration images (<see cref="SompOptions.Importance"/>) — allocates the global parameter budget
/// with <see cref="StructuredProjection.Allocate"/> without fixed heads (so heads compete by magnitude with every other
/// structure and whole heads can be dropped, down to <see cref="BudgetOptions.MinHeads"/> per block), removes them with
/// <see cref="HardPruning"/> and fine-tunes. The dense model is not modified.
/// </summary>
public sealed class SompPruner : IPruningMethod
{
    /// <summary>Creates the method with its options.</summary>
    public SompPruner(SompOptions options) => Options = options ?? throw new ArgumentNullException(nameof(options));

    /// <inheritdoc />
    public string Name => "somp";

    /// <summary>Sparsity, budget, fine-tuning and distillation options.</summary>
    public SompOptions Options { get; }

    PruningOptions IPruningMethod.Options => Options;

    /// <summary>Prunes <see cref="PruningContext.Model"/>, a dense model (not modified), in one shot and fine-tunes the result.</summary>
    public PruningResult Run(PruningContext context)
    {
        PruningRun.RequireDense(context, "SOMP");
        var dense = context.Model;
        var calibration = Options.Importance == SompImportance.Magnitude ? null : context.Train.Take(Options.CalibrationImages);
        // ranked before the budget is resolved, so that a latency target is calibrated with the plans this ranking gives
        var run = PruningRun.Start(context, this, () => Options.Importance switch
        {
            SompImportance.Fisher => FisherImportance.OneShot(dense, calibration!, Options.FineTune),
            SompImportance.Taylor => TaylorImportance.Structures(dense, calibration!, Options.FineTune),
            _ => StructuredProjection.Magnitude(dense),
        });
        var importance = run.PlanImportance!;
        if (calibration is not null) run.Log($"ranked by the {Options.Importance} criterion on {calibration.Count} calibration images");
        var plan = run.Budget.Allocate(dense.Architecture, importance);
        run.Log($"kept heads per block {string.Join(" | ", plan.Blocks.Select(b => string.Join(",", b.Heads)))}");
        return run.Finish(dense, plan);
    }
}
