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
    /// <summary>
    /// Hugging Face DeiT: <c>DeiTForImageClassificationWithTeacher</c> (<c>deit.embeddings.distillation_token</c>,
    /// <c>cls_classifier</c>, <c>distillation_classifier</c>), <c>DeiTForImageClassification</c> (<c>classifier</c>) and
    /// <c>DeiTModel</c> (no head); the blocks are named as in <see cref="HuggingFace"/> under <c>deit.</c>.
    /// </summary>
    HuggingFaceDeiT = 2,
}

/// <summary>
/// Maps a checkpoint's keys to this library's (timm) names. Hugging Face's separate query/key/value projections are
/// concatenated into the fused <c>qkv</c> (rows <c>[q | k | v]</c>, head-major inside each, which is both libraries' layout).
/// </summary>
internal static partial class CheckpointNames
{
    /// <summary>Keys (after the model prefix) that are part of a checkpoint but not of the classifier and are dropped (with a log line).</summary>
    private static readonly string[] IgnoredHfPrefixes = ["pooler.", "embeddings.mask_token"];

    [GeneratedRegex(@"^(?:vit|deit)\.encoder\.layer\.(\d+)\.(.+)$")]
    private static partial Regex HfLayer();

    /// <summary>The key prefix of the Hugging Face base model: <c>vit.</c> or <c>deit.</c>.</summary>
    private static string HfPrefix(CheckpointNaming naming) => naming == CheckpointNaming.HuggingFaceDeiT ? "deit." : "vit.";

    /// <summary>Hugging Face keys outside the blocks → timm keys.</summary>
    private static Dictionary<string, string> HfTop(CheckpointNaming naming)
    {
        string p = HfPrefix(naming);
        var top = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [p + "embeddings.patch_embeddings.projection.weight"] = "patch_embed.proj.weight",
            [p + "embeddings.patch_embeddings.projection.bias"] = "patch_embed.proj.bias",
            [p + "embeddings.cls_token"] = "cls_token",
            [p + "embeddings.position_embeddings"] = "pos_embed",
            [p + "layernorm.weight"] = "norm.weight",
            [p + "layernorm.bias"] = "norm.bias",
            ["classifier.weight"] = "head.weight",
            ["classifier.bias"] = "head.bias",
        };
        if (naming == CheckpointNaming.HuggingFaceDeiT)
        {
            top[p + "embeddings.distillation_token"] = "dist_token";
            top["cls_classifier.weight"] = "head.weight";
            top["cls_classifier.bias"] = "head.bias";
            top["distillation_classifier.weight"] = "head_dist.weight";
            top["distillation_classifier.bias"] = "head_dist.bias";
        }
        return top;
    }

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

    /// <summary>
    /// A Hugging Face base model saved on its own (<c>ViTModel</c>/<c>DeiTModel</c>: <c>embeddings.…</c>, <c>encoder.layer.N…</c>,
    /// <c>layernorm</c> without a model prefix) gets the prefix its classification models use (<c>deit.</c> when the
    /// embeddings hold a distillation token, else <c>vit.</c>).
    /// </summary>
    public static void AddHfBaseModelPrefix(Dictionary<string, Tensor> sd)
    {
        if (!sd.Keys.Any(k => k.StartsWith("embeddings.patch_embeddings.", StringComparison.Ordinal))) return;
        string prefix = sd.ContainsKey("embeddings.distillation_token") ? "deit." : "vit.";
        foreach (var k in sd.Keys.ToList())
            if (k.StartsWith("embeddings.", StringComparison.Ordinal) || k.StartsWith("encoder.", StringComparison.Ordinal)
                || k.StartsWith("layernorm.", StringComparison.Ordinal) || k.StartsWith("pooler.", StringComparison.Ordinal))
            {
                sd[prefix + k] = sd[k];
                sd.Remove(k);
            }
    }

    /// <summary>Detects the naming; throws <see cref="InvalidDataException"/> for a checkpoint that is not a ViT/DeiT.</summary>
    public static CheckpointNaming Detect(IReadOnlyDictionary<string, Tensor> sd, string source)
    {
        if (sd.Keys.Any(k => k.StartsWith("deit.embeddings.", StringComparison.Ordinal))) return CheckpointNaming.HuggingFaceDeiT;
        if (sd.Keys.Any(k => k.StartsWith("vit.embeddings.", StringComparison.Ordinal))) return CheckpointNaming.HuggingFace;
        if (sd.ContainsKey("patch_embed.proj.weight") || sd.ContainsKey("cls_token")) return CheckpointNaming.Timm;
        throw new InvalidDataException(
            $"'{source}' is not a ViT/DeiT checkpoint: expected timm keys ('patch_embed.proj.weight', 'cls_token', 'pos_embed', " +
            $"'blocks.0.attn.qkv.weight', …) or Hugging Face ViT/DeiT keys ('vit.embeddings.patch_embeddings.projection.weight', " +
            $"'deit.embeddings.patch_embeddings.projection.weight', …); " +
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

        string hfPrefix = HfPrefix(naming);
        var hfTop = HfTop(naming);
        foreach (var k in sd.Keys.ToList())
        {
            if (IgnoredHfPrefixes.Any(p => k.StartsWith(hfPrefix + p, StringComparison.Ordinal)))
            {
                log?.Invoke($"Ignoring '{k}' (not used by image classification).");
                sd[k].Dispose();
                sd.Remove(k);
                continue;
            }
            if (hfTop.TryGetValue(k, out var top))
            {
                if (result.ContainsKey(top))
                    throw new InvalidDataException($"The checkpoint ({naming} naming) has both '{k}' and another key for '{top}' (e.g. 'classifier' and 'cls_classifier').");
                Move(sd, k, result, top);
                continue;
            }
            var m = HfLayer().Match(k);
            if (!m.Success || !k.StartsWith(hfPrefix, StringComparison.Ordinal)) continue;
            string i = m.Groups[1].Value, rest = m.Groups[2].Value;
            foreach (var (hf, ours) in HfBlock)
                foreach (var suffix in new[] { ".weight", ".bias" })
                    if (rest == hf + suffix) Move(sd, k, result, $"blocks.{i}.{ours}{suffix}");
        }
        // q, k, v → fused qkv (only when all three are there; otherwise the missing one is reported by name)
        var layers = sd.Keys.Where(k => k.StartsWith(hfPrefix, StringComparison.Ordinal)).Select(k => HfLayer().Match(k))
            .Where(m => m.Success).Select(m => m.Groups[1].Value).Distinct().ToList();
        foreach (var i in layers)
            foreach (var suffix in new[] { "weight", "bias" })
            {
                string Q(string p) => $"{hfPrefix}encoder.layer.{i}.attention.attention.{p}.{suffix}";
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
        string p = HfPrefix(naming);
        var top = HfTop(naming).FirstOrDefault(kv => kv.Value == timmKey).Key;
        if (top is not null) return $"'{top}'";
        var m = Regex.Match(timmKey, @"^blocks\.(\d+)\.(.+)\.(weight|bias)$");
        if (m.Success)
        {
            string i = m.Groups[1].Value, part = m.Groups[2].Value, s = m.Groups[3].Value;
            if (part == "attn.qkv") return $"'{p}encoder.layer.{i}.attention.attention.query/key/value.{s}'";
            var hf = HfBlock.FirstOrDefault(kv => kv.Value == part).Key;
            if (hf is not null) return $"'{p}encoder.layer.{i}.{hf}.{s}'";
        }
        return $"'{timmKey}'";
    }

    internal static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    private static bool IsTimmKey(string k) =>
        k is "patch_embed.proj.weight" or "patch_embed.proj.bias" or "cls_token" or "dist_token" or "pos_embed" or "norm.weight" or "norm.bias"
            or "head.weight" or "head.bias" or "head_dist.weight" or "head_dist.bias"
        || Regex.IsMatch(k, @"^blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$");

    private static void Move(Dictionary<string, Tensor> from, string key, Dictionary<string, Tensor> to, string newKey)
    {
        to[newKey] = from[key];
        from.Remove(key);
    }
}
