using Microsoft.ML.Data;
using Microsoft.ML.Internal.Utilities;

namespace Microsoft.ML.Gohsp;

internal sealed partial class ViTBatchScorer
{
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
}
