using Microsoft.ML.Data;
using Microsoft.ML.Internal.Utilities;
using Microsoft.ML.Numeric;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms.Image;
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
internal sealed class ViTBatchScorer : RowToRowScorerBase
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

    /// <summary>
    /// Reads ahead a batch of images on its own cursor, scores them in one forward, and serves the rows of its main cursor
    /// from that batch.
    /// </summary>
    private sealed class BatchCursor : DataViewRowCursor
    {
        private readonly ViTBatchScorer _parent;
        private readonly bool[] _active;
        private readonly DataViewRowCursor _input;
        private readonly DataViewRowCursor _lookahead;
        private readonly ValueGetter<DataViewRowId> _inputId, _lookaheadId;
        private readonly ImageReader _lookaheadImage, _inputImage;
        private readonly int _batchSize, _imageLength, _classes;
        private readonly float[] _images, _probs, _single;
        private readonly DataViewRowId[] _ids;
        private int _count, _offset;
        private bool _lookaheadDone;
        private long _position = -1;
        private long _singlePosition = -1;
        private bool _disposed;

        public BatchCursor(ViTBatchScorer parent, IEnumerable<DataViewSchema.Column> columnsNeeded)
        {
            _parent = parent;
            var bindings = parent._bindings;
            _active = bindings.GetActive(columnsNeeded);
            var feature = bindings.RowMapper.InputRoleMappedSchema.Feature!.Value;
            var source = parent.Source;
            var activeInput = bindings.GetActiveInput(columnsNeeded);
            var inputColumns = source.Schema.Where(c => activeInput[c.Index] || c.Index == feature.Index).ToArray();
            var a = parent._model.Architecture;
            _batchSize = parent._model.ScoringBatchSize;
            _imageLength = a.Channels * a.ImageSize * a.ImageSize;
            _classes = a.NumClasses;
            _images = new float[_batchSize * _imageLength];
            _probs = new float[_batchSize * _classes];
            _single = new float[_classes];
            _ids = new DataViewRowId[_batchSize];
            _input = source.GetRowCursor(inputColumns);
            try
            {
                _lookahead = source.GetRowCursor(new[] { feature });
                _inputId = _input.GetIdGetter();
                _lookaheadId = _lookahead.GetIdGetter();
                _inputImage = new ImageReader(_input, feature, a.ImageSize);
                _lookaheadImage = new ImageReader(_lookahead, feature, a.ImageSize);
            }
            catch
            {
                _input.Dispose();
                _lookahead?.Dispose();
                throw;
            }
        }

        public override DataViewSchema Schema => _parent.OutputSchema;
        public override long Position => _position;
        public override long Batch => 0;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _inputId;
        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override bool MoveNext()
        {
            if (_disposed || !_input.MoveNext())
            {
                Dispose();
                return false;
            }
            _position++;
            if (++_offset >= _count) ReadBatch();
            return true;
        }

        private void ReadBatch()
        {
            _offset = 0;
            _count = 0;
            while (!_lookaheadDone && _count < _batchSize)
            {
                if (!_lookahead.MoveNext()) { _lookaheadDone = true; break; }
                _lookaheadId(ref _ids[_count]);
                var x = _images.AsSpan(_count * _imageLength, _imageLength);
                _lookaheadImage.Read(x);
                _parent._model.Preprocessing.NormalizeInPlace(x, _parent._model.Architecture.Channels);
                _count++;
            }
            if (_count > 0) _parent._model.ScoreNormalized(_images, _count, _probs);
        }

        /// <summary>The current row's class probabilities: from the batch, or scored alone when the look-ahead row differs.</summary>
        private ReadOnlySpan<float> Scores()
        {
            if (_offset < _count)
            {
                DataViewRowId id = default;
                _inputId(ref id);
                if (id.Equals(_ids[_offset])) return _probs.AsSpan(_offset * _classes, _classes);
            }
            if (_singlePosition != _position)
            {
                var x = new float[_imageLength];
                _inputImage.Read(x);
                _parent._model.Preprocessing.NormalizeInPlace(x, _parent._model.Architecture.Channels);
                _parent._model.ScoreNormalized(x, 1, _single);
                _singlePosition = _position;
            }
            return _single;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!IsColumnActive(column))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor; request it when creating the cursor.");
            var bindings = _parent._bindings;
            int index = bindings.MapColumnIndex(out bool isSrc, column.Index);
            if (isSrc) return _input.GetGetter<TValue>(_input.Schema[index]);
            Delegate getter;
            if (index == 0)
            {
                ValueGetter<uint> label = (ref uint dst) =>
                {
                    EnsureActive();
                    int i = MathUtils.ArgMax(Scores());
                    dst = i < 0 ? 0 : (uint)i + 1;
                };
                getter = label;
            }
            else if (index - 1 == bindings.ScoreColumnIndex)
            {
                ValueGetter<VBuffer<float>> score = (ref VBuffer<float> dst) =>
                {
                    EnsureActive();
                    var s = Scores();
                    var editor = VBufferEditor.Create(ref dst, s.Length);
                    s.CopyTo(editor.Values);
                    dst = editor.Commit();
                };
                getter = score;
            }
            else throw new InvalidOperationException($"Column '{column.Name}' is not produced by the ViT scorer.");
            return getter as ValueGetter<TValue> ?? throw new InvalidOperationException(
                $"Invalid TValue in GetGetter for column '{column.Name}': {typeof(TValue)}.");
        }

        private void EnsureActive()
        {
            if (_disposed || _position < 0)
                throw new InvalidOperationException("The cursor is not on a row: call MoveNext first (and not after it returned false).");
        }

        protected override void Dispose(bool disposing)
        {
            if (_disposed) return;
            if (disposing)
            {
                _input.Dispose();
                _lookahead.Dispose();
            }
            _disposed = true;
            base.Dispose(disposing);
        }
    }

    /// <summary>Reads the image column of a cursor as planar floats 0…255: a float vector, an MLImage or encoded image bytes (resized).</summary>
    private sealed class ImageReader
    {
        private readonly DataViewRowCursor _cursor;
        private readonly ValueGetter<VBuffer<float>>? _vector;
        private readonly ValueGetter<VBuffer<byte>>? _encoded;
        private readonly ValueGetter<MLImage?>? _image;
        private readonly string _name;
        private readonly int _size;
        private VBuffer<float> _vectorValue;
        private VBuffer<byte> _encodedValue;
        private MLImage? _imageValue;

        public ImageReader(DataViewRowCursor cursor, DataViewSchema.Column column, int size)
        {
            _cursor = cursor;
            _name = column.Name;
            _size = size;
            if (column.Type is ImageDataViewType) _image = cursor.GetGetter<MLImage?>(column);
            else if (column.Type is VectorDataViewType { ItemType: var item } && item == NumberDataViewType.Byte) _encoded = cursor.GetGetter<VBuffer<byte>>(column);
            else _vector = cursor.GetGetter<VBuffer<float>>(column);
        }

        public void Read(Span<float> dst)
        {
            if (_vector is not null)
            {
                _vector(ref _vectorValue);
                ImageColumn.CopyVector(_vectorValue, dst, _name);
            }
            else if (_encoded is not null)
            {
                _encoded(ref _encodedValue);
                ImageColumn.CopyEncoded(_encodedValue, dst, _size, _name, _cursor.Position);
            }
            else
            {
                _image!(ref _imageValue);
                ImageColumn.CopyImage(_imageValue!, dst, _size, _name);
            }
        }
    }
}

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
