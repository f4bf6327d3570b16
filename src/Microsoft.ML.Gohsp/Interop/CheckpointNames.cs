using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>Parameter naming of a pretrained checkpoint.</summary>
public enum CheckpointNaming
{
    /// <summary>timm (<c>patch_embed.proj</c>, <c>cls_token</c>, <c>pos_embed</c>, <c>blocks.N.attn.qkv</c>, …, <c>head</c>): also this library's own names.</summary>
    Timm = 0,
    /// <summary>Hugging Face <c>ViTForImageClassification</c> (<c>vit.embeddings…</c>, <c>vit.encoder.layer.N…</c>, <c>classifier</c>).</summary>
    HuggingFace = 1,
}

/// <summary>
/// Maps a checkpoint's keys to this library's (timm) names. Hugging Face's separate query/key/value projections are
/// concatenated into the fused <c>qkv</c> (rows <c>[q | k | v]</c>, head-major inside each, which is both libraries' layout).
/// </summary>
internal static partial class CheckpointNames
{
    /// <summary>Keys that are part of a checkpoint but not of the classifier and are dropped (with a log line).</summary>
    private static readonly string[] IgnoredHfPrefixes = ["vit.pooler.", "vit.embeddings.mask_token"];

    [GeneratedRegex(@"^vit\.encoder\.layer\.(\d+)\.(.+)$")]
    private static partial Regex HfLayer();

    private static readonly Dictionary<string, string> HfTop = new(StringComparer.Ordinal)
    {
        ["vit.embeddings.patch_embeddings.projection.weight"] = "patch_embed.proj.weight",
        ["vit.embeddings.patch_embeddings.projection.bias"] = "patch_embed.proj.bias",
        ["vit.embeddings.cls_token"] = "cls_token",
        ["vit.embeddings.position_embeddings"] = "pos_embed",
        ["vit.layernorm.weight"] = "norm.weight",
        ["vit.layernorm.bias"] = "norm.bias",
        ["classifier.weight"] = "head.weight",
        ["classifier.bias"] = "head.bias",
    };

    private static readonly Dictionary<string, string> HfBlock = new(StringComparer.Ordinal)
    {
        ["layernorm_before"] = "norm1",
        ["attention.output.dense"] = "attn.proj",
        ["layernorm_after"] = "norm2",
        ["intermediate.dense"] = "mlp.fc1",
        ["output.dense"] = "mlp.fc2",
    };

    /// <summary>Removes the <c>module.</c> prefix that (Distributed)DataParallel puts on every key.</summary>
    public static void StripDataParallelPrefix(Dictionary<string, Tensor> sd)
    {
        const string prefix = "module.";
        if (sd.Count == 0 || !sd.Keys.All(k => k.StartsWith(prefix, StringComparison.Ordinal))) return;
        foreach (var k in sd.Keys.ToList())
        {
            sd[k[prefix.Length..]] = sd[k];
            sd.Remove(k);
        }
    }

    /// <summary>Detects the naming; throws <see cref="InvalidDataException"/> for a non-ViT or a distilled DeiT checkpoint.</summary>
    public static CheckpointNaming Detect(IReadOnlyDictionary<string, Tensor> sd, string source)
    {
        if (sd.ContainsKey("dist_token") || sd.Keys.Any(k => k.StartsWith("head_dist.", StringComparison.Ordinal)))
            throw new InvalidDataException(
                $"'{source}' is a distilled DeiT (it has 'dist_token'/'head_dist'): the distillation-token variant is not supported. " +
                "Use the non-distilled model (e.g. timm 'deit_small_patch16_224', not 'deit_small_distilled_patch16_224').");
        if (sd.Keys.Any(k => k.StartsWith("deit.", StringComparison.Ordinal)))
            throw new InvalidDataException(
                $"'{source}' is a Hugging Face DeiT checkpoint ('deit.' keys): its embeddings always carry a distillation token, which is " +
                "not supported. Use the timm checkpoint of the same model, or a Hugging Face ViTForImageClassification.");
        if (sd.Keys.Any(k => k.StartsWith("vit.embeddings.", StringComparison.Ordinal))) return CheckpointNaming.HuggingFace;
        if (sd.ContainsKey("patch_embed.proj.weight") || sd.ContainsKey("cls_token")) return CheckpointNaming.Timm;
        throw new InvalidDataException(
            $"'{source}' is not a ViT/DeiT checkpoint: expected timm keys ('patch_embed.proj.weight', 'cls_token', 'pos_embed', " +
            $"'blocks.0.attn.qkv.weight', …) or Hugging Face ViT keys ('vit.embeddings.patch_embeddings.projection.weight', …); " +
            $"found {sd.Count} tensors such as {string.Join(", ", sd.Keys.Order(StringComparer.Ordinal).Take(5).Select(k => $"'{k}'"))}.");
    }

    /// <summary>
    /// Returns the state dict under timm names. Tensors are moved (not copied) except the concatenated qkv; the input
    /// dictionary is emptied of the moved entries and what is left in it (unmapped keys) is the caller's to report.
    /// </summary>
    public static Dictionary<string, Tensor> ToTimm(Dictionary<string, Tensor> sd, CheckpointNaming naming, Action<string>? log)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (naming == CheckpointNaming.Timm)
        {
            foreach (var k in sd.Keys.ToList())
                if (IsTimmKey(k)) { result[k] = sd[k]; sd.Remove(k); }
            return result;
        }

        foreach (var k in sd.Keys.ToList())
        {
            if (IgnoredHfPrefixes.Any(p => k.StartsWith(p, StringComparison.Ordinal)))
            {
                log?.Invoke($"Ignoring '{k}' (not used by image classification).");
                sd[k].Dispose();
                sd.Remove(k);
                continue;
            }
            if (HfTop.TryGetValue(k, out var top)) { Move(sd, k, result, top); continue; }
            var m = HfLayer().Match(k);
            if (!m.Success) continue;
            string i = m.Groups[1].Value, rest = m.Groups[2].Value;
            foreach (var (hf, ours) in HfBlock)
                foreach (var suffix in new[] { ".weight", ".bias" })
                    if (rest == hf + suffix) Move(sd, k, result, $"blocks.{i}.{ours}{suffix}");
        }
        // q, k, v → fused qkv (only when all three are there; otherwise the missing one is reported by name)
        var layers = sd.Keys.Select(k => HfLayer().Match(k)).Where(m => m.Success).Select(m => m.Groups[1].Value).Distinct().ToList();
        foreach (var i in layers)
            foreach (var suffix in new[] { "weight", "bias" })
            {
                string Q(string p) => $"vit.encoder.layer.{i}.attention.attention.{p}.{suffix}";
                var present = new[] { "query", "key", "value" }.Where(p => sd.ContainsKey(Q(p))).ToList();
                if (present.Count == 0) continue;
                if (present.Count < 3)
                    throw new InvalidDataException(
                        $"The checkpoint (HuggingFace naming) is missing '{Q(new[] { "query", "key", "value" }.First(p => !present.Contains(p)))}' " +
                        $"(it has '{Q(present[0])}').");
                var (q, kk, v) = (sd[Q("query")], sd[Q("key")], sd[Q("value")]);
                if (q.dim() != kk.dim() || q.dim() != v.dim() || (q.dim() == 2 && (q.shape[1] != kk.shape[1] || q.shape[1] != v.shape[1])))
                    throw new InvalidDataException(
                        $"'{Q("query")}' {Shape(q)}, '{Q("key")}' {Shape(kk)} and '{Q("value")}' {Shape(v)} cannot be concatenated into one qkv projection.");
                result[$"blocks.{i}.attn.qkv.{suffix}"] = cat([q, kk, v], 0);
                foreach (var p in new[] { "query", "key", "value" }) { sd[Q(p)].Dispose(); sd.Remove(Q(p)); }
            }
        return result;
    }

    /// <summary>The HF key a timm key came from (for error messages).</summary>
    public static string Describe(string timmKey, CheckpointNaming naming)
    {
        if (naming == CheckpointNaming.Timm) return $"'{timmKey}'";
        var top = HfTop.FirstOrDefault(kv => kv.Value == timmKey).Key;
        if (top is not null) return $"'{top}'";
        var m = Regex.Match(timmKey, @"^blocks\.(\d+)\.(.+)\.(weight|bias)$");
        if (m.Success)
        {
            string i = m.Groups[1].Value, part = m.Groups[2].Value, s = m.Groups[3].Value;
            if (part == "attn.qkv") return $"'vit.encoder.layer.{i}.attention.attention.query/key/value.{s}'";
            var hf = HfBlock.FirstOrDefault(kv => kv.Value == part).Key;
            if (hf is not null) return $"'vit.encoder.layer.{i}.{hf}.{s}'";
        }
        return $"'{timmKey}'";
    }

    internal static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    private static bool IsTimmKey(string k) =>
        k is "patch_embed.proj.weight" or "patch_embed.proj.bias" or "cls_token" or "pos_embed" or "norm.weight" or "norm.bias"
            or "head.weight" or "head.bias"
        || Regex.IsMatch(k, @"^blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$");

    private static void Move(Dictionary<string, Tensor> from, string key, Dictionary<string, Tensor> to, string newKey)
    {
        to[newKey] = from[key];
        from.Remove(key);
    }
}
