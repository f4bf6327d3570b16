using System.Globalization;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.Gohsp.VisionTransformer;
using Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>
/// Pixel normalisation put at the front of an exported graph: <c>x' = (x · PixelScale − Mean[c]) / Std[c]</c>, the same
/// formula as the ML.NET layer's pre-processing, so the graph takes raw pixels (0…255 from <c>ExtractPixels</c>).
/// </summary>
/// <param name="PixelScale">Multiplier applied first (1/255 for 0…255 input).</param>
/// <param name="Mean">Per-channel mean.</param>
/// <param name="Std">Per-channel standard deviation (positive).</param>
public sealed record OnnxInputNormalization(float PixelScale, IReadOnlyList<float> Mean, IReadOnlyList<float> Std);

/// <summary>How the linear layers of the exported blocks compute.</summary>
public enum OnnxQuantization
{
    /// <summary>float32 throughout (the default).</summary>
    None = 0,

    /// <summary>
    /// Dynamic int8: the four linear layers of every block (attention qkv and output projection, MLP fc1 and fc2) store
    /// per-output-channel symmetric int8 weights (scale = max |w| / 127 per output row, zero point 0), and their input is
    /// quantized to uint8 at run time, one scale and zero point per batch (<c>DynamicQuantizeLinear</c>). The patch
    /// embedding, the position embedding, layer norms, the attention products q·kᵀ and softmax·v, softmax, GELU, the
    /// residual additions and the head stay float32. Standard ONNX operators only (opset 17): <c>DynamicQuantizeLinear</c>,
    /// <c>MatMulInteger</c>, <c>Cast</c>, <c>Mul</c>, which ONNX Runtime fuses into one quantized kernel per layer.
    /// </summary>
    Int8Dynamic = 1,
}

/// <summary>The operator pattern of an int8 linear layer (what the export writes for <see cref="OnnxQuantization.Int8Dynamic"/>).</summary>
internal enum OnnxInt8Pattern
{
    /// <summary>DynamicQuantizeLinear → MatMulInteger → Cast → Mul(x scale · weight scales) → Add bias (standard ONNX).</summary>
    MatMulInteger,

    /// <summary>DynamicQuantizeLinear → com.microsoft MatMulIntegerToFloat (scales and bias inside; an ONNX Runtime contrib op).</summary>
    MatMulIntegerToFloat,

    /// <summary>DynamicQuantizeLinear → DequantizeLinear on the input, int8 weight → per-axis DequantizeLinear, float MatMul → Add bias (QDQ).</summary>
    Qdq,
}

/// <summary>Options of <see cref="OnnxExport"/>.</summary>
public sealed class OnnxExportOptions
{
    /// <summary>The ONNX opset (17 or later; LayerNormalization needs 17). Default 17.</summary>
    public int Opset { get; set; } = 17;

    /// <summary>Name of the graph input, float32 [batch, C, H, W]. Default "input".</summary>
    public string InputName { get; set; } = "input";

    /// <summary>Name of the logits output, float32 [batch, classes]. Default "logits".</summary>
    public string LogitsName { get; set; } = "logits";

    /// <summary>Name of the softmax output, float32 [batch, classes]. Default "probabilities".</summary>
    public string ProbabilitiesName { get; set; } = "probabilities";

    /// <summary>
    /// Normalisation to include in the graph. Null: the graph takes already-normalised input (what
    /// <see cref="VisionTransformerModel.forward"/> takes). The ML.NET export passes the model's stored pre-processing.
    /// </summary>
    public OnnxInputNormalization? Normalization { get; set; }

    /// <summary>
    /// <see cref="OnnxQuantization.None"/> (default): float32 throughout. <see cref="OnnxQuantization.Int8Dynamic"/>: int8
    /// weights and dynamically quantized activations in the blocks' linear layers; inputs, outputs and the rest of the graph
    /// stay float32, so the file is used exactly like the float32 one.
    /// </summary>
    public OnnxQuantization Quantization { get; set; } = OnnxQuantization.None;

    /// <summary>The int8 operator pattern (measured alternatives are kept for the benchmark).</summary>
    internal OnnxInt8Pattern Int8Pattern { get; set; } = OnnxInt8Pattern.MatMulInteger;

    /// <summary>A copy of these options.</summary>
    internal OnnxExportOptions Clone() => (OnnxExportOptions)MemberwiseClone();

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public void Validate(int channels)
    {
        if (Opset < 17) throw new ArgumentOutOfRangeException(nameof(Opset), Opset, "Opset must be 17 or later (LayerNormalization).");
        foreach (var (name, value) in new[] { (nameof(InputName), InputName), (nameof(LogitsName), LogitsName), (nameof(ProbabilitiesName), ProbabilitiesName) })
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} must be set.", name);
        if (new[] { InputName, LogitsName, ProbabilitiesName }.Distinct(StringComparer.Ordinal).Count() != 3)
            throw new ArgumentException("InputName, LogitsName and ProbabilitiesName must differ.", nameof(ProbabilitiesName));
        if (!Enum.IsDefined(Quantization))
            throw new ArgumentOutOfRangeException(nameof(Quantization), Quantization, $"Quantization must be one of {string.Join(", ", Enum.GetNames<OnnxQuantization>())}.");
        if (Quantization == OnnxQuantization.Int8Dynamic && !Enum.IsDefined(Int8Pattern))
            throw new ArgumentOutOfRangeException(nameof(Int8Pattern), Int8Pattern, "Unknown int8 operator pattern.");
        if (Normalization is { } n)
        {
            if (!(n.PixelScale > 0) || float.IsInfinity(n.PixelScale)) throw new ArgumentOutOfRangeException(nameof(Normalization), n.PixelScale, "PixelScale must be a positive finite number.");
            if (n.Mean is null || n.Mean.Count != channels) throw new ArgumentException($"Normalization.Mean must have one value per channel ({channels}).", nameof(Normalization));
            if (n.Std is null || n.Std.Count != channels || n.Std.Any(s => !(s > 0))) throw new ArgumentException($"Normalization.Std must have one positive value per channel ({channels}).", nameof(Normalization));
        }
    }
}

/// <summary>
/// Exports a dense or pruned (heterogeneous) <see cref="VisionTransformerModel"/> to ONNX with the standard operator set
/// (Conv, LayerNormalization, MatMul, Softmax, Erf; opset 17+), using the generated onnx.proto classes of OnnxSharp.
/// Contract (also stored in the model's doc string and metadata): input float32 [batch, C, H, W] (NCHW, planar RGB; raw
/// pixels when <see cref="OnnxExportOptions.Normalization"/> is set, else normalised), outputs logits and softmax
/// probabilities, float32 [batch, classes]. The batch dimension is symbolic ("batch"). With
/// <see cref="OnnxExportOptions.Quantization"/> = <see cref="OnnxQuantization.Int8Dynamic"/> the blocks' linear layers hold
/// int8 weights and quantize their input per batch (DynamicQuantizeLinear, MatMulInteger); the contract is the same.
/// </summary>
public static class OnnxExport
{
    /// <summary>Writes the model to <paramref name="path"/> atomically (temporary file, then rename).</summary>
    public static void Save(VisionTransformerModel model, string path, OnnxExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        var proto = ToModelProto(model, options);
        AtomicFile.Write(path, s => proto.WriteTo(s));
    }

    /// <summary>The serialised ONNX model.</summary>
    public static byte[] ToBytes(VisionTransformerModel model, OnnxExportOptions? options = null) => ToModelProto(model, options).ToByteArray();

    /// <summary>
    /// Refuses, before any weight is read, an architecture whose float32 weights do not fit one protobuf message (2 GB;
    /// ONNX would need external-data files, which the export does not write).
    /// </summary>
    internal static void CheckSize(ViTArchitecture a)
    {
        if (a.ParameterCount * 4L > 1_900_000_000L)
            throw new NotSupportedException($"The model has {a.ParameterCount:N0} parameters ({a.ParameterCount * 4L / 1e9:F1} GB in float32); ONNX files without external data are limited to 2 GB.");
    }

    /// <summary>Builds the ONNX model (weights copied from <paramref name="model"/>, which is not modified).</summary>
    public static ModelProto ToModelProto(VisionTransformerModel model, OnnxExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxExportOptions();
        var a = model.Architecture;
        options.Validate(a.Channels);
        CheckSize(a);
        var w = Weights(model);
        var g = new GraphBuilder(options);
        var tokens = TokensBeforeBlocks(g, w, a, options);

        // ---- blocks ---------------------------------------------------------------------------------------------
        // The last block computes the class token's row alone, as VisionTransformerModel.forward does: its other tokens never
        // reach the head (its output is [B, 1, D]; [B, 2, D] with the class and distillation tokens of a distilled DeiT).
        for (int b = 0; b < a.Depth; b++)
            tokens = Block(g, w, $"blocks.{b}.", a.Blocks[b], tokens, a.LayerNormEps, outputTokens: b == a.Depth - 1 ? a.OutputTokens : 0);

        // ---- head -----------------------------------------------------------------------------------------------
        if (a.Distillation == ViTDistillation.TokenAndHead)
        {
            // DeiT's prediction: the mean of the class-token head and the distillation-token head
            var both = LayerNorm(g, w, "norm", tokens, a.LayerNormEps);                                                     // [B, 2, D]
            var cls = g.Node("Gather", [both, g.ScalarLong("cls_index", 0)], GraphBuilder.Int("axis", 1));
            var dist = g.Node("Gather", [both, g.ScalarLong("dist_index", 1)], GraphBuilder.Int("axis", 1));
            var sum = g.Node("Add", [Head(g, w, "head", cls), Head(g, w, "head_dist", dist)]);
            g.Node("Mul", [sum, g.Scalar("half", 0.5f)], output: options.LogitsName);
        }
        else
        {
            var first = g.Node("Gather", [tokens, g.ScalarLong("cls_index", 0)], GraphBuilder.Int("axis", 1));        // [B, D]
            var normed = LayerNorm(g, w, "norm", first, a.LayerNormEps);
            g.Node("Add", [g.Node("MatMul", [normed, g.Const("head.weight_t", Transposed(w["head.weight"]))]), g.Const("head.bias", w["head.bias"])],
                output: options.LogitsName);
        }
        g.Node("Softmax", [options.LogitsName], output: options.ProbabilitiesName, attributes: GraphBuilder.Int("axis", -1));

        var proto = Describe(g.Graph, a, options);
        foreach (var t in w.Values) t.Dispose();
        return proto;
    }

    /// <summary>
    /// The input of block 0, [B, prefix + N, D]: the optional normalisation of the raw pixels, the patch embedding (a Conv), the
    /// class token (and distillation token) and the position embedding.
    /// </summary>
    private static string TokensBeforeBlocks(GraphBuilder g, Dictionary<string, Tensor> w, ViTArchitecture a, OnnxExportOptions options)
    {
        int d = a.EmbedDim;
        // ---- input, optional normalisation -----------------------------------------------------------------------
        string x = options.InputName;
        if (options.Normalization is { } n)
        {
            var scale = Enumerable.Range(0, a.Channels).Select(c => n.PixelScale / n.Std[c]).ToArray();
            var shift = Enumerable.Range(0, a.Channels).Select(c => n.Mean[c] / n.Std[c]).ToArray();
            x = g.Node("Sub", [g.Node("Mul", [x, g.Const("norm.scale", scale, 1, a.Channels, 1, 1)]), g.Const("norm.shift", shift, 1, a.Channels, 1, 1)]);
        }

        // ---- patch embedding, class token, position embedding --------------------------------------------------
        var conv = g.Node("Conv", [x, g.Const("patch_embed.proj.weight", w["patch_embed.proj.weight"]), g.Const("patch_embed.proj.bias", w["patch_embed.proj.bias"])],
            GraphBuilder.Ints("kernel_shape", a.PatchSize, a.PatchSize), GraphBuilder.Ints("strides", a.PatchSize, a.PatchSize));
        var patches = g.Node("Transpose", [g.Node("Reshape", [conv, g.Shape(0, d, -1)])], GraphBuilder.Ints("perm", 0, 2, 1)); // [B, N, D]
        var batch = g.Node("Slice", [g.Node("Shape", [options.InputName]), g.Shape(0), g.Shape(1)]);                      // [B]
        var clsShape = g.Node("Concat", [batch, g.Shape(1, d)], GraphBuilder.Int("axis", 0));
        var cls = g.Node("Expand", [g.Const("cls_token", w["cls_token"]), clsShape]);
        string[] sequence = a.Distillation == ViTDistillation.None ? [cls, patches]
            : [cls, g.Node("Expand", [g.Const("dist_token", w["dist_token"]), clsShape]), patches];
        return g.Node("Add", [g.Node("Concat", sequence, GraphBuilder.Int("axis", 1)), g.Const("pos_embed", w["pos_embed"])]);
    }

    /// <summary>
    /// The model around <paramref name="graph"/>: its inputs and outputs with the symbolic batch, the opset, the doc string
    /// and metadata.
    /// </summary>
    private static ModelProto Describe(GraphProto graph, ViTArchitecture a, OnnxExportOptions options)
    {
        graph.Name = "VisionTransformer";
        graph.Input.Add(TensorValue(options.InputName, "batch", a.Channels, a.ImageSize, a.ImageSize));
        graph.Output.Add(TensorValue(options.LogitsName, "batch", a.NumClasses));
        graph.Output.Add(TensorValue(options.ProbabilitiesName, "batch", a.NumClasses));

        string input = options.Normalization is { } nn
            ? string.Create(CultureInfo.InvariantCulture, $"raw pixels, normalised inside the graph: (x * {nn.PixelScale:R} - mean) / std, mean = [{string.Join(", ", nn.Mean)}], std = [{string.Join(", ", nn.Std)}]")
            : "already normalised pixels (no normalisation inside the graph)";
        var proto = new ModelProto
        {
            IrVersion = 8,
            ProducerName = "Microsoft.ML.Gohsp",
            ProducerVersion = typeof(OnnxExport).Assembly.GetName().Version?.ToString() ?? "",
            Domain = "microsoft.ml.gohsp",
            ModelVersion = 1,
            DocString = $"{a}. Input '{options.InputName}': float32 [batch, {a.Channels}, {a.ImageSize}, {a.ImageSize}] NCHW planar RGB, {input}. " +
                        $"Outputs '{options.LogitsName}' and '{options.ProbabilitiesName}' (softmax): float32 [batch, {a.NumClasses}]." +
                        (options.Quantization == OnnxQuantization.None ? "" : $" Quantization: {Quantized(options)}."),
            Graph = graph,
        };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = options.Opset });
        if (graph.Node.Any(n => n.Domain == GraphBuilder.MicrosoftDomain))
            proto.OpsetImport.Add(new OperatorSetIdProto { Domain = GraphBuilder.MicrosoftDomain, Version = 1 });
        void Meta(string k, string v) => proto.MetadataProps.Add(new StringStringEntryProto { Key = k, Value = v });
        Meta("gohsp.architecture", a.ToString());
        Meta("gohsp.parameters", a.ParameterCount.ToString(CultureInfo.InvariantCulture));
        Meta("gohsp.input", input);
        if (options.Quantization != OnnxQuantization.None) Meta("gohsp.quantization", Quantized(options));
        return proto;
    }

    private static string Quantized(OnnxExportOptions options) =>
        "int8 per-output-channel symmetric weights and per-batch dynamically quantized uint8 activations in the blocks' qkv, proj, fc1 and fc2; everything else float32";

    private static string Block(GraphBuilder g, Dictionary<string, Tensor> w, string p, ViTBlockSpec spec, string x, double eps, int outputTokens)
    {
        int h = spec.Heads, dq = spec.QkDim, dv = spec.VDim;
        var layout = spec.Qkv;
        // The attention module scales q·kᵀ by 1/√QkDim (QkDim of this block; pruning already folded the dense scale
        // correction into W_q). The same factor is folded into the query rows of the exported qkv projection.
        float qScale = (float)(1.0 / Math.Sqrt(dq));
        var qkvW = w[p + "attn.qkv.weight"].clone();
        var qkvB = w[p + "attn.qkv.bias"].clone();
        using (no_grad())
        {
            qkvW.narrow(0, 0, layout.QRows).mul_(qScale);
            qkvB.narrow(0, 0, layout.QRows).mul_(qScale);
        }
        var n1 = LayerNorm(g, w, p + "norm1", x, eps);
        string qIn, kIn, vIn;
        bool classTokenOnly = outputTokens > 0;
        if (classTokenOnly)
        {
            // q for the class token only; k and v for every token (the q rows and the k|v rows of the fused projection)
            long qRows = layout.QRows, kvRows = layout.KRows + layout.VRows;
            var cls = g.Node("Slice", [n1, g.Shape(0), g.Shape(outputTokens), g.Shape(1)]);                             // [B, 1, D]
            using (var wq = qkvW.narrow(0, 0, qRows)) using (var bq = qkvB.narrow(0, 0, qRows))
                qIn = Affine(g, p + "attn.q", cls, wq, bq);
            string kv;
            using (var wkv = qkvW.narrow(0, layout.KStart, kvRows)) using (var bkv = qkvB.narrow(0, layout.KStart, kvRows))
                kv = Affine(g, p + "attn.kv", n1, wkv, bkv);
            var kvParts = g.Nodes("Split", [kv, g.Shape(layout.KRows, layout.VRows)], 2, GraphBuilder.Int("axis", 2));
            (kIn, vIn) = (kvParts[0], kvParts[1]);
        }
        else
        {
            var qkv = Affine(g, p + "attn.qkv", n1, qkvW, qkvB);
            var parts = g.Nodes("Split", [qkv, g.Shape(layout.QRows, layout.KRows, layout.VRows)], 3, GraphBuilder.Int("axis", 2));
            (qIn, kIn, vIn) = (parts[0], parts[1], parts[2]);
        }
        qkvW.Dispose(); qkvB.Dispose();
        var q = g.Node("Transpose", [g.Node("Reshape", [qIn, g.Shape(0, 0, h, dq)])], GraphBuilder.Ints("perm", 0, 2, 1, 3));   // [B, h, N or 1, dq]
        var kT = g.Node("Transpose", [g.Node("Reshape", [kIn, g.Shape(0, 0, h, dq)])], GraphBuilder.Ints("perm", 0, 2, 3, 1));  // [B, h, dq, N]
        var v = g.Node("Transpose", [g.Node("Reshape", [vIn, g.Shape(0, 0, h, dv)])], GraphBuilder.Ints("perm", 0, 2, 1, 3));   // [B, h, N, dv]
        var attn = g.Node("Softmax", [g.Node("MatMul", [q, kT])], GraphBuilder.Int("axis", -1));
        var heads = g.Node("Reshape", [g.Node("Transpose", [g.Node("MatMul", [attn, v])], GraphBuilder.Ints("perm", 0, 2, 1, 3)), g.Shape(0, 0, layout.VRows)]);
        var proj = Linear(g, w, p + "attn.proj", heads);
        var residual = classTokenOnly ? g.Node("Slice", [x, g.Shape(0), g.Shape(outputTokens), g.Shape(1)]) : x;                      // [B, 1, D] or [B, N, D]
        var x1 = g.Node("Add", [residual, proj]);
        var n2 = LayerNorm(g, w, p + "norm2", x1, eps);
        var f1 = Linear(g, w, p + "mlp.fc1", n2);
        // exact GELU, x · 0.5 · (1 + erf(x / √2)), in the pattern ONNX Runtime fuses into one Gelu kernel
        var erf = g.Node("Erf", [g.Node("Div", [f1, g.Scalar("sqrt2", MathF.Sqrt(2f))])]);
        var gelu = g.Node("Mul", [g.Node("Mul", [f1, g.Node("Add", [erf, g.Scalar("one", 1f)])]), g.Scalar("half", 0.5f)]);
        var f2 = Linear(g, w, p + "mlp.fc2", gelu);
        return g.Node("Add", [x1, f2]);
    }

    /// <summary>A classifier head, x·weightᵀ + bias, float32 whatever <see cref="OnnxExportOptions.Quantization"/> says.</summary>
    private static string Head(GraphBuilder g, Dictionary<string, Tensor> w, string name, string x) =>
        g.Node("Add", [g.Node("MatMul", [x, g.Const(name + ".weight_t", Transposed(w[name + ".weight"]))]), g.Const(name + ".bias", w[name + ".bias"])]);

    private static string Linear(GraphBuilder g, Dictionary<string, Tensor> w, string name, string x) =>
        Affine(g, name, x, w[name + ".weight"], w[name + ".bias"]);

    /// <summary>
    /// x·weightᵀ + bias of a block's linear layer, with the weight stored transposed as <c>{name}.weight_t</c> (float32) or
    /// <c>{name}.weight_q</c> (int8, with per-output-channel scales <c>{name}.weight_scale</c>), and the bias as <c>{name}.bias</c>.
    /// </summary>
    private static string Affine(GraphBuilder g, string name, string x, Tensor weight, Tensor bias)
    {
        if (g.Options.Quantization == OnnxQuantization.None)
            return g.Node("Add", [g.Node("MatMul", [x, g.Const(name + ".weight_t", Transposed(weight))]), g.Const(name + ".bias", bias)]);

        var (q, scale) = QuantizePerOutputChannel(weight);
        int inF = (int)weight.shape[1], outF = (int)weight.shape[0];
        var wq = g.ConstInt8(name + ".weight_q", q, inF, outF);
        var ws = g.Const(name + ".weight_scale", scale, outF);
        var b = g.Const(name + ".bias", bias);
        var xq = g.Nodes("DynamicQuantizeLinear", [x], 3);                                    // uint8 x, scale, zero point (per batch)
        switch (g.Options.Int8Pattern)
        {
            case OnnxInt8Pattern.MatMulIntegerToFloat:
                return g.NodeIn(GraphBuilder.MicrosoftDomain, "MatMulIntegerToFloat", [xq[0], wq, xq[1], ws, xq[2], "", b]);
            case OnnxInt8Pattern.Qdq:
                var xd = g.Node("DequantizeLinear", [xq[0], xq[1], xq[2]]);
                var wd = g.Node("DequantizeLinear", [wq, ws, g.ConstInt8(name + ".weight_zero_point", new sbyte[outF], outF)], GraphBuilder.Int("axis", 1));
                return g.Node("Add", [g.Node("MatMul", [xd, wd]), b]);
            default:
                // the pattern ONNX Runtime's quantize_dynamic writes, which its optimiser fuses into one DynamicQuantizeMatMul
                var acc = g.Node("MatMulInteger", [xq[0], wq, xq[2]]);                          // int32, weight zero point 0
                var product = g.Node("Mul", [xq[1], ws]);                                      // x scale · weight scale per output
                return g.Node("Add", [g.Node("Mul", [g.Node("Cast", [acc], GraphBuilder.Int("to", (int)TensorProto.Types.DataType.Float)), product]), b]);
        }
    }

    /// <summary>
    /// Symmetric per-output-channel int8 quantisation of a [out, in] weight: scale[o] = max |w[o, ·]| / 127 (1 for an all-zero
    /// row, e.g. a head folded away by its mask), q = round(w / scale) (half to even) in [−127, 127]. The result is laid out
    /// transposed, [in, out], for MatMul.
    /// </summary>
    internal static (sbyte[] Transposed, float[] Scale) QuantizePerOutputChannel(Tensor weight)
    {
        int outF = (int)weight.shape[0], inF = (int)weight.shape[1];
        float[] wv;
        using (var c = weight.to(ScalarType.Float32).contiguous()) wv = c.data<float>().ToArray();
        var scale = new float[outF];
        var q = new sbyte[inF * outF];
        for (int o = 0; o < outF; o++)
        {
            float max = 0;
            for (int i = 0; i < inF; i++) max = Math.Max(max, Math.Abs(wv[o * inF + i]));
            scale[o] = max > 0 ? max / 127f : 1f;
            for (int i = 0; i < inF; i++)
                q[i * outF + o] = (sbyte)Math.Clamp(MathF.Round(wv[o * inF + i] / scale[o], MidpointRounding.ToEven), -127f, 127f);
        }
        return (q, scale);
    }

    private static string LayerNorm(GraphBuilder g, Dictionary<string, Tensor> w, string name, string x, double eps) =>
        g.Node("LayerNormalization", [x, g.Const(name + ".weight", w[name + ".weight"]), g.Const(name + ".bias", w[name + ".bias"])],
            GraphBuilder.Int("axis", -1), GraphBuilder.Float("epsilon", (float)eps));

    private static Dictionary<string, Tensor> Weights(VisionTransformerModel model)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        using var _ = no_grad();
        foreach (var (k, t) in model.state_dict()) result[k] = t.detach().to(ScalarType.Float32).cpu().contiguous().clone();
        // A head mask Mᴴ (GOHSP stage 1) multiplies each head's output before the output projection: fold it into the
        // projection's columns of the masked heads, so the exported graph needs no mask.
        if (model.KeptHeads is { } kept)
            for (int b = 0; b < kept.Count; b++)
            {
                var spec = model.Architecture.Blocks[b];
                var proj = result[$"blocks.{b}.attn.proj.weight"];
                for (int h = 0; h < spec.Heads; h++)
                    if (!kept[b].Contains(h)) proj.narrow(1, spec.Qkv.ProjColumn(h, 0), spec.VDim).zero_();
            }
        return result;
    }

    private static Tensor Transposed(Tensor weight) => weight.t().contiguous();

    private static ValueInfoProto TensorValue(string name, string batchName, params int[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = batchName });
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape } },
        };
    }

    /// <summary>Nodes and initialisers of one graph, with generated unique value names.</summary>
    private sealed class GraphBuilder
    {
        /// <summary>The domain of ONNX Runtime's contrib operators.</summary>
        public const string MicrosoftDomain = "com.microsoft";

        private int _next;
        private readonly Dictionary<string, string> _shapes = new(StringComparer.Ordinal);

        public GraphBuilder(OnnxExportOptions options) => Options = options;

        public OnnxExportOptions Options { get; }

        public GraphProto Graph { get; } = new();

        public string Node(string op, string[] inputs, params AttributeProto[] attributes) => Node(op, inputs, null, attributes);

        /// <summary>A node of another operator domain (one output).</summary>
        public string NodeIn(string domain, string op, string[] inputs, params AttributeProto[] attributes)
        {
            var output = Node(op, inputs, attributes);
            Graph.Node[^1].Domain = domain;
            return output;
        }

        public string Node(string op, string[] inputs, string? output, params AttributeProto[] attributes) =>
            Nodes(op, inputs, 1, output is null ? null : [output], attributes)[0];

        public string[] Nodes(string op, string[] inputs, int outputs, params AttributeProto[] attributes) => Nodes(op, inputs, outputs, null, attributes);

        private string[] Nodes(string op, string[] inputs, int outputs, string[]? names, AttributeProto[] attributes)
        {
            int id = _next++;
            var node = new NodeProto { OpType = op, Name = $"{op}_{id}" };
            node.Input.AddRange(inputs);
            var outs = names ?? Enumerable.Range(0, outputs).Select(i => outputs == 1 ? $"{op}_{id}_out" : $"{op}_{id}_out{i}").ToArray();
            node.Output.AddRange(outs);
            node.Attribute.AddRange(attributes);
            Graph.Node.Add(node);
            return outs;
        }

        public string Const(string name, Tensor t)
        {
            var data = t.contiguous().data<float>().ToArray();
            return Const(name, data, t.shape);
        }

        public string Const(string name, float[] data, params long[] dims)
        {
            var tp = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data.AsSpan())) };
            tp.Dims.AddRange(dims);
            Graph.Initializer.Add(tp);
            return name;
        }

        public string ConstInt8(string name, sbyte[] data, params long[] dims)
        {
            var tp = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int8, RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(data.AsSpan())) };
            tp.Dims.AddRange(dims);
            Graph.Initializer.Add(tp);
            return name;
        }

        public string Scalar(string name, float value) =>
            Graph.Initializer.Any(i => i.Name == name) ? name : Const(name, [value]);

        public string ScalarLong(string name, long value)
        {
            var tp = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
            tp.Int64Data.Add(value);
            Graph.Initializer.Add(tp);
            return name;
        }

        /// <summary>A 1-D int64 constant (shapes, split sizes, slice bounds), shared between nodes.</summary>
        public string Shape(params long[] values)
        {
            string key = string.Join(",", values);
            if (_shapes.TryGetValue(key, out var name)) return name;
            name = "const_i64_" + _shapes.Count.ToString(CultureInfo.InvariantCulture);
            var tp = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
            tp.Dims.Add(values.Length);
            tp.Int64Data.AddRange(values);
            Graph.Initializer.Add(tp);
            _shapes[key] = name;
            return name;
        }

        public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
        public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };
        public static AttributeProto Ints(string name, params long[] values)
        {
            var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
            a.Ints.AddRange(values);
            return a;
        }
    }
}
