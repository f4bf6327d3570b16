using System.Formats.Tar;
using System.IO.Compression;
using System.Text;
using FluentAssertions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Files that are small on disk but declare sizes that would allocate gigabytes. Each is opened in a child process
/// (test/Microsoft.ML.Gohsp.FaultCheck) limited to 6 GiB of address space and 1 GiB of managed heap, so that a regression
/// cannot take the test host down: the child must refuse the file with an InvalidDataException naming the file and the field.
/// </summary>
public sealed class HostileFileTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gohsp-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static void ShouldBeRefused((int ExitCode, string Output) result, params string[] expected)
    {
        result.ExitCode.Should().Be(3, result.Output);
        result.Output.Should().StartWith("REFUSED InvalidDataException: ", result.Output);
        foreach (var e in expected) result.Output.Should().Contain(e);
    }

    [Fact]
    public void SafetensorsShapeLargerThanItsDataIsRefusedBeforeAllocating()
    {
        // 100,000 × 100,000 float32 = 40 GB declared, 16 bytes present
        var path = Safetensors("huge-shape.safetensors", """{"w":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,16]}}""", 16);
        ShouldBeRefused(FaultApp.Open("open-checkpoint", path), "'huge-shape.safetensors': tensor 'w'", "40,000,000,000 bytes, field shape", "data_offsets cover 16 bytes");
    }

    [Fact]
    public void SafetensorsOffsetsBeyondTheFileAreRefused()
    {
        var path = Safetensors("far-offsets.safetensors", """{"w":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}}""", 16);
        ShouldBeRefused(FaultApp.Open("open-checkpoint", path), "'far-offsets.safetensors': tensor 'w'", "outside the 16 data bytes of the file (field data_offsets)");
    }

    [Fact]
    public void PyTorchStorageLargerThanItsEntryIsRefused()
    {
        // 400,000,000 floats = 1.6 GB declared (the reader would allocate a byte[] of that size), 16 bytes present
        var path = TorchZip("huge-storage.pth", storageElements: 400_000_000, shape: [400_000_000], dataBytes: 16);
        ShouldBeRefused(FaultApp.Open("open-checkpoint", path), "'huge-storage.pth': storage '0'", "400,000,000 FloatStorage elements (field numel", "holds 16 bytes");
    }

    [Fact]
    public void PyTorchTensorLargerThanItsStorageIsRefused()
    {
        // a 4-element storage viewed as 100,000 × 100,000 (the reader would allocate zeros of that shape first)
        var path = TorchZip("huge-view.pth", storageElements: 4, shape: [100_000, 100_000], dataBytes: 16);
        ShouldBeRefused(FaultApp.Open("open-checkpoint", path), "'huge-view.pth': a tensor of size [100000, 100000] (field size)", "does not fit in storage '0'");
    }

    [Fact]
    public void PickleMemoBombIsRefused()
    {
        // 60 million MEMOIZE opcodes deflate to ~60 KB; unbounded, the scanner's memo would need gigabytes
        var pickle = new byte[60_000_004];
        pickle[0] = 0x80; pickle[1] = 4; pickle[2] = (byte)'}';
        pickle.AsSpan(3, 60_000_000).Fill(0x94);
        pickle[^1] = (byte)'.';
        var path = Path.Combine(_dir, "memo-bomb.pth");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        {
            using (var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.SmallestSize).Open()) s.Write(pickle);
        }
        new FileInfo(path).Length.Should().BeLessThan(1 << 20);
        ShouldBeRefused(FaultApp.Open("open-checkpoint", path), "'memo-bomb.pth': the pickle's memo holds more than 1,048,576 entries");
    }

    [Fact]
    public void ModelZipClaimingAHugeEmbeddingIsRefusedBeforeTheModelIsBuilt()
    {
        // a zip of the current format and assembly version (the child process loads the loader assembly by the name in the zip)
        var path = Path.Combine(_dir, "huge-embed.zip");
        var ml = new Microsoft.ML.MLContext(1);
        ml.Model.SaveAtomically(ml.Model.Load(ModelFormatTests.Fixture("vit-format1-dense.zip"), out var schema), schema, path);
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            var entry = zip.Entries.Single(e => e.FullName.EndsWith("TSModel", StringComparison.Ordinal));
            byte[] content;
            using (var s = entry.Open()) { using var ms = new MemoryStream(); s.CopyTo(ms); content = ms.ToArray(); }
            // the weight stream starts with the architecture: version, image size, patch, channels, EmbedDim, ...
            BitConverter.ToInt32(content, 16).Should().Be(32, "EmbedDim of the fixture");
            BitConverter.TryWriteBytes(content.AsSpan(16), 1 << 28).Should().BeTrue();
            string name = entry.FullName;
            entry.Delete();
            using var w = zip.CreateEntry(name).Open();
            w.Write(content);
        }
        var result = FaultApp.Open("open-model", path);
        result.ExitCode.Should().Be(3, result.Output);
        result.Output.Should().Contain("InvalidDataException").And.Contain("dim=268435456").And.Contain("bytes of weights, but only");
    }

    [Fact]
    public void TarHeaderDeclaringAHugeBatchIsRefusedBeforeAllocating()
    {
        // the header says 699,000 records (2.1 GB); 512 bytes follow
        long declared = 699_000L * 3073;
        var header = new byte[512];
        Encoding.ASCII.GetBytes("cifar-10-batches-bin/test_batch.bin").CopyTo(header, 0);
        Encoding.ASCII.GetBytes("0000644\0").CopyTo(header, 100);
        Encoding.ASCII.GetBytes("0000000\0").CopyTo(header, 108);
        Encoding.ASCII.GetBytes("0000000\0").CopyTo(header, 116);
        Encoding.ASCII.GetBytes(Convert.ToString(declared, 8).PadLeft(11, '0') + "\0").CopyTo(header, 124);
        Encoding.ASCII.GetBytes("00000000000\0").CopyTo(header, 136);
        header[156] = (byte)'0';
        Encoding.ASCII.GetBytes("ustar\0" + "00").CopyTo(header, 257);
        "        "u8.CopyTo(header.AsSpan(148));
        int sum = header.Sum(b => b);
        Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(header, 148);
        var path = Path.Combine(_dir, "cifar-10-binary.tar.gz");
        using (var gz = new GZipStream(File.Create(path), CompressionLevel.Fastest))
        {
            gz.Write(header);
            gz.Write(new byte[512]);
        }
        ShouldBeRefused(FaultApp.Open("open-cifar", path), "cifar-10-batches-bin/test_batch.bin", $"declares {declared:N0} bytes in its tar header (field size)");
    }

    private string Safetensors(string name, string header, int dataBytes)
    {
        var path = Path.Combine(_dir, name);
        var json = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)json.Length));
        fs.Write(json);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    /// <summary>A torch.save zip of {'w': tensor} whose storage '0' declares <paramref name="storageElements"/> floats.</summary>
    private string TorchZip(string name, int storageElements, int[] shape, int dataBytes)
    {
        var p = new MemoryStream();
        void B(params byte[] b) => p.Write(b);
        void Str(string s) { var u = Encoding.UTF8.GetBytes(s); B((byte)'X'); p.Write(BitConverter.GetBytes(u.Length)); p.Write(u); }
        void Int(int v) { B((byte)'J'); p.Write(BitConverter.GetBytes(v)); }
        void Global(string module, string n) => p.Write(Encoding.ASCII.GetBytes($"c{module}\n{n}\n"));
        B(0x80, 2, (byte)'}', (byte)'(');
        Str("w");
        Global("torch._utils", "_rebuild_tensor_v2");
        B((byte)'(', (byte)'(');
        Str("storage"); Global("torch", "FloatStorage"); Str("0"); Str("cpu"); Int(storageElements);
        B((byte)'t', (byte)'Q');
        Int(0);
        B((byte)'('); foreach (int d in shape) Int(d); B((byte)'t');
        B((byte)'('); long stride = 1; var strides = new int[shape.Length];
        for (int i = shape.Length - 1; i >= 0; i--) { strides[i] = (int)stride; stride *= shape[i]; }
        foreach (int s in strides) Int(s); B((byte)'t');
        B(0x89);
        Global("collections", "OrderedDict"); B((byte)')', (byte)'R');
        B((byte)'t', (byte)'R', (byte)'u', (byte)'.');
        var path = Path.Combine(_dir, name);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var s = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open()) s.Write(p.ToArray());
        using (var s = zip.CreateEntry("archive/data/0", CompressionLevel.NoCompression).Open()) s.Write(new byte[dataBytes]);
        return path;
    }
}
