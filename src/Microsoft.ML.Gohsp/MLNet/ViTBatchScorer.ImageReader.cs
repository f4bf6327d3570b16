using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Gohsp;

internal sealed partial class ViTBatchScorer
{
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
