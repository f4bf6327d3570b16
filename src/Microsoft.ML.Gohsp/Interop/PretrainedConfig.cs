using System.Globalization;
using System.Text.Json;

namespace Microsoft.ML.Gohsp.Interop;

/// <summary>
/// What the JSON files beside a checkpoint say about it: Hugging Face <c>config.json</c> (<c>num_attention_heads</c>,
/// <c>layer_norm_eps</c>, <c>hidden_act</c>, <c>id2label</c>), timm hub <c>config.json</c> (<c>pretrained_cfg.mean/std</c>,
/// <c>label_names</c>) and Hugging Face <c>preprocessor_config.json</c> (<c>image_mean</c>, <c>image_std</c>). Every field is optional.
/// </summary>
internal sealed record PretrainedConfig(int? Heads, double? LayerNormEps, string? HiddenAct, IReadOnlyList<string>? ClassNames,
    float[]? Mean, float[]? Std, string? ConfigFile)
{
    public static PretrainedConfig ReadBeside(string checkpointPath)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(checkpointPath)) ?? ".";
        string config = Path.Combine(dir, "config.json"), pre = Path.Combine(dir, "preprocessor_config.json");
        int? heads = null; double? eps = null; string? act = null; IReadOnlyList<string>? names = null;
        float[]? mean = null, std = null;
        if (File.Exists(config))
        {
            using var doc = Parse(config);
            var root = doc.RootElement;
            if (root.TryGetProperty("num_attention_heads", out var h))
            {
                if (!h.TryGetInt32(out int hv) || hv < 1)
                    throw new InvalidDataException($"'{config}' beside the checkpoint has num_attention_heads = {h}; expected a positive whole number (the heads per block).");
                heads = hv;
            }
            if (root.TryGetProperty("layer_norm_eps", out var e) && e.TryGetDouble(out double ev)) eps = ev;
            if (root.TryGetProperty("hidden_act", out var a) && a.ValueKind == JsonValueKind.String) act = a.GetString();
            if (root.TryGetProperty("id2label", out var id2) && id2.ValueKind == JsonValueKind.Object)
            {
                var pairs = id2.EnumerateObject()
                    .Select(p => (Ok: int.TryParse(p.Name, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i), Index: i, Name: p.Value.ToString()))
                    .ToList();
                if (pairs.All(p => p.Ok) && pairs.Select(p => p.Index).Order().SequenceEqual(Enumerable.Range(0, pairs.Count)))
                    names = pairs.OrderBy(p => p.Index).Select(p => p.Name).ToArray();
            }
            else if (root.TryGetProperty("label_names", out var ln) && ln.ValueKind == JsonValueKind.Array)
                names = ln.EnumerateArray().Select(x => x.ToString()).ToArray();
            if (root.TryGetProperty("pretrained_cfg", out var cfg) && cfg.ValueKind == JsonValueKind.Object)
            {
                mean = Floats(cfg, "mean");
                std = Floats(cfg, "std");
            }
        }
        if (File.Exists(pre))
        {
            using var doc = Parse(pre);
            mean = Floats(doc.RootElement, "image_mean") ?? mean;
            std = Floats(doc.RootElement, "image_std") ?? std;
        }
        return new PretrainedConfig(heads, eps, act, names, mean, std, File.Exists(config) ? config : null);
    }

    private static JsonDocument Parse(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' beside the checkpoint is not valid JSON: {e.Message}", e); }
    }

    private static float[]? Floats(JsonElement e, string name) =>
        e.TryGetProperty(name, out var a) && a.ValueKind == JsonValueKind.Array && a.EnumerateArray().All(x => x.ValueKind == JsonValueKind.Number)
            ? a.EnumerateArray().Select(x => (float)x.GetDouble()).ToArray()
            : null;
}
