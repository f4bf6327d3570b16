using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// Knowledge distillation from a teacher (the dense model) during fine-tuning: adds
/// α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) to the task loss (Hinton et al. soft targets).
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
    public Tensor? ExtraLoss(VisionTransformerModel model, Tensor images, Tensor logits, Tensor labels)
    {
        if (_alpha == 0) return null;
        // explicit Scalars held across the native calls (an implicit one can be finalized mid-call)
        using var t = _temperature.ToScalar();
        using var weight = (_alpha * _temperature * _temperature).ToScalar();
        Tensor logTeacher;
        using (no_grad())
        {
            _teacher.eval();
            logTeacher = _teacher.forward(images).to(ScalarType.Float32).div(t).log_softmax(1);
        }
        var logStudent = logits.to(ScalarType.Float32).div(t).log_softmax(1);
        return Loss(logStudent, logTeacher).mul(weight);
    }

    /// <summary>
    /// Mean over the batch of KL(teacher ‖ student) = Σ_c p_t(c)·(log p_t(c) − log p_s(c)), from log-probabilities [B, C].
    /// (TorchSharp's <c>kl_div</c> treats its target as log-probabilities by default, <c>log_target: true</c>, unlike
    /// PyTorch; the target here is log-probabilities and the flag is passed explicitly.)
    /// </summary>
    internal static Tensor Loss(Tensor logStudent, Tensor logTeacher) =>
        nn.functional.kl_div(logStudent, logTeacher, log_target: true, reduction: nn.Reduction.Sum) / logStudent.shape[0];
}
