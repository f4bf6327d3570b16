using Microsoft.ML;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// GOHSP stage 3 alone as an ML.NET estimator: projection onto the structured-sparse set (the head mask's heads fixed),
/// physical removal of heads / q-k dims / v dims / MLP neurons — a smaller heterogeneous ViT — and fine-tuning, optionally
/// distilled from a teacher (the dense model passed to the catalog method; without one, the model entering this stage).
/// Usually appended after <see cref="GohspSoftPruningEstimator"/>. Reads <see cref="PruningOptions.Sparsity"/>,
/// <see cref="PruningOptions.Budget"/>, <see cref="PruningOptions.FineTune"/> and the distillation options.
/// </summary>
public sealed class GohspHardPruningEstimator : PruningEstimatorBase<GohspPruningEstimator.Options>
{
    private readonly ViTModelParameters? _teacher;

    internal GohspHardPruningEstimator(IHostEnvironment env, GohspPruningEstimator.Options options, ITransformer? model, ITransformer? teacher)
        : base(env, options, "GohspPrune", model)
    {
        if (teacher is not null)
            _teacher = ViTLocator.FindViT(teacher)?.Model ?? throw new ArgumentException(
                $"The teacher passed to GOHSP hard pruning is a {teacher.GetType().Name}, not a ViT from Microsoft.ML.Gohsp.", nameof(teacher));
    }

    private protected override PruningResult Prune(ViTModelParameters input, PruningContext context, GohspPruningEstimator.Options options)
    {
        if (_teacher is not null && _teacher.Architecture.NumClasses != input.Architecture.NumClasses)
            throw new ArgumentException($"The teacher has {_teacher.Architecture.NumClasses} classes; the model has {input.Architecture.NumClasses}.", "teacher");
        var previous = GohspStages.Previous(input, GohspPruner.SoftPrunedStage, GohspPruner.HeadMaskedStage);
        return new GohspPruner(options).HardPruneAndFineTune(context.With(context.Model, previous, _teacher?.Model));
    }
}
