using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using SkiaSharp;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Encoded image bytes (what <c>LoadRawImageBytes</c> gives, the input of ML.NET's ImageClassificationTrainer) as the
/// ViT's image column: decoded, converted to RGB and resized inside; saved, loaded and scored like the planar input.
/// </summary>
public class EncodedImageInputTests
{
    private static readonly Cifar10Dataset TrainSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 256);
    private static readonly Cifar10Dataset TestSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 8);

    /// <summary>
    /// A real CIFAR-10 image as PNG bytes: RGB, grayscale or RGBA (alpha 255), at 32×32 or scaled (bilinear, here, so that
    /// no SkiaSharp drawing API is involved: SkiaSharp 2.88 and 3.x, which ML.NET 5 and 6 bring, differ there) to
    /// <paramref name="size"/>.
    /// </summary>
    internal static byte[] Png(ReadOnlySpan<byte> planar, bool gray = false, bool rgba = false, int size = 32)
    {
        var rgb = Scale(planar, size);
        int n = size * size;
        using var bmp = new SKBitmap(new SKImageInfo(size, size, gray ? SKColorType.Gray8 : SKColorType.Rgba8888, rgba ? SKAlphaType.Unpremul : SKAlphaType.Opaque));
        var px = new byte[bmp.ByteCount];
        for (int i = 0; i < n; i++)
        {
            byte r = rgb[i], g = rgb[n + i], b = rgb[2 * n + i];
            if (gray) px[i] = (byte)((299 * r + 587 * g + 114 * b) / 1000);
            else { px[4 * i] = r; px[4 * i + 1] = g; px[4 * i + 2] = b; px[4 * i + 3] = 255; }
        }
        System.Runtime.InteropServices.Marshal.Copy(px, 0, bmp.GetPixels(), px.Length);
        using var data = bmp.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>A planar 3×32×32 image resampled (bilinear, pixel centres aligned) to 3×size×size.</summary>
    private static byte[] Scale(ReadOnlySpan<byte> planar, int size)
    {
        const int s = 32;
        if (size == s) return planar.ToArray();
        var dst = new byte[3 * size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                float sy = Math.Clamp((y + 0.5f) * s / size - 0.5f, 0, s - 1), sx = Math.Clamp((x + 0.5f) * s / size - 0.5f, 0, s - 1);
                int y0 = (int)sy, x0 = (int)sx, y1 = Math.Min(y0 + 1, s - 1), x1 = Math.Min(x0 + 1, s - 1);
                float fy = sy - y0, fx = sx - x0;
                for (int c = 0; c < 3; c++)
                {
                    int p = c * s * s;
                    float v = (1 - fy) * ((1 - fx) * planar[p + y0 * s + x0] + fx * planar[p + y0 * s + x1])
                            + fy * ((1 - fx) * planar[p + y1 * s + x0] + fx * planar[p + y1 * s + x1]);
                    dst[c * size * size + y * size + x] = (byte)Math.Round(v);
                }
            }
        return dst;
    }

    public sealed class BytesRow
    {
        public byte[] ImageBytes { get; set; }
        public string Label { get; set; }
    }

    private static float[] Decode(byte[] png)
    {
        var dst = new float[3 * 32 * 32];
        ImageColumn.CopyEncoded(new VBuffer<byte>(png.Length, png), dst, 32, "ImageBytes");
        return dst;
    }

    [Fact]
    public void RgbGrayscaleAndRgbaPngsDecodeToTheirRgbPixelsAndOtherSizesAreResized()
    {
        var img = TestSet.GetImage(0);
        var rgb = Decode(Png(img));
        rgb.Select(v => (int)v).Should().Equal(img.ToArray().Select(b => (int)b), "a 32×32 RGB PNG decodes to exactly the planar pixels it was written from");
        Decode(Png(img, rgba: true)).Should().Equal(rgb, "an opaque RGBA PNG gives the same RGB");
        var gray = Decode(Png(img, gray: true));
        const int plane = 32 * 32;
        gray.AsSpan(0, plane).ToArray().Should().Equal(gray.AsSpan(plane, plane).ToArray(), "grayscale is replicated into R, G and B");
        gray.AsSpan(0, plane).ToArray().Should().Equal(gray.AsSpan(2 * plane, plane).ToArray());
        gray.Distinct().Count().Should().BeGreaterThan(20, "a real image, not a constant");
        var resized = Decode(Png(img, size: 48));
        resized.Zip(rgb, (a, b) => Math.Abs(a - b)).Average().Should().BeLessThan(20, "a 48×48 copy resized back to 32×32 is close to the original")
            .And.BeGreaterThan(0, "but it was really resized");
    }

    [Fact]
    public void TrainedOnBytesSavesLoadsInAFreshContextAndAnotherProcessAndPredictsIdentically()
    {
        var ml = new MLContext(1);
        var set = TrainSet.Take(160);
        var rows = Enumerable.Range(0, set.Count).Select(i => new BytesRow
        {
            ImageBytes = Png(set.GetImage(i), gray: i % 7 == 3, rgba: i % 7 == 5, size: i % 5 == 0 ? 40 : 32),
            Label = set.GetClassName(i),
        }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        data.Schema["ImageBytes"].Type.Should().BeOfType<VectorDataViewType>().Which.ItemType.Should().Be(NumberDataViewType.Byte);
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 1;
        o.ImageColumnName = "ImageBytes";
        var model = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(data);
        model.LastTransformer.Model.InputKind.Should().Be(ImageInputKind.EncodedBytes);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(data));
        metrics.ConfusionMatrix.NumberOfClasses.Should().Be(10);

        var dir = Directory.CreateTempSubdirectory("gohsp-bytes-").FullName;
        var zip = Path.Combine(dir, "bytes.zip");
        ml.Model.SaveAtomically(model, data.Schema, zip);
        var fresh = new MLContext();
        var loaded = fresh.Model.Load(zip, out _);
        var before = ml.Model.CreatePredictionEngine<BytesRow, ScoreRow>(model);
        var after = fresh.Model.CreatePredictionEngine<BytesRow, ScoreRow>(loaded);
        var files = new List<string>();
        var expected = new List<float[]>();
        for (int i = 0; i < 4; i++)
        {
            var row = new BytesRow { ImageBytes = Png(TestSet.GetImage(i), gray: i == 1, rgba: i == 2, size: i == 3 ? 64 : 32), Label = "" };
            var a = before.Predict(row).Score;
            a.Sum().Should().BeApproximately(1f, 1e-4f);
            after.Predict(row).Score.Should().Equal(a);
            var file = Path.Combine(dir, $"test{i}.png");
            File.WriteAllBytes(file, row.ImageBytes);
            files.Add(file);
            expected.Add(a);
        }
        var otherProcess = NewProcess.ScoresOfFiles(zip, files);
        for (int i = 0; i < files.Count; i++) otherProcess[i].Should().Equal(expected[i]);
    }

    [Fact]
    public void BytesThatAreNotAnImageFailAtFitNamingTheColumnAndEmptyDataNamesTheLabel()
    {
        var ml = new MLContext(1);
        var rows = Enumerable.Range(0, 8).Select(i => new BytesRow
        {
            ImageBytes = i == 5 ? System.Text.Encoding.UTF8.GetBytes("not an image, a text file") : Png(TrainSet.GetImage(i)),
            Label = TrainSet.GetClassName(i),
        }).ToList();
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 1;
        o.ImageColumnName = "ImageBytes";
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(o));
        var fit = () => pipeline.Fit(ml.Data.LoadFromEnumerable(rows));
        fit.Should().Throw<InvalidOperationException>().WithMessage("*Image column 'ImageBytes'*row 5*do not decode as an image*");

        var empty = () => pipeline.Fit(ml.Data.LoadFromEnumerable(new List<BytesRow>()));
        empty.Should().Throw<Exception>().Where(e => e.Message.Contains("'Label'") || e.Message.Contains("'ImageBytes'"),
            "an empty image folder gives no rows, and the error names the column");
    }
}
