using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp.Pruning;

// The ML.NET side of every pruning method's options, declared once: the pruning estimators (PruningEstimatorBase) read
// these; the core (PruningProtocol, the pruners) takes its data, sinks and cancellation from a PruningContext instead.
public abstract partial class PruningOptions
{
    /// <summary>Pruning estimators: the key-typed label column. Default "Label". The core ignores it.</summary>
    public string LabelColumnName { get; set; } = DefaultColumnNames.Label;

    /// <summary>Pruning estimators: the image column; null uses the dense model's feature column. The core ignores it.</summary>
    public string? ImageColumnName { get; set; }

    /// <summary>
    /// Pruning estimators: optional validation data, whose accuracy after every stage goes into the report. The core takes
    /// its validation data from <see cref="PruningContext.Validation"/> and ignores this.
    /// </summary>
    public IDataView? ValidationSet { get; set; }

    /// <summary>
    /// Pruning estimators: an optional teacher, a column of class probabilities per image (a known-size Single vector of the
    /// class count, e.g. the <c>Score</c> column of any upstream ML.NET multiclass model trained on the same label). Every
    /// stage that trains distils from it, with the loss α·T²·KL(teacher ‖ student) + (1 − α)·CE(label) and α, T taken from
    /// that stage's <see cref="ViTTrainingOptions.TeacherWeight"/> and <see cref="ViTTrainingOptions.TeacherTemperature"/>.
    /// Read once with the images before the run (with augmentation the teacher saw the un-augmented image). It replaces the
    /// dense-model teacher: setting it together with <see cref="Distillation"/> is refused. Null (default): no teacher. The
    /// core takes a teacher's probabilities from <see cref="ImageTensorData.TeacherProbabilities"/> and ignores this.
    /// </summary>
    public string? TeacherScoreColumnName { get; set; }

    /// <summary>
    /// Pruning estimators: an optional progress callback for the training stages. The core reports to
    /// <see cref="PruningContext.Progress"/> and ignores this.
    /// </summary>
    public IProgress<ViTTrainingProgress>? Progress { get; set; }
}
