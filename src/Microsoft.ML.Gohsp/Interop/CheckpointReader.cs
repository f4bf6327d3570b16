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

    private static Dictionary<string, Tensor> ReadSafetensors(Stream stream, string name)
    {
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
                    if (entry.Length > 256L << 20) throw new InvalidDataException($"'{name}': the pickle {entry.FullName} is implausibly large ({entry.Length:N0} bytes).");
                    using var es = entry.Open();
                    using var ms = new MemoryStream();
                    es.CopyTo(ms);
                    PickleScanner.Scan(ms.GetBuffer().AsSpan(0, (int)ms.Length), name);
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
