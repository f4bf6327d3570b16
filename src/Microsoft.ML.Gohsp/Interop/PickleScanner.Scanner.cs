namespace Microsoft.ML.Gohsp.Interop;

internal static partial class PickleScanner
{
    /// <summary>The state of one scan: the bytes, the position, the symbolic stack and memo, and what was found so far.</summary>
    private ref struct Scanner
    {
        private readonly ReadOnlySpan<byte> _data;
        private readonly string _source;
        private readonly List<object> _stack = new();
        private readonly Dictionary<long, object> _memo = new();
        private readonly List<string> _globals = new();
        private readonly List<Storage> _storages = new();
        private readonly List<TensorView> _tensors = new();

        public Scanner(ReadOnlySpan<byte> data, string source, int start)
        {
            _data = data;
            _source = source;
            Pos = start;
        }

        /// <summary>The offset of the next opcode or argument byte.</summary>
        public int Pos;

        /// <summary>What was found, with the offset after the STOP opcode just read.</summary>
        public readonly Result Result => new(_globals, Pos, _storages, _tensors);

        /// <summary>Refuses a pickle that ends without STOP or whose stack or memo grows past the scan's bounds.</summary>
        public readonly void CheckBounds()
        {
            if (Pos >= _data.Length) throw Malformed(_source, Pos, "ends without a STOP opcode");
            if (_stack.Count > MaxStackDepth)
                throw new InvalidDataException($"'{_source}': the pickle's stack holds more than {MaxStackDepth:N0} items (byte {Pos}); a state dict never needs that many.");
            if (_memo.Count > MaxMemoEntries)
                throw new InvalidDataException($"'{_source}': the pickle's memo holds more than {MaxMemoEntries:N0} entries (byte {Pos}); a state dict never needs that many.");
        }

        /// <summary>Pushes of constants; false when <paramref name="op"/> is not one.</summary>
        public bool PushConstant(byte op, int at)
        {
            switch (op)
            {
                case (byte)'I': case (byte)'L': _stack.Add(TextInteger(Line())); break;                // INT, LONG (text)
                case (byte)'F': Line(); _stack.Add(Unknown); break;                                    // FLOAT (text)
                case (byte)'J': _stack.Add(Length(-4)); break;                                         // BININT
                case (byte)'K': _stack.Add(Length(1)); break;                                          // BININT1
                case (byte)'M': _stack.Add(Length(2)); break;                                          // BININT2
                case 0x8a: _stack.Add(Long1(Bytes(Length(1)))); break;                                // LONG1
                case 0x8b: Skip(Length(-4)); _stack.Add(Unknown); break;                               // LONG4
                case (byte)'G': Skip(8); _stack.Add(Unknown); break;                                   // BINFLOAT
                case (byte)'S': _stack.Add(Latin1(Line()).Trim('\'', '"')); break;                     // STRING (quoted repr)
                case (byte)'T': _stack.Add(Latin1(Bytes(Length(-4)))); break;                          // BINSTRING
                case (byte)'U': _stack.Add(Latin1(Bytes(Length(1)))); break;                           // SHORT_BINSTRING
                case (byte)'B': Skip(Length(4)); _stack.Add(Unknown); break;                           // BINBYTES
                case (byte)'C': Skip(Length(1)); _stack.Add(Unknown); break;                           // SHORT_BINBYTES
                case 0x8e: case 0x96: Skip(Length(8)); _stack.Add(Unknown); break;                     // BINBYTES8, BYTEARRAY8
                case (byte)'V': _stack.Add(Utf8(Line())); break;                                       // UNICODE (raw-unicode-escaped)
                case 0x8c: _stack.Add(Utf8(Bytes(Length(1)))); break;                                  // SHORT_BINUNICODE
                case (byte)'X': _stack.Add(Utf8(Bytes(Length(4)))); break;                             // BINUNICODE
                case 0x8d: _stack.Add(Utf8(Bytes(Length(8)))); break;                                  // BINUNICODE8
                case (byte)'N': case 0x88: case 0x89: _stack.Add(Unknown); break;                      // NONE, NEWTRUE, NEWFALSE
                case (byte)')': _stack.Add(Array.Empty<object>()); break;                             // EMPTY_TUPLE
                case (byte)']': case (byte)'}': case 0x8f: _stack.Add(Unknown); break;                 // EMPTY_LIST/DICT/SET
                case 0x97: _stack.Add(Unknown); break;                                                 // NEXT_BUFFER
                case 0x98: Pop(1, at); _stack.Add(Unknown); break;                                     // READONLY_BUFFER
                default: return false;
            }
            return true;
        }

        /// <summary>Container opcodes (tuples are tracked item by item); false when <paramref name="op"/> is not one.</summary>
        public readonly bool BuildContainer(byte op, int at)
        {
            switch (op)
            {
                case (byte)'a': Pop(1, at); break;                                                     // APPEND [list, x] -> [list]
                case (byte)'s': Pop(2, at); break;                                                     // SETITEM [dict, k, v] -> [dict]
                case (byte)'e': case (byte)'u': case 0x90: PopToMark(at); Peek(at); break;             // APPENDS, SETITEMS, ADDITEMS
                case (byte)'t': _stack.Add(PopToMark(at)); break;                                      // TUPLE (its items are tracked)
                case (byte)'l': case (byte)'d': case 0x91: PopToMark(at); _stack.Add(Unknown); break;  // LIST, DICT, FROZENSET
                case 0x85: _stack.Add(Pop(1, at)); break;                                              // TUPLE1
                case 0x86: _stack.Add(Pop(2, at)); break;                                              // TUPLE2
                case 0x87: _stack.Add(Pop(3, at)); break;                                              // TUPLE3
                default: return false;
            }
            return true;
        }

        /// <summary>Stack and memo opcodes; false when <paramref name="op"/> is not one.</summary>
        public bool StackOrMemo(byte op, int at)
        {
            switch (op)
            {
                case (byte)'0': Pop(1, at, allowMark: true); break;                                    // POP (pops a mark when one is on top, as Python does)
                case (byte)'2': _stack.Add(Peek(at)); break;                                           // DUP
                case (byte)'(': _stack.Add(Mark); break;                                               // MARK
                case (byte)'1': PopToMark(at); break;                                                  // POP_MARK
                case (byte)'g': _stack.Add(Get(ParseLong(Line(), _source, at), at)); break;            // GET
                case (byte)'h': _stack.Add(Get(Length(1), at)); break;                                 // BINGET
                case (byte)'j': _stack.Add(Get(Length(4), at)); break;                                 // LONG_BINGET
                case (byte)'p': _memo[ParseLong(Line(), _source, at)] = Peek(at); break;               // PUT
                case (byte)'q': _memo[Length(1)] = Peek(at); break;                                    // BINPUT
                case (byte)'r': _memo[Length(4)] = Peek(at); break;                                    // LONG_BINPUT
                case 0x94: _memo[_memo.Count] = Peek(at); break;                                       // MEMOIZE
                default: return false;
            }
            return true;
        }

        /// <summary>Opcodes that import globals, call them or build objects; false when <paramref name="op"/> is not one.</summary>
        public bool GlobalOrCall(byte op, int at)
        {
            switch (op)
            {
                case (byte)'c':                                                                        // GLOBAL module\nname\n
                {
                    string module = Ascii(Line()), name = Ascii(Line());
                    Check(_globals, module, name, _source);
                    _stack.Add(new GlobalRef(module + "." + name));
                    break;
                }
                case (byte)'i':                                                                        // INST module\nname\n [mark, args] -> [obj]
                {
                    string module = Ascii(Line()), name = Ascii(Line());
                    Check(_globals, module, name, _source);
                    PopToMark(at);
                    _stack.Add(Unknown);
                    break;
                }
                case 0x93: StackGlobal(at); break;                                                     // STACK_GLOBAL [module, name] -> [global]
                case 0x82:                                                                             // EXT1, EXT2, EXT4
                case 0x83:
                case 0x84:
                    throw new UnsafePickleException(
                        $"Refusing to load '{_source}': its pickle uses the copyreg extension registry (opcode EXT at byte {at}), " +
                        "which imports globals indirectly; a plain tensor checkpoint never does.", "<extension>");
                case (byte)'R':                                                                        // REDUCE [callable, args] -> [obj]
                {
                    var call = Pop(2, at);
                    if (call[0] is GlobalRef { Name: "torch._utils._rebuild_tensor" or "torch._utils._rebuild_tensor_v2" })
                        _tensors.Add(TensorOf(call[1], _source, at));
                    _stack.Add(Unknown);
                    break;
                }
                case (byte)'b': Pop(1, at); Peek(at); break;                                           // BUILD [obj, state] -> [obj]
                case (byte)'o': PopToMark(at); _stack.Add(Unknown); break;                             // OBJ [mark, cls, args] -> [obj]
                case 0x81: Pop(2, at); _stack.Add(Unknown); break;                                     // NEWOBJ
                case 0x92: Pop(3, at); _stack.Add(Unknown); break;                                     // NEWOBJ_EX
                case (byte)'P': Line(); _stack.Add(Unknown); break;                                    // PERSID
                case (byte)'Q':                                                                        // BINPERSID [pid] -> [storage]
                {
                    var storage = StorageOf(Pop(1, at)[0], _source, at);
                    _storages.Add(storage);
                    _stack.Add(storage);
                    break;
                }
                default: return false;
            }
            return true;
        }

        /// <summary>STACK_GLOBAL: module and name must be string constants of the pickle, and the global allowed.</summary>
        private readonly void StackGlobal(int at)
        {
            var name = Pop(1, at)[0];
            var module = Pop(1, at)[0];
            if (module is not string m || name is not string n)
                throw new UnsafePickleException(
                    $"Refusing to load '{_source}': its pickle imports a global whose module/name are computed at load time " +
                    $"(STACK_GLOBAL at byte {at} without string constants), which a plain tensor checkpoint never does.", "<dynamic>");
            Check(_globals, m, n, _source);
            _stack.Add(new GlobalRef(m + "." + n));
        }

        /// <summary>PROTO and FRAME (their arguments are skipped); false when <paramref name="op"/> is neither.</summary>
        public bool Framing(byte op)
        {
            switch (op)
            {
                case 0x80: Skip(1); break;                                                             // PROTO
                case 0x95: Skip(8); break;                                                             // FRAME
                default: return false;
            }
            return true;
        }

        public readonly object[] Pop(int n, int at, bool allowMark = false) => PickleScanner.Pop(_stack, n, _source, at, allowMark);
        private readonly object[] PopToMark(int at) => PickleScanner.PopToMark(_stack, _source, at);
        private readonly object Peek(int at) => PickleScanner.Peek(_stack, _source, at);
        private readonly object Get(long key, int at) => PickleScanner.Get(_memo, key, _source, at);
        private ReadOnlySpan<byte> Line() => PickleScanner.Line(_data, ref Pos, _source);
        private ReadOnlySpan<byte> Bytes(long n) => PickleScanner.Bytes(_data, ref Pos, n, _source);
        private long Length(int width) => PickleScanner.Length(_data, ref Pos, width, _source);
        private void Skip(long n) => PickleScanner.Skip(_data, ref Pos, n, _source);
    }
}
