using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

public sealed partial class VisionTransformerModel
{
    /// <summary>
    /// Writes the architecture followed by the weights (TorchSharp's <c>Module.save</c> format) to a stream.
    /// This is the payload stored inside an ML.NET model zip.
    /// </summary>
    public void Save(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        Architecture.Write(writer);
        var kept = KeptHeads;
        writer.Write((int)Precision | (kept is null ? 0 : HeadMaskFlag));
        if (kept is not null)
            foreach (var heads in kept)
            {
                writer.Write(heads.Count);
                foreach (int h in heads) writer.Write(h);
            }
        save(writer); // TorchSharp copies device tensors to the CPU as it writes them
    }

    /// <summary>Reads a model written by <see cref="Save"/>. Throws <see cref="InvalidDataException"/> on corrupted input.</summary>
    public static VisionTransformerModel Load(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ViTArchitecture arch;
        int precision;
        int[][]? kept = null;
        try
        {
            arch = ViTArchitecture.Read(reader);
            CheckFitsStream(arch, reader.BaseStream);
            precision = reader.ReadInt32();
            if ((precision & HeadMaskFlag) != 0)
            {
                precision &= ~HeadMaskFlag;
                kept = new int[arch.Depth][];
                for (int b = 0; b < arch.Depth; b++)
                {
                    int n = reader.ReadInt32();
                    if (n < 1 || n > arch.Blocks[b].Heads) throw new InvalidDataException($"Block {b} keeps {n} heads of {arch.Blocks[b].Heads}.");
                    kept[b] = new int[n];
                    for (int i = 0; i < n; i++)
                        if ((kept[b][i] = reader.ReadInt32()) is var h && (h < 0 || h >= arch.Blocks[b].Heads))
                            throw new InvalidDataException($"Block {b} head mask names head {h} of {arch.Blocks[b].Heads}.");
                }
            }
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("The ViT model data is truncated.", e);
        }
        var model = new VisionTransformerModel(arch, seed: 0);
        try
        {
            model.load(reader, strict: true);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            model.Dispose();
            throw new InvalidDataException("The ViT weights are corrupted or do not match the stored architecture: " + e.Message, e);
        }
        model.Precision = Enum.IsDefined(typeof(ComputePrecision), precision) ? (ComputePrecision)precision : ComputePrecision.Float32;
        if (kept is not null) model.SetHeadMasks(kept);
        return model;
    }

    /// <summary>
    /// Before a model is built from a stored architecture: its float32 weights (4 bytes per parameter, counted in floating point so
    /// that absurd dimensions cannot overflow) must fit in what is left of a seekable stream. A crafted file that claims, say,
    /// EmbedDim = 2²⁸ is refused here instead of allocating gigabytes.
    /// </summary>
    private static void CheckFitsStream(ViTArchitecture a, Stream stream)
    {
        if (!stream.CanSeek) return;
        double d = a.EmbedDim, tokens = (double)(a.ImageSize / a.PatchSize) * (a.ImageSize / a.PatchSize) + 1;
        double parameters = (double)a.Channels * a.PatchSize * a.PatchSize * d + d * tokens + d * a.NumClasses;
        foreach (var b in a.Blocks)
            parameters += d * ((double)b.Heads * (2.0 * b.QkDim + b.VDim)) + (double)b.Heads * b.VDim * d + 2.0 * d * b.MlpHidden;
        long left = stream.Length - stream.Position;
        if (parameters * 4 > left)
            throw new InvalidDataException(
                $"The stored architecture {a} needs at least {parameters * 4:N0} bytes of weights, but only {left:N0} bytes follow it.");
    }

    // High bit of the saved precision field: a head-mask section follows (files without it load as before).
    private const int HeadMaskFlag = 0x100;

    /// <summary>A deep copy (same architecture, copied weights and head masks) on the same device.</summary>
    public VisionTransformerModel Clone()
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) Save(w);
        ms.Position = 0;
        using var r = new BinaryReader(ms);
        var copy = Load(r);
        var device = parameters().First().device;
        if (device.type != DeviceType.CPU) copy.to(device);
        return copy;
    }
}
