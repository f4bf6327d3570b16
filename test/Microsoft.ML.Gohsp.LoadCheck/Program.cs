// usage: Microsoft.ML.Gohsp.LoadCheck <model.zip> <cifar-10 folder> <count>
//        Microsoft.ML.Gohsp.LoadCheck <model.zip> --files <image file>...   (a model trained on encoded bytes, column "ImageBytes")
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Transforms.Image;

var ml = new MLContext();
var model = ml.Model.Load(args[0], out _);   // no registration call: the zip names the loader assembly
if (args[1] == "--files")
{
    var bytesEngine = ml.Model.CreatePredictionEngine<BytesRow, Scores>(model);
    Console.WriteLine(JsonSerializer.Serialize(args.Skip(2).Select(f => bytesEngine.Predict(new BytesRow { ImageBytes = File.ReadAllBytes(f) }).Score).ToArray()));
    return;
}
var test = Cifar10.Read(args[1], Cifar10Split.Test, int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
var engine = ml.Model.CreatePredictionEngine<Row, Scores>(model);
var result = Enumerable.Range(0, test.Count)
    .Select(i => engine.Predict(new Row { Image = Cifar10.CreateImage(test.GetImage(i)) }).Score)
    .ToArray();
Console.WriteLine(JsonSerializer.Serialize(result));

internal sealed class Row
{
    [ImageType(32, 32)] public MLImage Image { get; set; } = null!;
    public string Label { get; set; } = "";
}

internal sealed class BytesRow
{
    public byte[] ImageBytes { get; set; } = [];
    public string Label { get; set; } = "";
}

internal sealed class Scores
{
    public float[] Score { get; set; } = [];
}
