using System.Collections;
using System.IO.Compression;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>File format of a pretrained checkpoint.</summary>
public enum CheckpointFormat
{
    /// <summary><c>.safetensors</c>: a JSON header plus raw tensor bytes; no code, the recommended format.</summary>
    Safetensors = 0,
    /// <summary>A PyTorch <c>torch.save</c> zip (<c>.pth</c>, <c>.pt</c>, <c>.bin</c>): a pickle, loaded behind an allow-list.</summary>
    PyTorch = 1,
}

/// <summary>
/// Reads a state dict (name → float32 CPU tensor) from a <c>.safetensors</c> file or a PyTorch <c>torch.save</c> zip, using
/// TorchSharp.PyBridge for both formats. A PyTorch file is scanned with <see cref="PickleScanner"/> first and refused
/// when its pickle references anything but tensors and plain containers; the scan and the load read the same open stream.
/// </summary>
internal static class CheckpointReader
{
    /// <summary>Reads <paramref name="path"/>; the caller owns (and disposes) the returned tensors.</summary>
    public static Dictionary<string, Tensor> Read(string path, out CheckpointFormat format)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Pretrained checkpoint '{path}' was not found.", path);
        string name = Path.GetFileName(path);
        using var stream = File.OpenRead(path);
        var head = new byte[9];
        int n = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        stream.Position = 0;
        Dictionary<string, Tensor> raw;
        if (n >= 4 && head[0] == 0x50 && head[1] == 0x4b && head[2] == 0x03 && head[3] == 0x04)
        {
            format = CheckpointFormat.PyTorch;
            raw = ReadPyTorchZip(stream, name);
        }
        else if (n == 9 && head[8] == (byte)'{' && BitConverter.ToUInt64(head, 0) < (ulong)stream.Length)
        {
            format = CheckpointFormat.Safetensors;
            raw = ReadSafetensors(stream, name);
        }
        else
        {
            throw RefuseOther(stream, name);
        }
        return ToFloat32(raw);
    }

    /// <summary>Largest .safetensors JSON header accepted (a ViT-Huge header is about 60 KB).</summary>
    private const long MaxSafetensorsHeader = 100L << 20;

    /// <summary>Largest data.pkl accepted (a state dict's pickle is a few hundred KB).</summary>
    private const long MaxPickleBytes = 256L << 20;

    private static Dictionary<string, Tensor> ReadSafetensors(Stream stream, string name)
    {
        CheckSafetensorsHeader(stream, name);
        try
        {
            return Safetensors.LoadStateDict(stream, leaveOpen: true);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new InvalidDataException($"'{name}' looks like a .safetensors file but could not be read: {e.Message}", e);
        }
    }

    private static Dictionary<string, Tensor> ReadPyTorchZip(Stream stream, string name)
    {
        try
        {
            using (var zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true))
            {
                // PyBridge unpickles the first entry whose name ends with data.pkl: scan every such entry.
                var pickles = zip.Entries.Where(e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal)).ToList();
                if (pickles.Count == 0) throw new InvalidDataException($"'{name}' is a zip file but not a PyTorch checkpoint (no data.pkl entry).");
                foreach (var entry in pickles)
                {
                    if (entry.Length > MaxPickleBytes) throw new InvalidDataException($"'{name}': the pickle {entry.FullName} is implausibly large ({entry.Length:N0} bytes).");
                    var pickle = ReadBounded(entry, MaxPickleBytes, name);
                    var scan = PickleScanner.Scan(pickle, name);
                    CheckStorages(zip, entry, scan, name);
                }
            }
        }
        catch (Exception e) when (e is not (OutOfMemoryException or InvalidDataException or UnsafePickleException))
        {
            throw new InvalidDataException($"'{name}' is not a readable PyTorch checkpoint: {e.Message}", e);
        }

        stream.Position = 0;
        Hashtable table;
        try
        {
            table = PyTorchUnpickler.UnpickleStateDict(stream, leaveOpen: true);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            string why = e.GetBaseException().Message;
            if (why.Contains("out of bounds for storage", StringComparison.Ordinal))
                throw new InvalidDataException(
                    $"'{name}' stores tensors as views into a shared storage (a tensor at a storage offset), which the PyTorch reader " +
                    "(TorchSharp.PyBridge) does not support. Re-save with separate tensors: torch.save({k: v.clone() for k, v in " +
                    "state_dict.items()}, path), or convert to .safetensors (which has no shared storages).", e);
            int cut = why.IndexOf('\n');
            throw new InvalidDataException(
                $"'{name}' could not be unpickled as a state dict ({(cut > 0 ? why[..cut] : why)}). Save only the weights: " +
                "torch.save(model.state_dict(), path), or use .safetensors.", e);
        }
        return ToStateDict(table, name);
    }

    /// <summary>Reads a zip entry, refusing more than <paramref name="max"/> bytes whatever its header declares.</summary>
    private static byte[] ReadBounded(ZipArchiveEntry entry, long max, string name)
    {
        using var es = entry.Open();
        using var ms = new MemoryStream();
        var buffer = new byte[1 << 16];
        int n;
        while ((n = es.Read(buffer)) > 0)
        {
            if (ms.Length + n > max) throw new InvalidDataException($"'{name}': the pickle {entry.FullName} inflates to more than {max:N0} bytes.");
            ms.Write(buffer, 0, n);
        }
        return ms.ToArray();
    }

    /// <summary>
    /// Every storage the pickle declares must fit in its data entry (element count × element size ≤ the entry's bytes), and every
    /// tensor rebuilt over a storage must lie inside it, before the unpickler allocates anything. The bytes of a compressed entry
    /// are counted by inflating it (up to what the storage needs), so a header that lies about the size does not help.
    /// </summary>
    private static void CheckStorages(ZipArchive zip, ZipArchiveEntry pickle, PickleScanner.Result scan, string name)
    {
        string prefix = pickle.FullName[..^"data.pkl".Length];
        foreach (var s in scan.Storages.DistinctBy(s => s.Key))
        {
            int size = ElementSize(s.Type) ?? throw new InvalidDataException($"'{name}': storage '{s.Key}' has the unknown type {s.Type}.");
            var entry = zip.GetEntry(prefix + "data/" + s.Key) ?? zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("data/" + s.Key, StringComparison.Ordinal))
                ?? throw new InvalidDataException($"'{name}': storage '{s.Key}' has no data/{s.Key} entry in the archive.");
            long needed = s.Elements > long.MaxValue / size ? long.MaxValue : s.Elements * size;
            long present = BytesPresent(entry, needed);
            if (needed > present)
                throw new InvalidDataException(
                    $"'{name}': storage '{s.Key}' declares {s.Elements:N0} {s.Type} elements (field numel, {needed:N0} bytes), but its entry " +
                    $"{entry.FullName} holds {present:N0} bytes.");
            if (needed > int.MaxValue)
                throw new InvalidDataException($"'{name}': storage '{s.Key}' has {needed:N0} bytes; storages over 2 GB are not supported by the PyTorch reader. Use .safetensors.");
        }
        foreach (var t in scan.Tensors)
        {
            long elements = 1, last = t.Offset;
            for (int d = 0; d < t.Shape.Length; d++)
            {
                if (t.Shape[d] < 0 || t.Stride[d] < 0)
                    throw new InvalidDataException($"'{name}': a tensor over storage '{t.Storage.Key}' has a negative size or stride (field size [{string.Join(", ", t.Shape)}]).");
                elements = t.Shape[d] == 0 || elements <= long.MaxValue / Math.Max(1, t.Shape[d]) ? elements * t.Shape[d] : long.MaxValue;
                if (t.Shape[d] > 0) last = t.Stride[d] > 0 && t.Shape[d] - 1 > (long.MaxValue - last) / t.Stride[d] ? long.MaxValue : last + (t.Shape[d] - 1) * t.Stride[d];
            }
            if (elements > 0 && (t.Offset < 0 || last >= t.Storage.Elements || elements > t.Storage.Elements))
                throw new InvalidDataException(
                    $"'{name}': a tensor of size [{string.Join(", ", t.Shape)}] (field size) at offset {t.Offset} does not fit in storage '{t.Storage.Key}' " +
                    $"of {t.Storage.Elements:N0} elements.");
        }
    }

    /// <summary>The bytes an entry holds, counted up to <paramref name="needed"/>: a stored entry's size, or what a compressed one inflates to.</summary>
    private static long BytesPresent(ZipArchiveEntry entry, long needed)
    {
        if (entry.CompressedLength == entry.Length) return entry.Length; // stored, as torch.save writes it
        using var es = entry.Open();
        var buffer = new byte[1 << 16];
        long total = 0;
        int n;
        while (total <= needed && (n = es.Read(buffer)) > 0) total += n;
        return total;
    }

    private static int? ElementSize(string storageType) => storageType switch
    {
        "DoubleStorage" or "LongStorage" => 8,
        "FloatStorage" or "IntStorage" => 4,
        "HalfStorage" or "BFloat16Storage" or "ShortStorage" => 2,
        "CharStorage" or "ByteStorage" or "BoolStorage" => 1,
        _ => null,
    };

    /// <summary>
    /// Checks a .safetensors header before the reader allocates any tensor: a JSON header no longer than the file, and for every
    /// tensor a known dtype, non-negative shape and data_offsets inside the data section whose length equals the shape's byte
    /// count. A violation names the tensor and the field.
    /// </summary>
    private static void CheckSafetensorsHeader(Stream stream, string name)
    {
        long start = stream.Position;
        var lengthBytes = new byte[8];
        stream.ReadExactly(lengthBytes);
        ulong headerLength = BitConverter.ToUInt64(lengthBytes);
        long fileLeft = stream.Length - stream.Position;
        if (headerLength > (ulong)Math.Min(fileLeft, MaxSafetensorsHeader))
            throw new InvalidDataException($"'{name}': the .safetensors header length field says {headerLength:N0} bytes, but the file has {fileLeft:N0} bytes after it (at most {MaxSafetensorsHeader:N0} accepted).");
        var json = new byte[headerLength];
        stream.ReadExactly(json);
        long dataLength = stream.Length - stream.Position;
        stream.Position = start;
        System.Text.Json.JsonDocument doc;
        try { doc = System.Text.Json.JsonDocument.Parse(json); }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"'{name}': the .safetensors header is not valid JSON: {e.Message}", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object)
                throw new InvalidDataException($"'{name}': the .safetensors header is not a JSON object.");
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__") continue;
                var t = p.Value;
                string where = $"'{name}': tensor '{p.Name}'";
                if (t.ValueKind != System.Text.Json.JsonValueKind.Object
                    || !t.TryGetProperty("dtype", out var dtype) || dtype.ValueKind != System.Text.Json.JsonValueKind.String
                    || !t.TryGetProperty("shape", out var shape) || shape.ValueKind != System.Text.Json.JsonValueKind.Array
                    || !t.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != System.Text.Json.JsonValueKind.Array || offsets.GetArrayLength() != 2)
                    throw new InvalidDataException($"{where} lacks dtype, shape or data_offsets [begin, end].");
                int size = dtype.GetString() switch
                {
                    "F64" or "I64" => 8,
                    "F32" or "I32" => 4,
                    "F16" or "BF16" or "I16" => 2,
                    "I8" or "U8" or "BOOL" => 1,
                    var other => throw new InvalidDataException($"{where} has the unsupported dtype '{other}' (field dtype)."),
                };
                long elements = 1;
                foreach (var d in shape.EnumerateArray())
                {
                    if (!d.TryGetInt64(out long v) || v < 0)
                        throw new InvalidDataException($"{where} has an invalid dimension {d} (field shape).");
                    elements = v == 0 || elements <= long.MaxValue / v ? elements * v : long.MaxValue;
                }
                if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin || end > dataLength)
                    throw new InvalidDataException($"{where} has data_offsets [{offsets[0]}, {offsets[1]}] outside the {dataLength:N0} data bytes of the file (field data_offsets).");
                long needed = elements > long.MaxValue / size ? long.MaxValue : elements * size;
                if (needed != end - begin)
                    throw new InvalidDataException(
                        $"{where} has shape [{string.Join(", ", shape.EnumerateArray())}] of {dtype.GetString()} ({needed:N0} bytes, field shape), " +
                        $"but its data_offsets cover {end - begin:N0} bytes.");
            }
        }
    }

    /// <summary>A state dict, or a training checkpoint that holds one under "state_dict", "model" or "module".</summary>
    private static Dictionary<string, Tensor> ToStateDict(IDictionary table, string name)
    {
        if (!table.Values.OfType<Tensor>().Any())
            foreach (var key in new[] { "state_dict", "model", "module" })
                if (table[key] is IDictionary inner && inner.Values.OfType<Tensor>().Any()) return ToStateDict(inner, name);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in table)
            if (e.Key is string k && e.Value is Tensor t) result[k] = t;
        if (result.Count == 0)
            throw new InvalidDataException($"'{name}' holds no tensors: expected a state dict (torch.save(model.state_dict(), path)).");
        return result;
    }

    /// <summary>Not a zip nor safetensors: the legacy torch.save format (or another pickle). Scan it so a hostile pickle is named, then refuse.</summary>
    private static InvalidDataException RefuseOther(Stream stream, string name)
    {
        var bytes = new byte[(int)Math.Min(stream.Length, 64L << 20)];
        stream.ReadExactly(bytes);
        bool isPickle = bytes.Length >= 2 && bytes[0] == 0x80 && bytes[1] <= 5;
        if (isPickle)
        {
            // the legacy format is a sequence of pickles (magic, protocol, sys info, state dict, storage keys)
            int pos = 0;
            for (int i = 0; i < 5 && pos < bytes.Length && bytes[pos] == 0x80; i++)
            {
                try { pos = PickleScanner.Scan(bytes, name, pos).End; }
                catch (UnsafePickleException) { throw; }
                catch (InvalidDataException) { break; }
            }
            return new InvalidDataException(
                $"'{name}' is a pickle in PyTorch's legacy (pre-1.6, non-zip) format, which is not supported. Re-save it with a current PyTorch " +
                "(torch.save(torch.load(path, weights_only=True), new_path)) or convert it to .safetensors.");
        }
        return new InvalidDataException(
            $"'{name}' is neither a .safetensors file nor a PyTorch torch.save zip (.pth/.bin); cannot read it as a checkpoint.");
    }

    private static Dictionary<string, Tensor> ToFloat32(Dictionary<string, Tensor> raw)
    {
        var result = new Dictionary<string, Tensor>(raw.Count, StringComparer.Ordinal);
        foreach (var (k, t) in raw)
        {
            if (t.dtype == ScalarType.Float32) { result[k] = t; continue; }
            if (!t.is_floating_point())
            {
                result[k] = t; // integer buffers (e.g. a position-id table) are reported by the key check
                continue;
            }
            result[k] = t.to(ScalarType.Float32);
            t.Dispose();
        }
        return result;
    }
}
