using Microsoft.ML.Data;

namespace Microsoft.ML.Gohsp;

/// <summary>Batched ML.NET scoring for ViT models that <c>Model.Load</c> rebuilt with ML.NET's row-by-row scorer.</summary>
public static class ViTScoring
{
    /// <summary>
    /// Makes every ViT prediction transformer in <paramref name="model"/> (a loaded chain, or one transformer) score
    /// <c>Transform</c> cursors in batches of <see cref="ViTModelParameters.ScoringBatchSize"/> rows, as freshly trained
    /// or pruned models do. Returns <paramref name="model"/>; <c>Evaluate</c>, <c>PredictionEngine</c> and saving are
    /// unchanged.
    /// </summary>
    public static TTransformer UseBatchScoring<TTransformer>(this TTransformer model) where TTransformer : ITransformer
    {
        ArgumentNullException.ThrowIfNull(model);
        foreach (var t in Flatten(model))
            if (t is MulticlassPredictionTransformer<ViTModelParameters> vit) ViTBatchScorer.Attach(vit);
        return model;
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer t)
    {
        if (t is IEnumerable<ITransformer> chain)
        {
            foreach (var inner in chain)
                foreach (var x in Flatten(inner)) yield return x;
        }
        else yield return t;
    }
}
