using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// What a pruning method runs on (<see cref="IPruningMethod.Run"/>): the model it starts from, the data, where its log
/// lines and training progress go, its cancellation, and — for a method run one stage at a time — the previous stage's
/// report and the distillation teacher. The method's own settings are its options; device, seed and schedule are in
/// their training stages.
/// </summary>
public sealed class PruningContext
{
    /// <summary>Creates a context.</summary>
    /// <param name="model">The trained model the method starts from (not modified).</param>
    /// <param name="train">Training data of every stage (and GOHSP's calibration images).</param>
    /// <param name="validation">Optional validation data: accuracy after each stage goes into the report.</param>
    public PruningContext(VisionTransformerModel model, ImageTensorData train, ImageTensorData? validation = null)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        Train = train ?? throw new ArgumentNullException(nameof(train));
        Validation = validation;
    }

    /// <summary>The trained model the method starts from: the dense model, or the output of a previous stage. Not modified.</summary>
    public VisionTransformerModel Model { get; }

    /// <summary>Training data of every stage.</summary>
    public ImageTensorData Train { get; }

    /// <summary>Optional validation data: accuracy after each stage goes into the report.</summary>
    public ImageTensorData? Validation { get; }

    /// <summary>Receives progress lines (each prefixed with the method's name).</summary>
    public Action<string>? Log { get; init; }

    /// <summary>Receives training progress.</summary>
    public IProgress<ViTTrainingProgress>? Progress { get; init; }

    /// <summary>Cancels training; observed after every optimiser step.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>
    /// The report of the stage that produced <see cref="Model"/>, when a method runs one stage at a time (GOHSP's
    /// <see cref="GohspPruner.SoftPrune"/> and <see cref="GohspPruner.HardPruneAndFineTune"/>); its accuracies and findings
    /// carry forward. Null for a run that starts from the dense model.
    /// </summary>
    public PruningReport? Previous { get; init; }

    /// <summary>The distillation teacher of the fine-tuning (and of every training stage with <see cref="PruningOptions.DistillEveryStage"/>); null uses <see cref="Model"/>.</summary>
    public VisionTransformerModel? Teacher { get; init; }

    /// <summary>
    /// Times a pruned architecture against the dense one for a latency target's calibration
    /// (<see cref="PruningOptions.LatencyCalibrationIterations"/>): (dense, pruned, batch) → (pruned / dense, dense ms). Null
    /// times on this machine; tests pass a deterministic one.
    /// </summary>
    internal Func<ViTArchitecture, ViTArchitecture, int, (double Ratio, double DenseMs)>? LatencyTimer { get; init; }

    /// <summary>
    /// AdamW's state at the end of the previous stage of the same run (<see cref="PruningOptions.CarryOptimizerMoments"/>),
    /// for the fine-tuning after the cut; owned by the caller. Null starts the fine-tuning fresh.
    /// </summary>
    internal OptimizerMoments? Moments { get; init; }

    /// <summary>The same data, sinks and cancellation for the next stage of a staged run.</summary>
    internal PruningContext With(VisionTransformerModel model, PruningReport? previous, VisionTransformerModel? teacher, OptimizerMoments? moments = null) =>
        new(model, Train, Validation)
        {
            Log = Log, Progress = Progress, CancellationToken = CancellationToken, Previous = previous, Teacher = teacher, LatencyTimer = LatencyTimer,
            Moments = moments,
        };
}
