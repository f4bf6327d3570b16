using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>Bad input is rejected with a clear message naming the column/option, before any training.</summary>
public class BadInputTests
{
    private sealed class VecRow
    {
        [VectorType(3 * 32 * 32)] public float[] Pixels { get; set; }
        public string Label { get; set; }
    }

    private sealed class GrayRow
    {
        [VectorType(32 * 32)] public float[] Pixels { get; set; }
        public string Label { get; set; }
    }

    /// <summary>SchemaShape.Create is internal to ML.NET; estimators receive shapes from EstimatorChain.</summary>
    private static SchemaShape Shape(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)!
            .Invoke(null, new object[] { schema })!;

    private static ViTClassificationTrainer.Options Opts(Action<ViTClassificationTrainer.Options> change = null)
    {
        var o = TrainedModelFixture.SmallOptions();
        o.Epochs = 1;
        o.ImageColumnName = "Pixels";
        change?.Invoke(o);
        return o;
    }

    private static IDataView Rows(MLContext ml, int n, float value = 100f)
        => ml.Data.LoadFromEnumerable(Enumerable.Range(0, n).Select(i => new VecRow
        {
            Pixels = Enumerable.Repeat(value, 3072).ToArray(),
            Label = (i % 2).ToString(),
        }));

    private static Func<ITransformer> Fit(MLContext ml, IDataView data, ViTClassificationTrainer.Options o)
        => () => ml.Transforms.Conversion.MapValueToKey("Label").Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(data);

    [Fact]
    public void GohspRejectsAnEmptyCalibrationSetAndAnImageColumnOfTheWrongSize()
    {
        var ml = new MLContext(1);
        var rows = Rows(ml, 8);
        var dense = Fit(ml, rows, Opts(o => o.BatchSize = 8))();
        var gohsp = ml.Transforms.GohspPrune(0.4, dense);

        var empty = dense.Transform(ml.Data.LoadFromEnumerable(Array.Empty<VecRow>()));
        gohsp.Invoking(e => e.Fit(empty)).Should().Throw<ArgumentException>().WithMessage("*no labelled rows*");

        var gray = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(
            Enumerable.Range(0, 4).Select(i => new GrayRow { Pixels = new float[32 * 32], Label = (i % 2).ToString() })));
        var grayData = gray.Transform(ml.Data.LoadFromEnumerable(
            Enumerable.Range(0, 4).Select(i => new GrayRow { Pixels = new float[32 * 32], Label = (i % 2).ToString() })));
        // (a SchemaShape carries no vector sizes, so the size is checked when Fit sees the data)
        gohsp.Invoking(e => e.Fit(grayData)).Should().Throw<ArgumentException>().WithMessage("*Pixels*vector size 1024*grayscale*");
    }

    [Fact]
    public void MissingImageColumn()
    {
        var ml = new MLContext(1);
        Fit(ml, Rows(ml, 4), Opts(o => o.ImageColumnName = "Picture")).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage("*Image column 'Picture' was not found*");
    }

    [Fact]
    public void NonKeyLabelIsRejectedAtGetOutputSchema()
    {
        var ml = new MLContext(1);
        var trainer = ml.MulticlassClassification.Trainers.ViTClassification(Opts());
        var act = () => trainer.GetOutputSchema(Shape(Rows(ml, 4).Schema));
        act.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Label column 'Label'*expected a key type*MapValueToKey*");
        var viaInterface = () => ((IEstimator<ITransformer>)trainer).GetOutputSchema(Shape(Rows(ml, 4).Schema));
        viaInterface.Should().Throw<ArgumentOutOfRangeException>().WithMessage("*key type*");
    }

    [Fact]
    public void WrongVectorSizeAndGrayscale()
    {
        var ml = new MLContext(1);
        var gray = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 4).Select(i => new GrayRow { Pixels = new float[1024], Label = (i % 2).ToString() }));
        Fit(ml, gray, Opts()).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage("*'Pixels' has vector size 1024; expected 3×32×32 = 3072*grayscale*");
        var o = Opts(o => o.ImageSize = 64);
        Fit(ml, Rows(ml, 4), o).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*vector size 3072; expected 3×64×64 = 12288*");
    }

    [Fact]
    public void EmptyData()
    {
        var ml = new MLContext(1);
        var empty = ml.Data.LoadFromEnumerable(new List<VecRow>());
        var o = Opts();
        var act = () => ml.Transforms.Conversion.MapValueToKey("Label", keyData: ml.Transforms.SelectColumns("Label").Fit(Rows(ml, 4)).Transform(Rows(ml, 4)))
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(o)).Fit(empty);
        act.Should().Throw<ArgumentException>().WithMessage("*no rows*");
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void NonFinitePixels(float bad)
    {
        var ml = new MLContext(1);
        Fit(ml, Rows(ml, 4, bad), Opts()).Should().Throw<InvalidOperationException>()
            .WithMessage("*'Pixels' has a non-finite pixel value*row 0*");
    }

    [Fact]
    public void InvalidOptionsAreRejectedWhenTheTrainerIsCreated()
    {
        var ml = new MLContext(1);
        var cat = ml.MulticlassClassification.Trainers;
        ((Action)(() => cat.ViTClassification(Opts(o => o.Epochs = 0)))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*Epochs must be positive*");
        ((Action)(() => cat.ViTClassification(Opts(o => o.BatchSize = -1)))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*BatchSize must be positive*");
        ((Action)(() => cat.ViTClassification(Opts(o => o.ImageSize = 30)))).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*ImageSize (30) must be divisible by the patch size (4)*");
        ((Action)(() => cat.ViTClassification(Opts(o => { o.Architecture = null; o.ArchitecturePreset = "nope"; })))).Should().Throw<ArgumentException>().WithMessage("*Unknown architecture preset 'nope'*");
        ((Action)(() => cat.ViTClassification(Opts(o => o.Mean = new[] { 0.5f })))).Should().Throw<ArgumentException>().WithMessage("*Mean must have one value per channel (3)*");
    }

    [Fact]
    public void CorruptedOrTruncatedModelZipIsRejected()
    {
        var ml = new MLContext(1);
        var data = Rows(ml, 8);
        var model = Fit(ml, data, Opts())();
        var dir = Directory.CreateTempSubdirectory("gohsp-bad-").FullName;
        var path = Path.Combine(dir, "m.zip");
        ml.Model.SaveAtomically(model, data.Schema, path);
        var bytes = File.ReadAllBytes(path);

        var truncated = Path.Combine(dir, "truncated.zip");
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        // the zip's central directory is at its end: cut in half, it is not a zip any more
        ((Action)(() => new MLContext().Model.Load(truncated, out _))).Should().Throw<FormatException>()
            .WithMessage("Failed to open a zip archive*").WithInnerException<InvalidDataException>();

        // a valid zip whose ViT weight entry is damaged: our loader names the problem
        var damaged = Path.Combine(dir, "damaged.zip");
        File.Copy(path, damaged);
        using (var zip = System.IO.Compression.ZipFile.Open(damaged, System.IO.Compression.ZipArchiveMode.Update))
        {
            var entry = zip.Entries.Single(e => e.FullName.EndsWith("TSModel", StringComparison.Ordinal));
            var name = entry.FullName;
            byte[] content;
            using (var s = entry.Open()) { using var ms = new MemoryStream(); s.CopyTo(ms); content = ms.ToArray(); }
            entry.Delete();
            var e2 = zip.CreateEntry(name);
            using var w = e2.Open();
            w.Write(content, 0, content.Length / 3);
        }
        ((Action)(() => new MLContext().Model.Load(damaged, out _))).Should().Throw<Exception>()
            .Where(e => e.ToString().Contains("ViT") && (e.ToString().Contains("corrupted") || e.ToString().Contains("truncated")));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void SaveAtomicallyKeepsThePreviousFileWhenSavingFails()
    {
        var ml = new MLContext(1);
        var dir = Directory.CreateTempSubdirectory("gohsp-atomic-").FullName;
        var path = Path.Combine(dir, "model.zip");
        File.WriteAllText(path, "previous");
        var act = () => AtomicFile.Write(path, s => { s.WriteByte(1); throw new IOException("disk full"); });
        act.Should().Throw<IOException>();
        File.ReadAllText(path).Should().Be("previous");
        Directory.GetFiles(dir).Should().ContainSingle();
        Directory.Delete(dir, true);
    }
}
