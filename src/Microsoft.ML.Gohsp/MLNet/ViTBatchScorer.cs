using Microsoft.ML.Data;
using Microsoft.ML.Numeric;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp;

public sealed partial class ViTModelParameters
{
    private int _scoringBatchSize = ViTBatchScorer.DefaultBatchSize;

    /// <summary>
    /// Rows that ML.NET <c>Transform</c> cursors score in one forward (default 64); 1 scores row by row. Applies to the
    /// prediction transformers this library creates (trainer, pruning estimators, pretrained import). Results do not
    /// depend on it beyond float rounding of the matrix products.
    /// </summary>
    public int ScoringBatchSize
    {
        get => _scoringBatchSize;
        set => _scoringBatchSize = value >= 1 ? value
            : throw new ArgumentOutOfRangeException(nameof(ScoringBatchSize), value, "ScoringBatchSize must be at least 1.");
    }

    /// <summary>Class probabilities of <paramref name="count"/> normalised images, row-major [count × classes].</summary>
    internal void ScoreNormalized(float[] images, int count, float[] probs)
    {
        var a = Architecture;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = tensor(images, new long[] { images.Length / (a.Channels * a.ImageSize * a.ImageSize), a.Channels, a.ImageSize, a.ImageSize });
        if (input.shape[0] != count) input = input.narrow(0, 0, count);
        if (_device.type != DeviceType.CPU) input = input.to(_device);
        var p = Model.forward(input).softmax(1);
        if (_device.type != DeviceType.CPU) p = p.cpu();
        p.data<float>().CopyTo(probs.AsSpan(0, count * a.NumClasses));
    }
}

/// <summary>
/// The scorer of a <see cref="MulticlassPredictionTransformer{TModel}"/> over a ViT: ML.NET's own multiclass scorer for the
/// schema, annotations, <c>PredictionEngine</c> and saving, with cursors that read ahead
/// <see cref="ViTModelParameters.ScoringBatchSize"/> rows and run one forward for them. ML.NET's scorer hands the model one
/// row at a time; a batched forward is several times faster per image on a CPU.
/// </summary>
/// <remarks>
/// A cursor that needs <c>Score</c> or <c>PredictedLabel</c> opens two cursors on the input: one for the columns passed
/// through and a look-ahead cursor for the image column alone. Both run in the input's natural order; every row's id is
/// checked against the look-ahead's, and a row that does not match (an input whose order differs between cursors) is
/// scored alone. Shuffled cursors, and cursors that need neither score column, use ML.NET's row-by-row scorer unchanged.
/// Loading a saved model gives ML.NET's own scorer again (<c>Model.Load</c> builds the transformer itself); call
/// <see cref="ViTScoring.UseBatchScoring"/> on the loaded model to score it in batches.
/// </remarks>
internal sealed partial class ViTBatchScorer : RowToRowScorerBase
{
    internal const int DefaultBatchSize = 64;
    private const string RegistrationName = "ViTBatchScorer";

    private readonly MulticlassClassificationScorer _standard;
    private readonly ViTModelParameters _model;
    private readonly PredictedLabelScorerBase.BindingsImpl _bindings;

    internal ViTBatchScorer(IHostEnvironment env, MulticlassClassificationScorer standard, ViTModelParameters model)
        : base(env, standard.Source, RegistrationName, standard.Bindable)
    {
        _standard = standard;
        _model = model;
        _bindings = standard.Bindings;
    }

    /// <summary>Replaces the row-by-row scorer ML.NET gave <paramref name="transformer"/> by a batched one (idempotent).</summary>
    internal static MulticlassPredictionTransformer<ViTModelParameters> Attach(MulticlassPredictionTransformer<ViTModelParameters> transformer)
    {
        if (transformer.Scorer is MulticlassClassificationScorer standard)
            transformer.Scorer = new ViTBatchScorer(transformer.Host, standard, transformer.Model);
        return transformer;
    }

    public override DataViewSchema OutputSchema => _standard.OutputSchema;

    public override void SaveCore(ModelSaveContext ctx) => _standard.SaveCore(ctx);

    public override IDataTransform ApplyToDataCore(IHostEnvironment env, IDataView newSource) =>
        new ViTBatchScorer(env, (MulticlassClassificationScorer)_standard.ApplyToData(env, newSource), _model);

    public override BindingsBase GetBindings() => _bindings;

    // One batched cursor uses every torch thread; parallel row-by-row cursors would only compete for them.
    protected override bool WantParallelCursors(Func<int, bool> predicate) => false;

    protected override DataViewRowCursor GetRowCursorCore(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var predicate = RowCursorUtils.FromColumnsToPredicate(columnsNeeded, OutputSchema);
        if (rand is not null || _model.ScoringBatchSize <= 1 || !_bindings.AnyNewColumnsActive(predicate))
            return base.GetRowCursorCore(columnsNeeded, rand);
        return new BatchCursor(this, columnsNeeded);
    }

    public override DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var predicate = RowCursorUtils.FromColumnsToPredicate(columnsNeeded, OutputSchema);
        if (rand is not null || _model.ScoringBatchSize <= 1 || !_bindings.AnyNewColumnsActive(predicate))
            return base.GetRowCursorSet(columnsNeeded, n, rand);
        return new DataViewRowCursor[] { new BatchCursor(this, columnsNeeded) };
    }

    // Getters over the mapper's output row, as MulticlassClassificationScorer builds them (PredictedLabelScorerBase.GetGetters):
    // used by IRowToRowMapper (PredictionEngine) and the row-by-row cursors.
    protected override Delegate[] GetGetters(DataViewRow output, Func<int, bool> predicate)
    {
        var getters = new Delegate[_bindings.InfoCount];
        var scoreColumn = _bindings.RowMapper.OutputSchema[_bindings.ScoreColumnIndex];
        Delegate? scoreDelegate = null;
        if (predicate(0))
        {
            var mapperScore = output.GetGetter<VBuffer<float>>(scoreColumn);
            long cached = -1;
            VBuffer<float> score = default;
            void Ensure()
            {
                if (cached == output.Position) return;
                mapperScore(ref score);
                cached = output.Position;
            }
            ValueGetter<uint> label = (ref uint dst) => { Ensure(); dst = PredictedKey(score); };
            ValueGetter<VBuffer<float>> scoreGetter = (ref VBuffer<float> dst) => { Ensure(); score.CopyTo(ref dst); };
            getters[0] = label;
            scoreDelegate = scoreGetter;
        }
        for (int iinfo = 1; iinfo < getters.Length; iinfo++)
        {
            if (!predicate(iinfo)) continue;
            getters[iinfo] = iinfo - 1 == _bindings.ScoreColumnIndex && scoreDelegate is not null
                ? scoreDelegate
                : GetGetterFromRow(output, iinfo - 1);
        }
        return getters;
    }

    /// <summary>ML.NET's predicted key: 1 + the arg-max of the scores (first maximum), 0 when there is none.</summary>
    private static uint PredictedKey(in VBuffer<float> score)
    {
        int index = VectorUtils.ArgMax(in score);
        return index < 0 ? 0 : (uint)index + 1;
    }
}
