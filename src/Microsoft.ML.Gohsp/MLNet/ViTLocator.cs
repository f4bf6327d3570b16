using Microsoft.ML;
using Microsoft.ML.Data;

namespace Microsoft.ML.Gohsp;

/// <summary>A ViT found in a model or upstream of scored data, and the column it reads its images from.</summary>
internal sealed record FoundViT(ViTModelParameters Model, string FeatureColumnName);

/// <summary>
/// Finds a ViT of this library — the dense model a pruning method starts from, the teacher of a distilled stage, the output
/// of an earlier pruning stage, the model to export — inside a trained or loaded transformer (or chain), or upstream of the
/// scored data an <see cref="EstimatorChain{TLastTransformer}"/> hands the next estimator.
/// </summary>
internal static class ViTLocator
{
    /// <summary>The ViT prediction transformer inside <paramref name="model"/> (itself, or the last one of a chain).</summary>
    internal static MulticlassPredictionTransformer<ViTModelParameters>? FindViT(ITransformer model) => model switch
    {
        MulticlassPredictionTransformer<ViTModelParameters> t => t,
        IEnumerable<ITransformer> chain => chain.Select(FindViT).LastOrDefault(t => t is not null),
        _ => null,
    };

    /// <summary>The image column a ViT prediction transformer reads (an MLImage model names it itself: MLNetInternals.PredictionTransformer).</summary>
    internal static string ImageColumnOf(MulticlassPredictionTransformer<ViTModelParameters> t) =>
        t.FeatureColumnName ?? t.Model.ImageColumnName ?? throw new InvalidOperationException("The ViT prediction transformer names no image column.");

    /// <summary>
    /// Walks the scored data view handed over by EstimatorChain back to the ViT model that scored it (through ML.NET's
    /// scorer internals, <see cref="MLNetInternals.ScoringPredictor"/>).
    /// </summary>
    /// <param name="view">The data view the estimator is fitted on.</param>
    /// <param name="caller">Who looks, named in the message (the method, "SOMP", or the estimator).</param>
    internal static FoundViT? FindUpstreamViT(IDataView view, string caller)
    {
        for (var v = view; v is not null; v = (v as IDataTransform)?.Source)
            if (MLNetInternals.ScoringPredictor(v) is { Predictor: ViTModelParameters p } found)
                return new FoundViT(p, found.FeatureColumnName ?? throw new InvalidOperationException(
                    $"{caller} found the upstream ViT but not its feature column; pass the trained model to the catalog method."));
        return null;
    }
}
