using System.Collections;
using System.IO.Compression;
using System.Text;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Writes checkpoints the way the outside world does, independently of the importer: timm naming is the model's own
/// state dict; the Hugging Face naming is spelled out here (q/k/v split by hand), so a mapping bug in the library cannot
/// be mirrored by the test. Files are written with TorchSharp.PyBridge (safetensors and torch.save zip format).
/// </summary>
internal static class InteropTestFiles
{
    public static string FixtureDir { get; } = Path.Combine(AppContext.BaseDirectory, "Fixtures", "interop");

    public static Dictionary<string, Tensor> Timm(VisionTransformerModel m) =>
        m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().cpu().contiguous().clone());

    public static Dictionary<string, Tensor> HuggingFace(VisionTransformerModel m)
    {
        var sd = Timm(m);
        var a = m.Architecture;
        var hf = new Dictionary<string, Tensor>
        {
            ["vit.embeddings.cls_token"] = sd["cls_token"],
            ["vit.embeddings.position_embeddings"] = sd["pos_embed"],
            ["vit.embeddings.patch_embeddings.projection.weight"] = sd["patch_embed.proj.weight"],
            ["vit.embeddings.patch_embeddings.projection.bias"] = sd["patch_embed.proj.bias"],
            ["vit.layernorm.weight"] = sd["norm.weight"],
            ["vit.layernorm.bias"] = sd["norm.bias"],
            ["classifier.weight"] = sd["head.weight"],
            ["classifier.bias"] = sd["head.bias"],
        };
        for (int i = 0; i < a.Depth; i++)
        {
            string p = $"blocks.{i}.", o = $"vit.encoder.layer.{i}.";
            long width = a.Blocks[i].Heads * a.Blocks[i].QkDim;
            foreach (var s in new[] { "weight", "bias" })
            {
                var qkv = sd[p + "attn.qkv." + s];
                hf[o + "attention.attention.query." + s] = qkv.narrow(0, 0, width).contiguous();
                hf[o + "attention.attention.key." + s] = qkv.narrow(0, width, width).contiguous();
                hf[o + "attention.attention.value." + s] = qkv.narrow(0, 2 * width, width).contiguous();
                hf[o + "attention.output.dense." + s] = sd[p + "attn.proj." + s];
                hf[o + "layernorm_before." + s] = sd[p + "norm1." + s];
                hf[o + "layernorm_after." + s] = sd[p + "norm2." + s];
                hf[o + "intermediate.dense." + s] = sd[p + "mlp.fc1." + s];
                hf[o + "output.dense." + s] = sd[p + "mlp.fc2." + s];
            }
        }
        return hf;
    }

    /// <remarks>
    /// PyBridge's torch.save writer records a view's storage offset but writes only the view's bytes, so every tensor is
    /// cloned into its own storage first (as <c>state_dict()</c> tensors of separate parameters are).
    /// </remarks>
    public static void Write(Dictionary<string, Tensor> sd, string path, CheckpointFormat format)
    {
        sd = sd.ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var fs = File.Create(path);
        if (format == CheckpointFormat.Safetensors) Safetensors.SaveStateDict(fs, sd, leaveOpen: true);
        else PyTorchPickler.PickleStateDict(fs, new Hashtable(sd), leaveOpen: true);
    }

    /// <summary>A config.json as Hugging Face writes it (only the fields the importer reads, plus a few).</summary>
    public static void WriteHfConfig(string dir, int heads, double eps, int classes) =>
        File.WriteAllText(Path.Combine(dir, "config.json"),
            $"{{\"model_type\": \"vit\", \"num_attention_heads\": {heads}, \"layer_norm_eps\": {eps.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}, " +
            $"\"hidden_act\": \"gelu\", \"id2label\": {{{string.Join(", ", Enumerable.Range(0, classes).Select(i => $"\"{i}\": \"c{i}\""))}}}}}");

    /// <summary>Real CIFAR-10 test images, normalised as the trainer does (CIFAR mean/std): [n, 3, 32, 32].</summary>
    public static Tensor CifarBatch(int n, int offset = 0)
    {
        var d = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, offset + n);
        var data = new ImageTensorData(d.Pixels.Select(b => (float)b).ToArray(), d.Labels.Select(l => (int)l).ToArray(), 3, 32);
        var o = new ViTTrainingOptions();
        var (x, _) = TrainingLoop.MakeBatch(data, Enumerable.Range(offset, n).ToArray(), o, null, CPU);
        return x;
    }

    /// <summary>The smallest GOHSP schedule (1 soft-pruning and 1 fine-tuning epoch): for tests about plumbing, not accuracy.</summary>
    public static GohspPruningEstimator.Options TinyGohsp(double sparsity) => new()
    {
        Sparsity = sparsity, HeadPruningFraction = 0.25, CalibrationImages = 32,
        SoftPruning = new() { Epochs = 1, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 1e-3, MinLearningRate = 1e-3, WarmupEpochs = 0 },
        FineTune = new() { Epochs = 1, NumberOfThreads = 2, Device = ViTDevice.Cpu, LearningRate = 5e-4, WarmupEpochs = 0 },
    };

    /// <summary>A zip laid out like torch.save output whose data.pkl is <paramref name="pickle"/>.</summary>
    public static void WriteTorchZip(string path, byte[] pickle)
    {
        using var fs = File.Create(path);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        using (var w = new StreamWriter(zip.CreateEntry("archive/version").Open())) w.Write("3\n");
        using (var s = zip.CreateEntry("archive/data.pkl").Open()) s.Write(pickle);
    }

    /// <summary>
    /// The bytes Python's pickle writes for an object whose __reduce__ returns (module.name, (arg,)): protocol 2 uses
    /// GLOBAL, protocol 4 uses STACK_GLOBAL with memoised string constants inside a frame.
    /// </summary>
    public static byte[] ReducePickle(string module, string name, string arg, int protocol)
    {
        var b = new List<byte> { 0x80, (byte)protocol };
        var body = new List<byte>();
        if (protocol >= 4)
        {
            Unicode(body, module); body.Add(0x94);
            Unicode(body, name); body.Add(0x94);
            body.Add(0x93); body.Add(0x94);                 // STACK_GLOBAL, MEMOIZE
            Unicode(body, arg); body.Add(0x94);
            body.Add(0x85); body.Add(0x94);                 // TUPLE1, MEMOIZE
            body.Add((byte)'R'); body.Add(0x94);            // REDUCE, MEMOIZE
            body.Add((byte)'.');
            b.Add(0x95); b.AddRange(BitConverter.GetBytes((ulong)body.Count)); // FRAME
        }
        else
        {
            body.Add((byte)'c'); body.AddRange(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));
            body.Add((byte)'q'); body.Add(0);
            var a = Encoding.UTF8.GetBytes(arg);
            body.Add((byte)'X'); body.AddRange(BitConverter.GetBytes(a.Length)); body.AddRange(a);
            body.Add((byte)'q'); body.Add(1);
            body.Add(0x85); body.Add((byte)'q'); body.Add(2);
            body.Add((byte)'R'); body.Add((byte)'q'); body.Add(3);
            body.Add((byte)'.');
        }
        b.AddRange(body);
        return b.ToArray();

        static void Unicode(List<byte> o, string s)
        {
            var u = Encoding.UTF8.GetBytes(s);
            o.Add(0x8c); o.Add((byte)u.Length); o.AddRange(u);
        }
    }
}
