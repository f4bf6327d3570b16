using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Knowledge distillation from a teacher (the dense model) during fine-tuning: adds
/// α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) to the task loss (Hinton et al. soft targets; the term is
/// <see cref="DistillationLoss"/>). A teacher's scores given per image instead of a teacher model are distilled by the
/// training loop itself (<see cref="ImageTensorData.WithTeacherProbabilities"/>).
/// </summary>
public sealed class Distillation : ITrainingHook
{
    private readonly VisionTransformerModel _teacher;
    private readonly double _temperature, _alpha;

    /// <summary>Creates the hook; the teacher is used in evaluation mode without gradients and is not disposed.</summary>
    public Distillation(VisionTransformerModel teacher, double temperature = 4, double alpha = 0.5)
    {
        _teacher = teacher ?? throw new ArgumentNullException(nameof(teacher));
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "Temperature must be positive.");
        if (!(alpha >= 0)) throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "Alpha must be non-negative.");
        _temperature = temperature;
        _alpha = alpha;
    }

    /// <inheritdoc />
    public string Fingerprint =>
        $"Distillation(T={RunFingerprint.Value(_temperature)} alpha={RunFingerprint.Value(_alpha)} teacher={_teacher.Architecture})";

    /// <inheritdoc />
    public Tensor? ExtraLoss(VisionTransformerModel model, Tensor images, Tensor logits, Tensor labels)
    {
        if (_alpha == 0) return null;
        using var weight = _alpha.ToScalar();
        Tensor teacherLogits;
        using (no_grad())
        {
            _teacher.eval();
            teacherLogits = _teacher.forward(images);
        }
        return DistillationLoss.FromLogits(logits, teacherLogits, _temperature).mul(weight);
    }
}
