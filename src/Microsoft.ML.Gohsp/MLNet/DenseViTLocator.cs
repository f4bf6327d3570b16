using Microsoft.ML;
using Microsoft.ML.Data;

namespace Microsoft.ML.Gohsp;

/// <summary>The dense model to prune and the column it reads its images from.</summary>
internal sealed record DenseViT(ViTModelParameters Model, string FeatureColumnName);

/// <summary>
/// Finds the dense ViT a pruning estimator works on: inside a trained/loaded transformer (or chain), or upstream of the
/// scored data an <see cref="EstimatorChain{TLastTransformer}"/> hands the next estimator.
/// </summary>
internal static class DenseViTLocator
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
    internal static DenseViT? FindUpstreamViT(IDataView view)
    {
        for (var v = view; v is not null; v = (v as IDataTransform)?.Source)
            if (MLNetInternals.ScoringPredictor(v) is { Predictor: ViTModelParameters p } found)
                return new DenseViT(p, found.FeatureColumnName ?? throw new InvalidOperationException(
                    "GOHSP found the upstream ViT but not its feature column; pass the trained model to the catalog method."));
        return null;
    }
}
