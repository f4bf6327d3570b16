using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// The distillation term of the library, in one place: T²·KL(softmax(teacher/T) ‖ softmax(student/T)) averaged over the
/// batch (Hinton et al. soft targets), with the teacher given as logits (<see cref="Pruning.Distillation"/>, a ViT teacher)
/// or as class probabilities (a teacher's scores carried by <see cref="ImageTensorData.TeacherProbabilities"/>).
/// </summary>
internal static class DistillationLoss
{
    /// <summary>Probabilities are clamped here before their logarithm, so that an exact 0 gives a finite log-probability.</summary>
    private const double ProbabilityFloor = 1e-30;

    /// <summary>T²·KL(softmax(teacherLogits/T) ‖ softmax(studentLogits/T)), mean over the batch; the teacher gets no gradient.</summary>
    public static Tensor FromLogits(Tensor studentLogits, Tensor teacherLogits, double temperature)
    {
        using var t = temperature.ToScalar();
        Tensor logTeacher;
        using (no_grad())
            logTeacher = teacherLogits.to(ScalarType.Float32).div(t).log_softmax(1);
        return Scaled(studentLogits, logTeacher, temperature);
    }

    /// <summary>
    /// T²·KL(q ‖ softmax(studentLogits/T)) with q = softmax(log p / T) for the teacher's probabilities p [B, C]: the
    /// teacher at temperature T, exactly as <see cref="FromLogits"/> for any logits whose softmax is p (the softmax's
    /// normaliser cancels). At T = 1, q = p.
    /// </summary>
    public static Tensor FromProbabilities(Tensor studentLogits, Tensor teacherProbabilities, double temperature)
    {
        using var t = temperature.ToScalar();
        using var floor = ProbabilityFloor.ToScalar();
        Tensor logTeacher;
        using (no_grad())
            logTeacher = teacherProbabilities.to(ScalarType.Float32).clamp_min(floor).log().div(t).log_softmax(1);
        return Scaled(studentLogits, logTeacher, temperature);
    }

    private static Tensor Scaled(Tensor studentLogits, Tensor logTeacher, double temperature)
    {
        // explicit Scalars held across the native calls (an implicit one can be finalized mid-call)
        using var t = temperature.ToScalar();
        using var squared = (temperature * temperature).ToScalar();
        var logStudent = studentLogits.to(ScalarType.Float32).div(t).log_softmax(1);
        return KL(logStudent, logTeacher).mul(squared);
    }

    /// <summary>
    /// Mean over the batch of KL(teacher ‖ student) = Σ_c p_t(c)·(log p_t(c) − log p_s(c)), from log-probabilities [B, C].
    /// (TorchSharp's <c>kl_div</c> treats its target as log-probabilities by default, <c>log_target: true</c>, unlike
    /// PyTorch; the target here is log-probabilities and the flag is passed explicitly.)
    /// </summary>
    public static Tensor KL(Tensor logStudent, Tensor logTeacher) =>
        nn.functional.kl_div(logStudent, logTeacher, log_target: true, reduction: nn.Reduction.Sum) / logStudent.shape[0];
}
