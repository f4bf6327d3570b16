using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Training;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// Checks of a teacher score column (<see cref="ViTClassificationTrainer.Options.TeacherScoreColumnName"/>,
/// <see cref="Pruning.PruningOptions.TeacherScoreColumnName"/>): a known-size Single vector of one probability per class,
/// e.g. the <c>Score</c> column of any upstream ML.NET multiclass model. Its rows are read with the images
/// (<see cref="ImageColumn.ReadAll"/>) and checked there.
/// </summary>
internal static class TeacherColumn
{
    /// <summary>Estimator-time check: the column exists and is a vector of Single. Throws naming the column.</summary>
    public static void Check(SchemaShape schema, string column, string paramName)
    {
        if (!schema.TryFindColumn(column, out var col))
            throw new ArgumentOutOfRangeException(paramName, $"Teacher score column '{column}' was not found in the input schema. Available columns: {string.Join(", ", schema.Select(c => c.Name))}.");
        if (col.ItemType != NumberDataViewType.Single || col.Kind != SchemaShape.Column.VectorKind.Vector)
            throw new ArgumentOutOfRangeException(paramName,
                $"Teacher score column '{column}' has type {col.GetTypeString()}; expected a known-size vector of Single with one probability per class (e.g. an upstream model's Score column).");
    }

    /// <summary>
    /// Fit-time check: a known-size Single vector of <paramref name="classes"/> values, and — when the column names its
    /// slots (an ML.NET Score column does) and the label has key values — the classes in the label's order. Throws naming
    /// the column.
    /// </summary>
    public static void Check(DataViewSchema schema, string column, int classes, string labelColumn, string paramName)
    {
        var col = schema.GetColumnOrNull(column)
            ?? throw new ArgumentOutOfRangeException(paramName, $"Teacher score column '{column}' was not found in the input data. Available columns: {string.Join(", ", schema.Select(c => c.Name))}.");
        if (col.Type is not VectorDataViewType { ItemType: var item, IsKnownSize: true, Size: var size } || item != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(paramName,
                $"Teacher score column '{column}' has type {col.Type}; expected a known-size vector of {classes} Single values, one probability per class (e.g. an upstream model's Score column).");
        if (size != classes)
            throw new ArgumentOutOfRangeException(paramName,
                $"Teacher score column '{column}' has {size} values per row; the label has {classes} classes, so the teacher must give {classes} probabilities.");
        if (Names(col, AnnotationUtils.Kinds.SlotNames) is { } slots && schema.GetColumnOrNull(labelColumn) is { } label
            && Names(label, AnnotationUtils.Kinds.KeyValues) is { } keys && slots.Length == keys.Length && !slots.SequenceEqual(keys))
            throw new ArgumentOutOfRangeException(paramName,
                $"Teacher score column '{column}' names its classes [{string.Join(", ", slots)}]; label column '{labelColumn}' has the classes [{string.Join(", ", keys)}]. " +
                "The teacher's probabilities must be in the label's class order (train the teacher on the same key-typed label).");
    }

    /// <summary>Why a row of the teacher column is not a probability vector; the message names the column and the row.</summary>
    public static InvalidOperationException NotAProbabilityVector(string column, long row, string problem) =>
        new($"Teacher score column '{column}' is not a probability vector in row {row}: {problem}. Each row must hold non-negative, " +
            $"finite class probabilities summing to 1 (± {ImageTensorData.TeacherSumTolerance}).");

    private static string[]? Names(DataViewSchema.Column col, string kind)
    {
        if (col.Annotations.Schema.GetColumnOrNull(kind) is not { Type: VectorDataViewType { ItemType: TextDataViewType } }) return null;
        VBuffer<ReadOnlyMemory<char>> names = default;
        col.Annotations.GetValue(kind, ref names);
        return names.DenseValues().Select(n => n.ToString()).ToArray();
    }
}
