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
/// opcodes (<c>EXT1/2/4</c>, which name globals indirectly) are refused.
/// </summary>
internal static class PickleScanner
{
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
    internal static (List<string> Globals, int End) Scan(ReadOnlySpan<byte> data, string source, int start = 0)
    {
        var globals = new List<string>();
        var stack = new List<object>();
        var memo = new Dictionary<long, object>();
        int pos = start;

        while (true)
        {
            if (pos >= data.Length) throw Malformed(source, pos, "ends without a STOP opcode");
            int at = pos;
            byte op = data[pos++];
            switch (op)
            {
                // ---- pushes of constants -------------------------------------------------------------------------
                case (byte)'I': case (byte)'L': case (byte)'F': // INT, LONG, FLOAT (text)
                    Line(data, ref pos, source); stack.Add(Unknown); break;
                case (byte)'J': Skip(data, ref pos, 4, source); stack.Add(Unknown); break;            // BININT
                case (byte)'K': Skip(data, ref pos, 1, source); stack.Add(Unknown); break;            // BININT1
                case (byte)'M': Skip(data, ref pos, 2, source); stack.Add(Unknown); break;            // BININT2
                case 0x8a: Skip(data, ref pos, Length(data, ref pos, 1, source), source); stack.Add(Unknown); break; // LONG1
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
                case (byte)']': case (byte)')': case (byte)'}': case 0x8f: stack.Add(Unknown); break;  // EMPTY_LIST/TUPLE/DICT/SET
                case 0x97: stack.Add(Unknown); break;                                                 // NEXT_BUFFER
                case 0x98: Pop(stack, 1, source, at); stack.Add(Unknown); break;                      // READONLY_BUFFER

                // ---- containers ---------------------------------------------------------------------------------
                case (byte)'a': Pop(stack, 1, source, at); break;                                     // APPEND [list, x] -> [list]
                case (byte)'s': Pop(stack, 2, source, at); break;                                     // SETITEM [dict, k, v] -> [dict]
                case (byte)'e': case (byte)'u': case 0x90: PopToMark(stack, source, at); Peek(stack, source, at); break; // APPENDS, SETITEMS, ADDITEMS
                case (byte)'l': case (byte)'t': case (byte)'d': case 0x91: PopToMark(stack, source, at); stack.Add(Unknown); break; // LIST, TUPLE, DICT, FROZENSET
                case 0x85: Pop(stack, 1, source, at); stack.Add(Unknown); break;                      // TUPLE1
                case 0x86: Pop(stack, 2, source, at); stack.Add(Unknown); break;                      // TUPLE2
                case 0x87: Pop(stack, 3, source, at); stack.Add(Unknown); break;                      // TUPLE3

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
                    stack.Add(Unknown);
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
                    stack.Add(Unknown);
                    break;
                }
                case 0x82: case 0x83: case 0x84:                                                      // EXT1, EXT2, EXT4
                    throw new UnsafePickleException(
                        $"Refusing to load '{source}': its pickle uses the copyreg extension registry (opcode EXT at byte {at}), " +
                        "which imports globals indirectly; a plain tensor checkpoint never does.", "<extension>");
                case (byte)'R': Pop(stack, 2, source, at); stack.Add(Unknown); break;                 // REDUCE [callable, args] -> [obj]
                case (byte)'b': Pop(stack, 1, source, at); Peek(stack, source, at); break;            // BUILD [obj, state] -> [obj]
                case (byte)'o': PopToMark(stack, source, at); stack.Add(Unknown); break;              // OBJ [mark, cls, args] -> [obj]
                case 0x81: Pop(stack, 2, source, at); stack.Add(Unknown); break;                      // NEWOBJ
                case 0x92: Pop(stack, 3, source, at); stack.Add(Unknown); break;                      // NEWOBJ_EX
                case (byte)'P': Line(data, ref pos, source); stack.Add(Unknown); break;               // PERSID
                case (byte)'Q': Pop(stack, 1, source, at); stack.Add(Unknown); break;                 // BINPERSID

                // ---- framing ------------------------------------------------------------------------------------
                case 0x80: Skip(data, ref pos, 1, source); break;                                     // PROTO
                case 0x95: Skip(data, ref pos, 8, source); break;                                     // FRAME
                case (byte)'.':                                                                       // STOP
                    Pop(stack, 1, source, at);
                    return (globals, pos);
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

    private static void PopToMark(List<object> stack, string source, int at)
    {
        int i = stack.LastIndexOf(Mark);
        if (i < 0) throw Malformed(source, at, "has no MARK to pop to");
        stack.RemoveRange(i, stack.Count - i);
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
