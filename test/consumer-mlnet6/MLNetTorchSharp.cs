// ML.NET's own TorchSharp trainers (Microsoft.ML.TorchSharp) in the same app as Microsoft.ML.Gohsp: one TorchSharp, one
// libtorch, two libraries that train with it.
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.TorchSharp;
using SkiaSharp;

internal static class MLNetTorchSharp
{
    /// <summary>
    /// Trains (or, on TorchSharp 0.107, runs as far as it gets: see the catch below) ML.NET's ObjectDetection trainer (AutoFormerV2, Microsoft.ML.TorchSharp) for one epoch on a few images
    /// with boxes, then scores them. Its pretrained backbone is a download (aka.ms/mlnet-resources) that this app cannot
    /// make; ML.NET looks for it in &lt;MLContext.TempFilePath&gt;/mlnet/ first and loads it non-strictly, so an empty
    /// TorchSharp state dict placed there makes it train from its random initial weights, without a download.
    /// </summary>
    public static void TrainObjectDetection(string work, Action<bool, string> check)
    {
        string images = Directory.CreateDirectory(Path.Combine(work, "boxes")).FullName;
        var rows = new List<BoxRow>();
        for (int i = 0; i < 4; i++)
        {
            // a 64×64 image with a bright square (the object) on a dark background
            using var bmp = new SKBitmap(new SKImageInfo(64, 64, SKColorType.Rgba8888, SKAlphaType.Opaque));
            var px = new byte[bmp.ByteCount];
            int x0 = 8 + 8 * i, y0 = 12 + 4 * i, side = 24;
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                {
                    bool inside = x >= x0 && x < x0 + side && y >= y0 && y < y0 + side;
                    int p = 4 * (64 * y + x);
                    px[p] = inside ? (byte)230 : (byte)20; px[p + 1] = inside ? (byte)(i % 2 == 0 ? 200 : 40) : (byte)20; px[p + 2] = 30; px[p + 3] = 255;
                }
            System.Runtime.InteropServices.Marshal.Copy(px, 0, bmp.GetPixels(), px.Length);
            string file = Path.Combine(images, $"box{i}.png");
            using (var png = bmp.Encode(SKEncodedImageFormat.Png, 100)) File.WriteAllBytes(file, png.ToArray());
            rows.Add(new BoxRow { ImagePath = file, Labels = [i % 2 == 0 ? "yellow" : "red"], Box = [x0, y0, side, side] });
        }

        var ml = new MLContext(seed: 1) { TempFilePath = Directory.CreateDirectory(Path.Combine(work, "mlnet-temp")).FullName };
        string weights = Path.Combine(Directory.CreateDirectory(Path.Combine(ml.TempFilePath, "mlnet")).FullName, "autoformer_11m_torchsharp.bin");
        using (var empty = global::TorchSharp.torch.nn.Sequential()) empty.save(weights);

        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Labels")
            .Append(ml.Transforms.LoadImages("Image", imageFolder: null, inputColumnName: nameof(BoxRow.ImagePath)))
            .Append(ml.MulticlassClassification.Trainers.ObjectDetection(labelColumnName: "Labels", boundingBoxColumnName: "Box", imageColumnName: "Image", maxEpoch: 1))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedLabel"));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        ITransformer model;
        try
        {
            model = pipeline.Fit(data);
        }
        catch (MissingMethodException e) when (e.Message.Contains("TorchSharp", StringComparison.Ordinal) || e.StackTrace?.Contains("Microsoft.ML.TorchSharp.", StringComparison.Ordinal) == true)
        {
            // Microsoft.ML.TorchSharp 0.24.0 is compiled against TorchSharp 0.102; this library needs 0.107, and NuGet gives
            // the app one TorchSharp, the higher. AutoFormerV2's forward calls an overload 0.107 no longer has. What ran
            // before it is checked: the trainer read the data, built its TorchSharp module on 0.107, loaded the state file
            // and entered its forward pass.
            bool reachedForward = e.StackTrace?.Contains("Microsoft.ML.TorchSharp.AutoFormerV2.AutoFormerV2.forward", StringComparison.Ordinal) == true;
            check(reachedForward, $"ML.NET's ObjectDetection trainer (Microsoft.ML.TorchSharp 0.24.0) built AutoFormerV2 on TorchSharp 0.107 and ran into its forward pass, " +
                $"where it stops: KNOWN INCOMPATIBILITY, {e.GetType().Name}: {e.Message}");
            return;
        }
        double fit = sw.Elapsed.TotalSeconds;
        var scores = model.Transform(data).GetColumn<float[]>("Score").ToList();
        check(scores.Count == rows.Count, $"ML.NET's ObjectDetection trainer (Microsoft.ML.TorchSharp, AutoFormerV2) trained 1 epoch from random weights in {fit:F1} s and scored {scores.Count} images");
    }

    private sealed class BoxRow
    {
        public string ImagePath { get; set; } = "";
        public string[] Labels { get; set; } = [];
        public float[] Box { get; set; } = [];
    }
}
