namespace Microsoft.ML.Gohsp.Training;

/// <summary>A progress report from a training loop (dense training, soft pruning, fine-tuning, SGMP).</summary>
/// <param name="Stage">What is running, e.g. "dense", "gohsp-soft-pruning", "fine-tune".</param>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="TotalEpochs">Epochs of this stage.</param>
/// <param name="Step">1-based step within the epoch.</param>
/// <param name="StepsPerEpoch">Steps per epoch.</param>
/// <param name="Loss">Mean training loss of the epoch so far.</param>
/// <param name="LearningRate">Current learning rate.</param>
/// <param name="ImagesPerSecond">Training throughput of the epoch so far.</param>
/// <param name="EpochCompleted">True for the report sent once an epoch has finished.</param>
/// <param name="TrainAccuracy">Training accuracy of the finished epoch (on augmented batches), when <paramref name="EpochCompleted"/>.</param>
/// <param name="ValidationAccuracy">Validation accuracy after the finished epoch, when a validation set was given.</param>
public sealed record ViTTrainingProgress(
    string Stage, int Epoch, int TotalEpochs, int Step, int StepsPerEpoch, double Loss, double LearningRate,
    double ImagesPerSecond, bool EpochCompleted, double? TrainAccuracy = null, double? ValidationAccuracy = null);

/// <summary>Per-epoch record kept by a training run.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Loss">Mean training loss.</param>
/// <param name="TrainAccuracy">Training accuracy on augmented batches.</param>
/// <param name="ValidationAccuracy">Validation accuracy, if a validation set was given.</param>
/// <param name="Seconds">Wall-clock seconds of the epoch.</param>
/// <param name="Extra">Stage-specific figures (e.g. the ADMM primal residual).</param>
public sealed record EpochRecord(int Epoch, double Loss, double TrainAccuracy, double? ValidationAccuracy, double Seconds,
    IReadOnlyDictionary<string, double>? Extra = null);
