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
        Tensor soft;
        using (no_grad())
        {
            _teacher.eval();
            soft = _teacher.forward(images).div(_temperature).softmax(1);
        }
        var logStudent = logits.div(_temperature).log_softmax(1);
        var kl = nn.functional.kl_div(logStudent, soft, reduction: nn.Reduction.Sum) / logits.shape[0];
        return kl * (_alpha * _temperature * _temperature);
    }
}
