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
internal static class PickleScanner
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
        var globals = new List<string>();
        var stack = new List<object>();
        var memo = new Dictionary<long, object>();
        var storages = new List<Storage>();
        var tensors = new List<TensorView>();
        int pos = start;

        while (true)
        {
            if (pos >= data.Length) throw Malformed(source, pos, "ends without a STOP opcode");
            if (stack.Count > MaxStackDepth)
                throw new InvalidDataException($"'{source}': the pickle's stack holds more than {MaxStackDepth:N0} items (byte {pos}); a state dict never needs that many.");
            if (memo.Count > MaxMemoEntries)
                throw new InvalidDataException($"'{source}': the pickle's memo holds more than {MaxMemoEntries:N0} entries (byte {pos}); a state dict never needs that many.");
            int at = pos;
            byte op = data[pos++];
            switch (op)
            {
                // ---- pushes of constants -------------------------------------------------------------------------
                case (byte)'I': case (byte)'L':                                                       // INT, LONG (text)
                    stack.Add(TextInteger(Line(data, ref pos, source))); break;
                case (byte)'F': Line(data, ref pos, source); stack.Add(Unknown); break;               // FLOAT (text)
                case (byte)'J': stack.Add(Length(data, ref pos, -4, source)); break;                  // BININT
                case (byte)'K': stack.Add(Length(data, ref pos, 1, source)); break;                   // BININT1
                case (byte)'M': stack.Add(Length(data, ref pos, 2, source)); break;                   // BININT2
                case 0x8a: stack.Add(Long1(Bytes(data, ref pos, Length(data, ref pos, 1, source), source))); break; // LONG1
                case 0x8b: Skip(data, ref pos, Length(data, ref pos, -4, source), source); stack.Add(Unknown); break; // LONG4
                case (byte)'G': Skip(data, ref pos, 8, source); stack.Add(Unknown); break;            // BINFLOAT
                case (byte)'S': stack.Add(Latin1(Line(data, ref pos, source)).Trim('\'', '"')); break; // STRING (quoted repr)
                case (byte)'T': stack.Add(Latin1(Bytes(data, ref pos, Length(data, ref pos, -4, source), source))); break; // BINSTRING
                case (byte)'U': stack.Add(Latin1(Bytes(data, ref pos, Length(data, ref pos, 1, source), source))); break;  // SHORT_BINSTRING
                case (byte)'B': Skip(data, ref pos, Length(data, ref pos, 4, source), source); stack.Add(Unknown); break;  // BINBYTES
                case (byte)'C': Skip(data, ref pos, Length(data, ref pos, 1, source), source); stack.Add(Unknown); break;  // SHORT_BINBYTES
                case 0x8e: case 0x96: Skip(data, ref pos, Length(data, ref pos, 8, source), source); stack.Add(Unknown); break; // BINBYTES8, BYTEARRAY8
                case (byte)'V': stack.Add(Utf8(Line(data, ref pos, source))); break;                  // UNICODE (raw-unicode-escaped)
                case 0x8c: stack.Add(Utf8(Bytes(data, ref pos, Length(data, ref pos, 1, source), source))); break; // SHORT_BINUNICODE
                case (byte)'X': stack.Add(Utf8(Bytes(data, ref pos, Length(data, ref pos, 4, source), source))); break; // BINUNICODE
                case 0x8d: stack.Add(Utf8(Bytes(data, ref pos, Length(data, ref pos, 8, source), source))); break; // BINUNICODE8
                case (byte)'N': case 0x88: case 0x89: stack.Add(Unknown); break;                      // NONE, NEWTRUE, NEWFALSE
                case (byte)')': stack.Add(Array.Empty<object>()); break;                             // EMPTY_TUPLE
                case (byte)']': case (byte)'}': case 0x8f: stack.Add(Unknown); break;                 // EMPTY_LIST/DICT/SET
                case 0x97: stack.Add(Unknown); break;                                                 // NEXT_BUFFER
                case 0x98: Pop(stack, 1, source, at); stack.Add(Unknown); break;                      // READONLY_BUFFER

                // ---- containers ---------------------------------------------------------------------------------
                case (byte)'a': Pop(stack, 1, source, at); break;                                     // APPEND [list, x] -> [list]
                case (byte)'s': Pop(stack, 2, source, at); break;                                     // SETITEM [dict, k, v] -> [dict]
                case (byte)'e': case (byte)'u': case 0x90: PopToMark(stack, source, at); Peek(stack, source, at); break; // APPENDS, SETITEMS, ADDITEMS
                case (byte)'t': stack.Add(PopToMark(stack, source, at)); break;                       // TUPLE (its items are tracked)
                case (byte)'l': case (byte)'d': case 0x91: PopToMark(stack, source, at); stack.Add(Unknown); break; // LIST, DICT, FROZENSET
                case 0x85: stack.Add(Pop(stack, 1, source, at)); break;                               // TUPLE1
                case 0x86: stack.Add(Pop(stack, 2, source, at)); break;                               // TUPLE2
                case 0x87: stack.Add(Pop(stack, 3, source, at)); break;                               // TUPLE3

                // ---- stack and memo -----------------------------------------------------------------------------
                case (byte)'0':                                                                       // POP (pops a mark when one is on top, as Python does)
                    Pop(stack, 1, source, at, allowMark: true); break;
                case (byte)'2': stack.Add(Peek(stack, source, at)); break;                            // DUP
                case (byte)'(': stack.Add(Mark); break;                                               // MARK
                case (byte)'1': PopToMark(stack, source, at); break;                                  // POP_MARK
                case (byte)'g': stack.Add(Get(memo, ParseLong(Line(data, ref pos, source), source, at), source, at)); break; // GET
                case (byte)'h': stack.Add(Get(memo, Length(data, ref pos, 1, source), source, at)); break;  // BINGET
                case (byte)'j': stack.Add(Get(memo, Length(data, ref pos, 4, source), source, at)); break;  // LONG_BINGET
                case (byte)'p': memo[ParseLong(Line(data, ref pos, source), source, at)] = Peek(stack, source, at); break; // PUT
                case (byte)'q': memo[Length(data, ref pos, 1, source)] = Peek(stack, source, at); break;  // BINPUT
                case (byte)'r': memo[Length(data, ref pos, 4, source)] = Peek(stack, source, at); break;  // LONG_BINPUT
                case 0x94: memo[memo.Count] = Peek(stack, source, at); break;                         // MEMOIZE

                // ---- globals and calls --------------------------------------------------------------------------
                case (byte)'c':                                                                       // GLOBAL module\nname\n
                {
                    string module = Ascii(Line(data, ref pos, source)), name = Ascii(Line(data, ref pos, source));
                    Check(globals, module, name, source);
                    stack.Add(new GlobalRef(module + "." + name));
                    break;
                }
                case (byte)'i':                                                                       // INST module\nname\n [mark, args] -> [obj]
                {
                    string module = Ascii(Line(data, ref pos, source)), name = Ascii(Line(data, ref pos, source));
                    Check(globals, module, name, source);
                    PopToMark(stack, source, at);
                    stack.Add(Unknown);
                    break;
                }
                case 0x93:                                                                            // STACK_GLOBAL [module, name] -> [global]
                {
                    var name = Pop(stack, 1, source, at)[0];
                    var module = Pop(stack, 1, source, at)[0];
                    if (module is not string m || name is not string n)
                        throw new UnsafePickleException(
                            $"Refusing to load '{source}': its pickle imports a global whose module/name are computed at load time " +
                            $"(STACK_GLOBAL at byte {at} without string constants), which a plain tensor checkpoint never does.", "<dynamic>");
                    Check(globals, m, n, source);
                    stack.Add(new GlobalRef(m + "." + n));
                    break;
                }
                case 0x82: case 0x83: case 0x84:                                                      // EXT1, EXT2, EXT4
                    throw new UnsafePickleException(
                        $"Refusing to load '{source}': its pickle uses the copyreg extension registry (opcode EXT at byte {at}), " +
                        "which imports globals indirectly; a plain tensor checkpoint never does.", "<extension>");
                case (byte)'R':                                                                       // REDUCE [callable, args] -> [obj]
                {
                    var call = Pop(stack, 2, source, at);
                    if (call[0] is GlobalRef { Name: "torch._utils._rebuild_tensor" or "torch._utils._rebuild_tensor_v2" })
                        tensors.Add(TensorOf(call[1], source, at));
                    stack.Add(Unknown);
                    break;
                }
                case (byte)'b': Pop(stack, 1, source, at); Peek(stack, source, at); break;            // BUILD [obj, state] -> [obj]
                case (byte)'o': PopToMark(stack, source, at); stack.Add(Unknown); break;              // OBJ [mark, cls, args] -> [obj]
                case 0x81: Pop(stack, 2, source, at); stack.Add(Unknown); break;                      // NEWOBJ
                case 0x92: Pop(stack, 3, source, at); stack.Add(Unknown); break;                      // NEWOBJ_EX
                case (byte)'P': Line(data, ref pos, source); stack.Add(Unknown); break;               // PERSID
                case (byte)'Q':                                                                       // BINPERSID [pid] -> [storage]
                {
                    var storage = StorageOf(Pop(stack, 1, source, at)[0], source, at);
                    storages.Add(storage);
                    stack.Add(storage);
                    break;
                }

                // ---- framing ------------------------------------------------------------------------------------
                case 0x80: Skip(data, ref pos, 1, source); break;                                     // PROTO
                case 0x95: Skip(data, ref pos, 8, source); break;                                     // FRAME
                case (byte)'.':                                                                       // STOP
                    Pop(stack, 1, source, at);
                    return new Result(globals, pos, storages, tensors);
                default:
                    throw Malformed(source, at, $"has an unknown opcode 0x{op:x2}");
            }
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

    private static ReadOnlySpan<byte> Bytes(ReadOnlySpan<byte> data, ref int pos, long n, string source)
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

    private static ReadOnlySpan<byte> Line(ReadOnlySpan<byte> data, ref int pos, string source)
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
