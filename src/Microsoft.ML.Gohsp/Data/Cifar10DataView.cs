// Exposes a Cifar10Dataset to ML.NET as an IDataView with Label, Image (MLImage) and/or Pixels columns.

using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Gohsp.Data;

public static partial class Cifar10
{
    /// <summary>
    /// Exposes a CIFAR-10 data set as a lazily-materialized <see cref="IDataView"/>.
    /// </summary>
    /// <param name="mlContext">The ML.NET context (used for argument checking and symmetry with other loaders).</param>
    /// <param name="data">The data set, e.g. from <see cref="Read"/>.</param>
    /// <param name="columns">Which image columns to produce in addition to <c>Label</c>.</param>
    /// <returns>
    /// A view with columns, in this order: <c>Label</c> (<see cref="TextDataViewType"/>, the class name; use
    /// <c>MapValueToKey("Label")</c> to train); <c>Image</c> (<see cref="ImageDataViewType"/> 32×32, a new
    /// <see cref="MLImage"/> in <see cref="MLPixelFormat.Bgra32"/> with alpha 255) when <see cref="Cifar10Columns.Image"/>
    /// is set; <c>Pixels</c> (vector of 3072 <see cref="float"/>, planar CHW, 0..255) when <see cref="Cifar10Columns.Pixels"/>
    /// is set. Values are produced on demand from <see cref="Cifar10Dataset.Pixels"/>; row count is known and
    /// cursors support shuffling.
    /// </returns>
    /// <remarks>
    /// Each call of the <c>Image</c> getter for a new row creates a new <see cref="MLImage"/> that the view does not
    /// dispose (downstream consumers may keep it); images that are no longer referenced are released by the GC.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="mlContext"/> or <paramref name="data"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="columns"/> has no known flag or unknown flags.</exception>
    public static IDataView ToDataView(MLContext mlContext, Cifar10Dataset data, Cifar10Columns columns = Cifar10Columns.Image)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentNullException.ThrowIfNull(data);
        const Cifar10Columns all = Cifar10Columns.Image | Cifar10Columns.Pixels;
        if (columns == 0 || (columns & ~all) != 0)
            throw new ArgumentOutOfRangeException(nameof(columns), columns, "Expected Image, Pixels, or Image | Pixels.");
        return new Cifar10DataView(data, columns);
    }

    /// <summary>
    /// Creates a 32×32 <see cref="MLImage"/> (<see cref="MLPixelFormat.Bgra32"/>, alpha 255) from 3072 planar RGB bytes.
    /// </summary>
    /// <param name="planarRgb">1024 red, 1024 green, 1024 blue bytes, each plane row-major 32×32 (e.g. <see cref="Cifar10Dataset.GetImage"/>).</param>
    /// <returns>A new image owned by the caller (dispose it when done).</returns>
    /// <exception cref="ArgumentException"><paramref name="planarRgb"/> is not 3072 bytes long.</exception>
    public static MLImage CreateImage(ReadOnlySpan<byte> planarRgb) =>
        CreateImage(planarRgb, new byte[ImageSize * ImageSize * 4]);

    /// <summary>Fills <paramref name="bgra"/> (32×32×4 bytes, reused by a cursor) from planar RGB and wraps it in an image.</summary>
    internal static MLImage CreateImage(ReadOnlySpan<byte> planarRgb, byte[] bgra)
    {
        if (planarRgb.Length != ImageBytes)
            throw new ArgumentException($"Expected {ImageBytes} planar RGB bytes, got {planarRgb.Length}.", nameof(planarRgb));
        const int plane = ImageSize * ImageSize;
        ReadOnlySpan<byte> r = planarRgb[..plane], g = planarRgb.Slice(plane, plane), b = planarRgb.Slice(2 * plane, plane);
        for (int p = 0, o = 0; p < plane; p++, o += 4)
        {
            bgra[o] = b[p];
            bgra[o + 1] = g[p];
            bgra[o + 2] = r[p];
            bgra[o + 3] = 255;
        }
        return MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, bgra);
    }
}

/// <summary>Custom <see cref="IDataView"/> over the raw CIFAR-10 bytes of a <see cref="Cifar10Dataset"/>.</summary>
internal sealed class Cifar10DataView : IDataView
{
    private readonly Cifar10Dataset _data;
    private readonly ReadOnlyMemory<char>[] _classNames;

    internal readonly int LabelCol, ImageCol = -1, PixelsCol = -1;

    public Cifar10DataView(Cifar10Dataset data, Cifar10Columns columns)
    {
        _data = data;
        _classNames = data.ClassNames.Select(n => n.AsMemory()).ToArray();
        var builder = new DataViewSchema.Builder();
        builder.AddColumn("Label", TextDataViewType.Instance);
        int next = 1;
        LabelCol = 0;
        if (columns.HasFlag(Cifar10Columns.Image))
        {
            builder.AddColumn("Image", new ImageDataViewType(Cifar10.ImageSize, Cifar10.ImageSize));
            ImageCol = next++;
        }
        if (columns.HasFlag(Cifar10Columns.Pixels))
        {
            builder.AddColumn("Pixels", new VectorDataViewType(NumberDataViewType.Single, Cifar10.ImageBytes));
            PixelsCol = next++;
        }
        Schema = builder.ToSchema();
    }

    public bool CanShuffle => true;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _data.Count;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var active = new bool[Schema.Count];
        foreach (var c in columnsNeeded)
            active[c.Index] = true;
        int[]? order = null;
        if (rand is not null)
        {
            order = new int[_data.Count];
            for (int i = 0; i < order.Length; i++)
                order[i] = i;
            for (int i = order.Length - 1; i > 0; i--)
            {
                int j = rand.Next(i + 1);
                (order[i], order[j]) = (order[j], order[i]);
            }
        }
        return new Cursor(this, active, order);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly Cifar10DataView _parent;
        private readonly bool[] _active;
        private readonly int[]? _order;
        private long _position = -1;
        private int _row = -1;
        private bool _disposed;

        // Per-cursor image cache so repeated Image getter calls on the same row return the same instance.
        private MLImage? _image;
        private long _imagePosition = -1;
        private readonly byte[] _bgra = new byte[Cifar10.ImageSize * Cifar10.ImageSize * 4];

        public Cursor(Cifar10DataView parent, bool[] active, int[]? order)
        {
            _parent = parent;
            _active = active;
            _order = order;
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => 0;

        public override bool MoveNext()
        {
            if (_disposed)
                return false;
            if (_position + 1 < _parent._data.Count)
            {
                _position++;
                _row = _order is null ? (int)_position : _order[_position];
                return true;
            }
            _position = -1;
            _row = -1;
            _disposed = true;
            return false;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId value) =>
        {
            EnsureRow();
            value = new DataViewRowId((ulong)_row, 0);
        };

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < 0 || column.Index >= _active.Length || !_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");

            Delegate getter;
            if (column.Index == _parent.LabelCol)
                getter = (ValueGetter<ReadOnlyMemory<char>>)GetLabel;
            else if (column.Index == _parent.ImageCol)
                getter = (ValueGetter<MLImage>)GetImage;
            else if (column.Index == _parent.PixelsCol)
                getter = (ValueGetter<VBuffer<float>>)GetPixels;
            else
                throw new ArgumentOutOfRangeException(nameof(column), column.Name, "Unknown column.");

            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException(
                    $"Invalid TValue '{typeof(TValue)}' for column '{column.Name}' of type {column.Type}.");
        }

        private void EnsureRow()
        {
            if (_row < 0)
                throw new InvalidOperationException("The cursor is not positioned on a row; call MoveNext first.");
        }

        private void GetLabel(ref ReadOnlyMemory<char> value)
        {
            EnsureRow();
            value = _parent._classNames[_parent._data.Labels[_row]];
        }

        private void GetImage(ref MLImage value)
        {
            EnsureRow();
            if (_imagePosition != _position || _image is null)
            {
                ReadOnlySpan<byte> planar = _parent._data.GetImage(_row);
                _image = Cifar10.CreateImage(planar, _bgra);
                _imagePosition = _position;
            }
            value = _image;
        }

        private void GetPixels(ref VBuffer<float> value)
        {
            EnsureRow();
            ReadOnlySpan<byte> src = _parent._data.GetImage(_row);
            var editor = VBufferEditor.Create(ref value, Cifar10.ImageBytes);
            System.Numerics.Tensors.TensorPrimitives.ConvertTruncating<byte, float>(src, editor.Values); // exact: 0..255
            value = editor.Commit();
        }

        protected override void Dispose(bool disposing)
        {
            if (_disposed)
                return;
            _disposed = true;
            _position = -1;
            _row = -1;
            base.Dispose(disposing);
        }
    }
}
