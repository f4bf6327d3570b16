using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Microsoft.ML.Gohsp.MLNet;

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

    /// <summary>
    /// Walks the scored data view handed over by EstimatorChain back to the ViT model that scored it. Uses reflection
    /// over ML.NET 5.0.1 internals (scorer → bindable mapper → predictor); a test fails loudly if they move.
    /// </summary>
    internal static DenseViT? FindUpstreamViT(IDataView view)
    {
        for (var v = view; v is not null; v = (v as IDataTransform)?.Source)
            if (FieldOfType(v, "ISchemaBindableMapper") is { } bindable && PredictorOf(bindable) is ViTModelParameters p)
                return new DenseViT(p, FindFeatureName(v) ?? throw new InvalidOperationException(
                    "GOHSP found the upstream ViT but not its feature column; pass the trained model to the catalog method."));
        return null;
    }

    // The multiclass scorer wraps the predictor's mapper (LabelNameBindableMapper adds slot names): follow nested mappers.
    private static object? PredictorOf(object bindable, int depth = 0)
    {
        if (FieldOfType(bindable, "IPredictor") is { } p) return p;
        return depth < 4 && FieldOfType(bindable, "ISchemaBindableMapper") is { } inner ? PredictorOf(inner, depth + 1) : null;
    }

    private static string? FindFeatureName(object scorer)
    {
        // scorer.Bindings.RowMapper.InputRoleMappedSchema.Feature.Value.Name
        var bindings = FieldOfType(scorer, "ScorerBindingsBase", matchBase: true);
        var mapper = bindings?.GetType().GetProperty("RowMapper", BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance)?.GetValue(bindings)
                     ?? (bindings is null ? null : FieldOfType(bindings, "ISchemaBoundRowMapper"));
        var roles = mapper?.GetType().GetProperty("InputRoleMappedSchema")?.GetValue(mapper) as RoleMappedSchema;
        return roles?.Feature?.Name;
    }

    private static object? FieldOfType(object o, string typeName, bool matchBase = false)
    {
        for (var t = o.GetType(); t is not null; t = t.BaseType)
            foreach (var f in t.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            {
                var ft = f.FieldType;
                // simple names: these are ML.NET 5.0.1 internals (pinned; covered by a test)
                bool match = ft.Name == typeName || ft.GetInterfaces().Any(i => i.Name == typeName);
                for (var b = ft.BaseType; matchBase && !match && b is not null; b = b.BaseType) match = b.Name == typeName;
                if (match) return f.GetValue(o);
            }
        return null;
    }
}
