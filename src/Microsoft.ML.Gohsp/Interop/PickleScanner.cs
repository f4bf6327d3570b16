using System.Buffers.Binary;
using System.Text;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>
/// Thrown when a PyTorch pickle (<c>.pth</c>/<c>.bin</c>) references a Python global outside the allow-list. Nothing from
/// the file has been unpickled when this is thrown.
/// </summary>
public sealed class UnsafePickleException : IOException
{
    /// <summary>Creates the exception.</summary>
    public UnsafePickleException(string message, string global) : base(message) => Global = global;

    /// <summary>The refused global as <c>module.name</c> (for example <c>posix.system</c>).</summary>
    public string Global { get; }
}

/// <summary>
/// A static check of a Python pickle, done before anything is unpickled: walks every opcode (protocols 0–5, with
/// Python's <c>pickletools</c> semantics) and collects every global the pickle would import — through <c>GLOBAL</c>,
/// <c>INST</c> and <c>STACK_GLOBAL</c> (whose module and name are tracked through a symbolic stack and the memo).
/// Globals outside the allow-list, <c>STACK_GLOBAL</c> with names that are not string constants, and the extension-registry
/// opcodes (<c>EXT1/2/4</c>, which name globals indirectly) are refused. The scan itself is bounded: at most
/// <see cref="MaxMemoEntries"/> memo entries and <see cref="MaxStackDepth"/> stack items, so a small, highly compressible pickle
/// cannot make it allocate gigabytes. It also collects the storages the pickle declares (<c>BINPERSID</c> tuples
/// <c>('storage', type, key, location, numel)</c>) and the tensors rebuilt over them, so that the caller can check every
/// declared size against the bytes the file holds before anything is allocated.
/// </summary>
internal static partial class PickleScanner
{
    /// <summary>Most memo entries a pickle may store (a ViT-Huge state dict uses a few thousand).</summary>
    internal const int MaxMemoEntries = 1 << 20;

    /// <summary>Most items the pickle stack may hold at once.</summary>
    internal const int MaxStackDepth = 1 << 20;

    /// <summary>A storage declared by a persistent id: its archive key, storage class (e.g. <c>FloatStorage</c>) and element count.</summary>
    internal sealed record Storage(string Key, string Type, long Elements);

    /// <summary>A tensor rebuilt over <paramref name="Storage"/> by <c>_rebuild_tensor(_v2)</c>: its shape and element offset.</summary>
    internal sealed record TensorView(Storage Storage, long Offset, long[] Shape, long[] Stride);

    /// <summary>What a scan found.</summary>
    internal sealed record Result(List<string> Globals, int End, List<Storage> Storages, List<TensorView> Tensors);

    private sealed record GlobalRef(string Name);
    /// <summary>What a PyTorch state dict needs: tensors, their storages, and OrderedDict (dict/list/tuple are opcodes, not globals).</summary>
    internal static readonly IReadOnlySet<string> AllowedGlobals = new HashSet<string>(StringComparer.Ordinal)
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_tensor_v2",
        "torch.FloatStorage", "torch.DoubleStorage", "torch.HalfStorage", "torch.BFloat16Storage",
        "torch.LongStorage", "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage",
    };

    private static readonly object Mark = new();
    private static readonly object Unknown = new();

    /// <summary>
    /// Scans one pickle starting at <paramref name="start"/>; returns the globals it references (in order) and the offset
    /// just after its STOP opcode. Throws <see cref="UnsafePickleException"/> on a refused global and
    /// <see cref="InvalidDataException"/> on a malformed pickle.
    /// </summary>
    internal static Result Scan(ReadOnlySpan<byte> data, string source, int start = 0)
    {
        var scan = new Scanner(data, source, start);
        while (true)
        {
            scan.CheckBounds();
            int at = scan.Pos;
            byte op = data[scan.Pos++];
            if (op == (byte)'.')                                                                      // STOP
            {
                scan.Pop(1, at);
                return scan.Result;
            }
            // every opcode belongs to exactly one group; each group returns false for the opcodes it does not know
            if (!scan.PushConstant(op, at) && !scan.BuildContainer(op, at) && !scan.StackOrMemo(op, at)
                && !scan.GlobalOrCall(op, at) && !scan.Framing(op))
                throw Malformed(source, at, $"has an unknown opcode 0x{op:x2}");
        }
    }

    private static void Check(List<string> globals, string module, string name, string source)
    {
        string g = module + "." + name;
        globals.Add(g);
        if (!AllowedGlobals.Contains(g))
            throw new UnsafePickleException(
                $"Refusing to load '{source}': its pickle references the Python global '{g}', which is not a tensor or a plain " +
                $"container. A .pth/.bin file is a pickle that can run code when loaded, so only these globals are accepted: " +
                $"{string.Join(", ", AllowedGlobals.Order(StringComparer.Ordinal))}. Nothing from the file was loaded. If the file is " +
                "trusted, re-save just the weights (torch.save(model.state_dict(), ...)) or, better, as .safetensors.", g);
    }

    private static InvalidDataException Malformed(string source, int at, string what) =>
        new($"'{source}' is not a valid PyTorch pickle: the pickle {what} (byte {at}).");

    private static object Peek(List<object> stack, string source, int at)
    {
        if (stack.Count == 0 || stack[^1] == Mark) throw Malformed(source, at, "reads an empty stack");
        return stack[^1];
    }

    private static object[] Pop(List<object> stack, int n, string source, int at, bool allowMark = false)
    {
        if (stack.Count < n) throw Malformed(source, at, "pops an empty stack");
        var items = stack.GetRange(stack.Count - n, n).ToArray();
        if (!allowMark && items.Contains(Mark)) throw Malformed(source, at, "pops past a MARK");
        stack.RemoveRange(stack.Count - n, n);
        return items;
    }

    private static object[] PopToMark(List<object> stack, string source, int at)
    {
        int i = stack.LastIndexOf(Mark);
        if (i < 0) throw Malformed(source, at, "has no MARK to pop to");
        var items = stack.GetRange(i + 1, stack.Count - i - 1).ToArray();
        stack.RemoveRange(i, stack.Count - i);
        return items;
    }

    /// <summary>A PyTorch persistent id <c>('storage', storage class, key, location, numel)</c>.</summary>
    private static Storage StorageOf(object pid, string source, int at)
    {
        if (pid is object[] { Length: 5 } t && t[0] is "storage" && t[1] is GlobalRef type && t[2] is string key && t[4] is long n)
        {
            if (n < 0) throw new InvalidDataException($"'{source}': storage '{key}' declares {n} elements (field numel of its persistent id, byte {at}).");
            return new Storage(key, type.Name[(type.Name.LastIndexOf('.') + 1)..], n);
        }
        throw Malformed(source, at, "has a persistent id that is not a PyTorch storage ('storage', type, key, location, numel)");
    }

    /// <summary>The arguments of <c>_rebuild_tensor(_v2)(storage, storage_offset, size, stride, ...)</c>.</summary>
    private static TensorView TensorOf(object args, string source, int at)
    {
        if (args is object[] { Length: >= 4 } a && a[0] is Storage s && a[1] is long offset && Longs(a[2]) is { } shape && Longs(a[3]) is { } stride
            && shape.Length == stride.Length)
            return new TensorView(s, offset, shape, stride);
        throw Malformed(source, at, "rebuilds a tensor from arguments that are not (storage, offset, size, stride, ...)");
    }

    private static long[]? Longs(object o) => o is object[] items && items.All(i => i is long) ? items.Cast<long>().ToArray() : null;

    private static object TextInteger(ReadOnlySpan<byte> text)
    {
        var s = Encoding.ASCII.GetString(text).TrimEnd('L');
        return s switch
        {
            "00" => Unknown, // False
            "01" => Unknown, // True
            _ => long.TryParse(s, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long v) ? v : Unknown,
        };
    }

    /// <summary>A LONG1 little-endian two's-complement integer; values beyond 64 bits are not tracked.</summary>
    private static object Long1(ReadOnlySpan<byte> b)
    {
        if (b.Length == 0) return 0L;
        if (b.Length > 8) return Unknown;
        long v = 0;
        for (int i = b.Length - 1; i >= 0; i--) v = (v << 8) | b[i];
        if (b.Length < 8 && (b[^1] & 0x80) != 0) v -= 1L << (8 * b.Length);
        return v;
    }

    private static object Get(Dictionary<long, object> memo, long key, string source, int at) =>
        memo.TryGetValue(key, out var v) ? v : throw Malformed(source, at, $"reads memo entry {key}, which was never stored");

    private static void Skip(ReadOnlySpan<byte> data, ref int pos, long n, string source)
    {
        if (n < 0 || n > data.Length - pos) throw Malformed(source, pos, "is truncated");
        pos += (int)n;
    }

    private static ReadOnlySpan<byte> Bytes(ReadOnlySpan<byte> data, scoped ref int pos, long n, string source)
    {
        int start = pos;
        Skip(data, ref pos, n, source);
        return data.Slice(start, (int)n);
    }

    /// <summary>Reads a little-endian length/index of <c>|width|</c> bytes (negative width: signed).</summary>
    private static long Length(ReadOnlySpan<byte> data, ref int pos, int width, string source)
    {
        int w = Math.Abs(width);
        var b = Bytes(data, ref pos, w, source);
        return width switch
        {
            1 => b[0],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(b),
            4 => BinaryPrimitives.ReadUInt32LittleEndian(b),
            -4 => BinaryPrimitives.ReadInt32LittleEndian(b),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(b) > long.MaxValue ? -1 : (long)BinaryPrimitives.ReadUInt64LittleEndian(b),
        };
    }

    private static ReadOnlySpan<byte> Line(ReadOnlySpan<byte> data, scoped ref int pos, string source)
    {
        int n = data[pos..].IndexOf((byte)'\n');
        if (n < 0) throw Malformed(source, pos, "has an unterminated text argument");
        var line = data.Slice(pos, n);
        pos += n + 1;
        return line;
    }

    private static long ParseLong(ReadOnlySpan<byte> text, string source, int at) =>
        long.TryParse(Encoding.ASCII.GetString(text), System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long v)
            ? v : throw Malformed(source, at, "has a non-numeric memo index");

    private static string Ascii(ReadOnlySpan<byte> b) => Encoding.ASCII.GetString(b);
    private static string Latin1(ReadOnlySpan<byte> b) => Encoding.Latin1.GetString(b);
    private static string Utf8(ReadOnlySpan<byte> b) => Encoding.UTF8.GetString(b);
}
