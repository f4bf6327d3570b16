using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.VisionTransformer;

public sealed partial class VisionTransformerModel
{
    /// <summary>
    /// The heads each block keeps under the binary head mask Mᴴ (GOHSP stage 1), or null when the model has no mask.
    /// Masked heads' outputs are multiplied by 0; the mask is saved with the model.
    /// </summary>
    public IReadOnlyList<IReadOnlyList<int>>? KeptHeads
    {
        get
        {
            if (blocks.All(b => b.attn.HeadMask is null)) return null;
            return blocks.Select(b => (IReadOnlyList<int>)KeptHeadsOf(b.attn)).ToArray();
        }
    }

    private static int[] KeptHeadsOf(Attention attn)
    {
        if (attn.HeadMask is null) return Enumerable.Range(0, attn.Spec.Heads).ToArray();
        using var mask = attn.HeadMask.cpu();
        var values = mask.data<float>().ToArray();
        return Enumerable.Range(0, values.Length).Where(i => values[i] != 0).ToArray();
    }

    /// <summary>Applies the binary head mask Mᴴ: in block b only the heads in <paramref name="keptHeads"/>[b] contribute.</summary>
    /// <exception cref="ArgumentException">The list does not have one non-empty entry of valid head indices per block.</exception>
    public void SetHeadMasks(IReadOnlyList<IReadOnlyList<int>> keptHeads)
    {
        ArgumentNullException.ThrowIfNull(keptHeads);
        var a = Architecture;
        if (keptHeads.Count != a.Depth) throw new ArgumentException($"Expected kept heads for {a.Depth} blocks, got {keptHeads.Count}.", nameof(keptHeads));
        var device = parameters().First().device;
        for (int b = 0; b < a.Depth; b++)
        {
            if (keptHeads[b].Count == 0) throw new ArgumentException($"Block {b} would keep no head.", nameof(keptHeads));
            var mask = new float[a.Blocks[b].Heads];
            foreach (int h in keptHeads[b])
            {
                if (h < 0 || h >= mask.Length) throw new ArgumentException($"Block {b} has no head {h} (it has {mask.Length}).", nameof(keptHeads));
                mask[h] = 1;
            }
            blocks[b].attn.HeadMask?.Dispose();
            blocks[b].attn.HeadMask = tensor(mask, device: device).DetachFromDisposeScope();
        }
    }

    /// <summary>Removes every head mask (all heads contribute again).</summary>
    public void ClearHeadMasks()
    {
        foreach (var b in blocks) { b.attn.HeadMask?.Dispose(); b.attn.HeadMask = null; }
    }
}
