// An ML.NET app that uses Microsoft.ML.Gohsp the way its README shows, from the NuGet package:
// image files in a folder per class → LoadRawImageBytes → train a ViT and prune it with GOHSP → save →
// load in a fresh MLContext → predict from an image file path.
// usage: GohspConsumer <cifar-10 folder> <work folder>; exit code 0 when every check holds.
using System.Diagnostics;
using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Training;
using SkiaSharp;

if (args.Length != 2) { Console.Error.WriteLine("usage: GohspConsumer <cifar-10 folder> <work folder>"); return 2; }
string cifar = args[0], work = Path.GetFullPath(args[1]);
var failures = new List<string>();
void Check(bool ok, string what) { Console.WriteLine($"{(ok ? "ok  " : "FAIL")} {what}"); if (!ok) failures.Add(what); }

// 1. A folder-per-class tree of PNG files: 4 real CIFAR-10 images per class, some grayscale, some RGBA, some 48×48.
string images = Path.Combine(work, "images");
if (Directory.Exists(images)) Directory.Delete(images, recursive: true);
var set = Cifar10.Read(cifar, Cifar10Split.Train, 400);
var perClass = new int[set.ClassNames.Count];
int written = 0;
for (int i = 0; i < set.Count && written < 4 * perClass.Length; i++)
{
    int label = set.Labels[i];
    if (perClass[label] == 4) continue;
    int k = perClass[label]++;
    var dir = Directory.CreateDirectory(Path.Combine(images, set.ClassNames[label])).FullName;
    WritePng(set.GetImage(i), Path.Combine(dir, $"{i:D5}.png"), gray: k == 1 && label % 2 == 0, rgba: k == 2 && label % 2 == 1, size: k == 3 ? 48 : 32);
    written++;
}
Console.WriteLine($"{written} PNG files in {images}");

// 2. The README's pipeline: one row per file (its folder is the label), encoded bytes in, the pruned ViT out.
var ml = new MLContext(seed: 1);
var epochLines = new List<string>();
ml.Log += (_, e) => { if (e.Kind >= Microsoft.ML.Runtime.ChannelMessageKind.Info && e.Message.Contains("epoch")) lock (epochLines) epochLines.Add(e.Message); };
var rows = Directory.EnumerateFiles(images, "*.png", SearchOption.AllDirectories)
    .Select(f => new ImageFile { ImagePath = f, Label = Path.GetFileName(Path.GetDirectoryName(f)!) }).ToList();
var data = ml.Data.LoadFromEnumerable(rows);
var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
    .Append(ml.Transforms.LoadRawImageBytes("ImageBytes", imageFolder: null, inputColumnName: "ImagePath"))
    .Append(ml.Transforms.GohspPrune(
        new GohspPruningEstimator.Options
        {
            Sparsity = 0.5, CalibrationImages = 32,
            SoftPruning = new ViTTrainingOptions { Epochs = 1, NumberOfThreads = 2, WarmupEpochs = 0 },
            FineTune = new ViTTrainingOptions { Epochs = 1, NumberOfThreads = 2, WarmupEpochs = 0 },
        },
        ml.MulticlassClassification.Trainers.ViTClassification(new ViTClassificationTrainer.Options
        {
            ImageColumnName = "ImageBytes", ArchitecturePreset = "cifar-micro", Epochs = 1, BatchSize = 16, NumberOfThreads = 2,
        })))
    .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedClass", "PredictedLabel"));
var sw = Stopwatch.StartNew();
var model = pipeline.Fit(data);
Console.WriteLine($"Fit: {sw.Elapsed.TotalSeconds:F1} s");
Check(epochLines.Count >= 3, $"MLContext.Log reported epoch summaries at Info level ({epochLines.Count} lines, e.g. \"{epochLines.FirstOrDefault()}\")");
var vits = model.OfType<MulticlassPredictionTransformer<ViTModelParameters>>().ToList();
Check(vits.Count == 1 && vits[0].Model.PruningReport is not null, "the fitted pipeline holds one ViT, the pruned one");
var metrics = ml.MulticlassClassification.Evaluate(model.Transform(data));
Check(metrics.MicroAccuracy is >= 0 and <= 1 && metrics.ConfusionMatrix.NumberOfClasses == 10, $"Evaluate works (training accuracy {metrics.MicroAccuracy:P1})");

// 3. Save: one ViT in the zip, of the pruned size.
string zip = Path.Combine(work, "pruned-vit.zip");
ml.Model.SaveAtomically(model, data.Schema, zip);
using (var archive = ZipFile.OpenRead(zip))
{
    int weights = archive.Entries.Count(e => e.Name == "TSModel");
    long prunedBytes = vits[0].Model.ParameterCount * sizeof(float);
    long zipBytes = new FileInfo(zip).Length;
    Check(weights == 1, $"the zip holds {weights} ViT weight stream(s)");
    Check(Math.Abs(zipBytes - prunedBytes) <= 0.10 * prunedBytes,
        $"the zip ({zipBytes:N0} bytes) is within 10% of the pruned weights ({prunedBytes:N0} bytes = {vits[0].Model.ParameterCount:N0} parameters)");
}

// 4. Load in a fresh MLContext and predict from an image file path.
var fresh = new MLContext();
var loaded = fresh.Model.Load(zip, out _);
var before = ml.Model.CreatePredictionEngine<ImageFile, Prediction>(model);
var after = fresh.Model.CreatePredictionEngine<ImageFile, Prediction>(loaded);
foreach (var file in rows.Take(6))
{
    var input = new ImageFile { ImagePath = file.ImagePath, Label = "" };
    var a = before.Predict(input);
    var b = after.Predict(input);
    bool same = a.Score.SequenceEqual(b.Score) && a.PredictedClass == b.PredictedClass;
    Check(same && Math.Abs(b.Score.Sum() - 1) < 1e-4 && set.ClassNames.Contains(b.PredictedClass),
        $"{Path.GetRelativePath(images, file.ImagePath)} → {b.PredictedClass} ({b.Score.Max():P0}), same after reload");
}

// 5. The TorchSharp natives this app loaded are the ones its own build put beside it (patched where the host needs it).
// On a host whose libstdc++ predates GCC 13 (Debian 12), the package's buildTransitive targets put the shim beside it.
string native = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native");
if (OperatingSystem.IsLinux())
{
    string stdcxx = new[] { "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6" }.FirstOrDefault(File.Exists) ?? "";
    bool oldHost = stdcxx != "" && !System.Text.Encoding.ASCII.GetString(File.ReadAllBytes(stdcxx)).Contains("GLIBCXX_3.4.32\0");
    Check(File.Exists(Path.Combine(native, "libLibTorchSharp.so")) && File.Exists(Path.Combine(native, "libstdcxx_compat.so")) == oldHost,
        oldHost ? "the package's build step patched TorchSharp's natives for this host's libstdc++ (libstdcxx_compat.so beside libLibTorchSharp.so)"
                : "this host's libstdc++ is new enough: TorchSharp's natives are left as shipped");
}

#if MLNET_TORCHSHARP
// 6. ML.NET's own TorchSharp package in the same app (test/consumer-mlnet6 only): one of its trainers trains too, and
//    the ViT loaded above still predicts afterwards.
MLNetTorchSharp.TrainObjectDetection(work, Check);
var again = after.Predict(new ImageFile { ImagePath = rows[0].ImagePath, Label = "" });
Check(again.Score.SequenceEqual(before.Predict(new ImageFile { ImagePath = rows[0].ImagePath, Label = "" }).Score),
    "the reloaded ViT predicts the same after ML.NET's TorchSharp trainer ran in the same process");
#endif

// 7. The Microsoft.ML this app runs on is the one ./build.sh asked for (GOHSP_EXPECT_MLNET), not another that NuGet picked.
string mlnet = typeof(MLContext).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
    .Cast<System.Reflection.AssemblyInformationalVersionAttribute>().Single().InformationalVersion;
if (Environment.GetEnvironmentVariable("GOHSP_EXPECT_MLNET") is { Length: > 0 } expectedMLNet)
    Check(mlnet.StartsWith(expectedMLNet + "+", StringComparison.Ordinal) || mlnet == expectedMLNet, $"the app runs on Microsoft.ML {mlnet} (expected {expectedMLNet})");
Console.WriteLine(failures.Count == 0 ? "consumer app: all checks passed" : $"consumer app: {failures.Count} check(s) failed");
return failures.Count == 0 ? 0 : 1;

// Written at the target size directly (bilinear): no SkiaSharp drawing API, which differs between the SkiaSharp 2.88
// and 3.x that ML.NET 5 and 6 bring.
static void WritePng(ReadOnlySpan<byte> planar, string path, bool gray, bool rgba, int size)
{
    const int s = 32;
    int n = size * size;
    using var bmp = new SKBitmap(new SKImageInfo(size, size, gray ? SKColorType.Gray8 : SKColorType.Rgba8888, rgba ? SKAlphaType.Unpremul : SKAlphaType.Opaque));
    var px = new byte[bmp.ByteCount];
    for (int i = 0; i < n; i++)
    {
        float sy = Math.Clamp((i / size + 0.5f) * s / size - 0.5f, 0, s - 1), sx = Math.Clamp((i % size + 0.5f) * s / size - 0.5f, 0, s - 1);
        int y0 = (int)sy, x0 = (int)sx, y1 = Math.Min(y0 + 1, s - 1), x1 = Math.Min(x0 + 1, s - 1);
        float fy = sy - y0, fx = sx - x0;
        var rgb = new byte[3];
        for (int c = 0; c < 3; c++)
        {
            int p = c * s * s;
            rgb[c] = (byte)Math.Round((1 - fy) * ((1 - fx) * planar[p + y0 * s + x0] + fx * planar[p + y0 * s + x1])
                                    + fy * ((1 - fx) * planar[p + y1 * s + x0] + fx * planar[p + y1 * s + x1]));
        }
        if (gray) px[i] = (byte)((299 * rgb[0] + 587 * rgb[1] + 114 * rgb[2]) / 1000);
        else { px[4 * i] = rgb[0]; px[4 * i + 1] = rgb[1]; px[4 * i + 2] = rgb[2]; px[4 * i + 3] = rgba ? (byte)230 : (byte)255; }
    }
    System.Runtime.InteropServices.Marshal.Copy(px, 0, bmp.GetPixels(), px.Length);
    using var encoded = bmp.Encode(SKEncodedImageFormat.Png, 100);
    File.WriteAllBytes(path, encoded.ToArray());
}

internal sealed class ImageFile
{
    public string ImagePath { get; set; } = "";
    public string Label { get; set; } = "";
}

internal sealed class Prediction
{
    public float[] Score { get; set; } = [];
    public string PredictedClass { get; set; } = "";
}
