using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// SGMP, the gradual baseline (Zhu &amp; Gupta's gradual magnitude pruning on GOHSP's structures): trains a copy of the dense
/// model for <see cref="SgmpOptions.Gradual"/> while <see cref="GradualMagnitudePruning"/> raises the structured sparsity on
/// the cubic <see cref="SgmpSchedule"/>, re-ranking the kept structures by ℓ2 magnitude (or in the Fisher metric,
/// <see cref="SgmpOptions.Metric"/>) at every pruning step and keeping the
/// pruned ones at zero; then removes them with <see cref="HardPruning"/> and fine-tunes. The dense model is not modified.
/// </summary>
public sealed class SgmpPruner : IPruningMethod
{
    /// <summary>Creates the method with its options.</summary>
    public SgmpPruner(SgmpOptions options) => Options = options ?? throw new ArgumentNullException(nameof(options));

    /// <inheritdoc />
    public string Name => "sgmp";

    /// <summary>Sparsity, schedule, training, budget and distillation options.</summary>
    public SgmpOptions Options { get; }

    PruningOptions IPruningMethod.Options => Options;

    /// <summary>Runs the gradual phase, the hard pruning and the fine-tuning on <see cref="PruningContext.Model"/>, a dense model (not modified).</summary>
    public PruningResult Run(PruningContext context)
    {
        PruningRun.RequireDense(context, "SGMP");
        var run = PruningRun.Start(context, this);
        var (dense, train, options) = (context.Model, context.Train, Options);
        var schedule = SgmpSchedule.For(options, (long)TrainingLoop.StepsPerEpoch(train.Count, options.Gradual.BatchSize) * options.Gradual.Epochs, run.Budget.Fraction);
        run.Log($"cubic schedule: s_i {schedule.InitialSparsity:P1} → s_f {schedule.FinalSparsity:P1}, t0 {schedule.StartStep}, " +
                $"every {schedule.Frequency} steps, {schedule.PruningSteps} pruning steps, ramp ends at step {schedule.EndStep}");
        var model = dense.Clone();
        using var hook = new GradualMagnitudePruning(schedule, options.Budget, run.Budget.Cost, options.Metric);
        try
        {
            run.TrainStage(model, options.Gradual, "gradual", hook);
            hook.PruneTo(model, run.Budget.Fraction); // no-op when the ramp already reached s_f (it does unless training was cut short)
            run.Log($"gradual phase: sparsity after each pruning step {string.Join(", ", hook.History.Select(e => e.AchievedSparsity.ToString("P1")))}");
            run.Measure("gradually-pruned", model);
            return run.Finish(model, hook.Plan!);
        }
        finally
        {
            model.Dispose();
        }
    }
}
