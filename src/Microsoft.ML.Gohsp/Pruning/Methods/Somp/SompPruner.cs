using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// SOMP, the one-shot baseline: ranks the structures GOHSP prunes (heads, q/k dims, v dims, MLP neurons) once by the ℓ2
/// magnitude of the dense weights (<see cref="StructuredProjection.Magnitude"/>), allocates the global parameter budget
/// with <see cref="StructuredProjection.Allocate"/> without fixed heads (so heads compete by magnitude with every other
/// structure and whole heads can be dropped, down to <see cref="BudgetOptions.MinHeads"/> per block), removes them with
/// <see cref="HardPruning"/> and fine-tunes. The dense model is not modified.
/// </summary>
public static class SompPruner
{
    /// <summary>Prunes <paramref name="dense"/> in one shot and fine-tunes the result.</summary>
    /// <param name="dense">The trained dense model (not modified).</param>
    /// <param name="train">Fine-tuning data.</param>
    /// <param name="validation">Optional validation data: accuracy after each stage goes into the report.</param>
    /// <param name="options">Sparsity, budget, fine-tuning and distillation options.</param>
    /// <param name="log">Receives progress lines.</param>
    /// <param name="progress">Receives training progress.</param>
    /// <param name="cancellationToken">Cancels training.</param>
    public static PruningResult Run(VisionTransformerModel dense, ImageTensorData train, ImageTensorData? validation, SompOptions options,
        Action<string>? log = null, IProgress<ViTTrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        PruningRun.RequireDense(dense, "SOMP");
        var run = PruningRun.Start(dense, train, validation, options, log, progress, cancellationToken);
        var plan = run.Budget.Allocate(dense.Architecture, StructuredProjection.Magnitude(dense));
        run.Log($"kept heads per block {string.Join(" | ", plan.Blocks.Select(b => string.Join(",", b.Heads)))}");
        return run.Finish(dense, plan);
    }
}
