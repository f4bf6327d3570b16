using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// SGMP, the gradual baseline (Zhu &amp; Gupta's gradual magnitude pruning on GOHSP's structures): trains a copy of the dense
/// model for <see cref="SgmpOptions.Gradual"/> while <see cref="GradualMagnitudePruning"/> raises the structured sparsity on
/// the cubic <see cref="SgmpSchedule"/>, re-ranking the kept structures by ℓ2 magnitude at every pruning step and keeping the
/// pruned ones at zero; then removes them with <see cref="HardPruning"/> and fine-tunes. The dense model is not modified.
/// </summary>
public static class SgmpPruner
{
    /// <summary>Runs the gradual phase, the hard pruning and the fine-tuning.</summary>
    /// <param name="dense">The trained dense model (not modified).</param>
    /// <param name="train">Training data of both phases.</param>
    /// <param name="validation">Optional validation data: accuracy after each stage goes into the report.</param>
    /// <param name="options">Sparsity, schedule, training, budget and distillation options.</param>
    /// <param name="log">Receives progress lines.</param>
    /// <param name="progress">Receives training progress.</param>
    /// <param name="cancellationToken">Cancels training.</param>
    public static PruningResult Run(VisionTransformerModel dense, ImageTensorData train, ImageTensorData? validation, SgmpOptions options,
        Action<string>? log = null, IProgress<ViTTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        PruningRun.RequireDense(dense, "SGMP");
        var run = PruningRun.Start(dense, train, validation, options, log, progress, cancellationToken);
        var schedule = SgmpSchedule.For(options, (long)TrainingLoop.StepsPerEpoch(train.Count, options.Gradual.BatchSize) * options.Gradual.Epochs, run.Budget.Fraction);
        run.Log($"cubic schedule: s_i {schedule.InitialSparsity:P1} → s_f {schedule.FinalSparsity:P1}, t0 {schedule.StartStep}, " +
                $"every {schedule.Frequency} steps, {schedule.PruningSteps} pruning steps, ramp ends at step {schedule.EndStep}");
        var model = dense.Clone();
        using var hook = new GradualMagnitudePruning(schedule, options.Budget, run.Budget.Cost);
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
