using System.IO.Compression;
using System.Text.Json;
using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Model zip versioning: zips of format 1 (Fixtures/format, written before format 2) keep loading and scoring as when they
/// were saved; a zip from a newer format is refused with a message naming both formats; a saved zip carries the current format.
/// </summary>
public class ModelFormatTests
{
    public static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", "format", name);

    [Theory]
    [InlineData("vit-format1-dense.zip")]
    [InlineData("vit-format1-masked.zip")]
    public void Format1ZipsLoadAndScoreAsWhenTheyWereSaved(string zip)
    {
        var expected = JsonSerializer.Deserialize<Dictionary<string, float[][]>>(File.ReadAllText(Fixture("expected-scores.json")))![zip];
        var ml = new MLContext(1);
        var model = ml.Model.Load(Fixture(zip), out _);
        var test = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, expected.Length);
        var engine = ml.Model.CreatePredictionEngine<ImageRow, ScoreRow>(model);
        for (int i = 0; i < expected.Length; i++)
            engine.Predict(new ImageRow { Image = Cifar10.CreateImage(test.GetImage(i)) }).Score.Should().Equal(expected[i], (a, b) => Math.Abs(a - b) <= 1e-6f);
        var vit = ViTLocator.FindViT(model)!.Model;
        if (zip.Contains("masked", StringComparison.Ordinal))
        {
            vit.Model.KeptHeads.Should().BeEquivalentTo(new[] { new[] { 1 }, new[] { 0, 1 } }, o => o.WithStrictOrdering());
            vit.PruningReport.Should().NotBeNull();
        }
        else vit.Model.KeptHeads.Should().BeNull();
    }

    [Fact]
    public void SavedZipsCarryTheCurrentFormat()
    {
        var ml = new MLContext(1);
        var model = ml.Model.Load(Fixture("vit-format1-dense.zip"), out var schema);
        var path = Path.Combine(Directory.CreateTempSubdirectory("gohsp-format-").FullName, "m.zip");
        ml.Model.SaveAtomically(model, schema, path);
        VersionOf(path).Should().Be(0x00010000u | (uint)ViTModelParameters.FormatVersion);
        ViTModelParameters.FormatVersion.Should().Be(3);
        VersionOf(Fixture("vit-format1-dense.zip")).Should().Be(0x00010001u);
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }

    [Fact]
    public void ZipFromANewerFormatNamesBothFormats()
    {
        var path = Path.Combine(Directory.CreateTempSubdirectory("gohsp-format-").FullName, "newer.zip");
        File.Copy(Fixture("vit-format1-dense.zip"), path);
        PatchVersion(path, 0x00010063);
        var act = () => new MLContext().Model.Load(path, out _);
        act.Should().Throw<Exception>().Where(e => Flatten(e).Any(x => x is InvalidDataException
            && x.Message.StartsWith("This ViT model was written by a newer Microsoft.ML.Gohsp (format 99); this is format 3.", StringComparison.Ordinal)));
        Directory.Delete(Path.GetDirectoryName(path)!, true);
    }

    private static IEnumerable<Exception> Flatten(Exception e)
    {
        for (var x = e; x is not null; x = x.InnerException) yield return x;
    }

    /// <summary>The ML.NET model header of the ViT entry: ModelSignature at 0x40, ModelVerWritten at 0x48, ModelVerReadable at 0x4C.</summary>
    private static ZipArchiveEntry ViTHeader(ZipArchive zip) => zip.Entries.Single(e =>
    {
        if (!e.Name.Equals("Model.key", StringComparison.Ordinal)) return false;
        using var s = e.Open();
        var head = new byte[0x50];
        return s.ReadAtLeast(head, head.Length, false) == head.Length && System.Text.Encoding.ASCII.GetString(head, 0x40, 8) == "GOHSPVIT";
    });

    private static uint VersionOf(string path)
    {
        using var zip = ZipFile.OpenRead(path);
        using var s = ViTHeader(zip).Open();
        var head = new byte[0x50];
        s.ReadExactly(head);
        return BitConverter.ToUInt32(head, 0x48);
    }

    private static void PatchVersion(string path, uint version)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Update);
        var entry = ViTHeader(zip);
        byte[] content;
        using (var s = entry.Open()) { using var ms = new MemoryStream(); s.CopyTo(ms); content = ms.ToArray(); }
        BitConverter.TryWriteBytes(content.AsSpan(0x48), version);
        BitConverter.TryWriteBytes(content.AsSpan(0x4C), version);
        string name = entry.FullName;
        entry.Delete();
        using var w = zip.CreateEntry(name).Open();
        w.Write(content);
    }
}
