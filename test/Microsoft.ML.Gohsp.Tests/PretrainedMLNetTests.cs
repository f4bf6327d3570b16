using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Tests;

public class PretrainedMLNetTests(ITestOutputHelper output)
{
    private static readonly string[] CifarNames = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    [Fact]
    public void TheTrainerFineTunesFromPretrainedWeightsWithANewHeadForItsClassCount()
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-pretrained-trainer-").FullName;
        using var source = new VisionTransformerModel(ViTArchitecture.CifarMicro(numClasses: 5), seed: 21);
        string path = Path.Combine(dir, "micro5.safetensors");
        InteropTestFiles.Write(InteropTestFiles.Timm(source), path, CheckpointFormat.Safetensors);

        var ml = new MLContext(1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("New classifier head") || e.Message.Contains("naming")) lock (log) log.Add(e.Message); };
        var train = Cifar10.ToDataView(ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 256));
        var o = TrainedModelFixture.SmallOptions();
        o.Architecture = null;
        o.ImageColumnName = "Pixels";
        o.PretrainedWeightsPath = path;
        o.PretrainedHeads = 4;
        o.Epochs = 1;
        o.LearningRate = 1e-9; o.MinLearningRate = 0; o.WeightDecay = 0; o.WarmupEpochs = 0; // (almost) no update: the start must be the checkpoint
        var model = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(ml.MulticlassClassification.Trainers.ViTClassification(o))
            .Fit(train);
        output.WriteLine(string.Join("\n", log));
        var vit = model.LastTransformer.Model.Model;
        vit.Architecture.Should().Be(ViTArchitecture.CifarMicro(numClasses: 10));
        log.Should().Contain(l => l.Contains("New classifier head: 10 classes (checkpoint: 5)"));
        foreach (var (k, v) in source.state_dict().Where(kv => !kv.Key.StartsWith("head.")))
        {
            using var d = (vit.state_dict()[k].cpu() - v).abs().max();
            d.ToDouble().Should().BeLessThan(1e-5, $"{k} starts from the checkpoint");
        }

        var both = TrainedModelFixture.SmallOptions();
        both.PretrainedWeightsPath = path;
        var act = () => ml.MulticlassClassification.Trainers.ViTClassification(both);
        act.Should().Throw<ArgumentException>().WithMessage("*either Architecture or PretrainedWeightsPath*");
        var missing = new ViTClassificationTrainer.Options { PretrainedWeightsPath = Path.Combine(dir, "nope.pth") };
        act = () => ml.MulticlassClassification.Trainers.ViTClassification(missing);
        act.Should().Throw<FileNotFoundException>().WithMessage("*PretrainedWeightsPath*nope.pth*");
        Directory.Delete(dir, true);
    }

    [Fact]
    public void APretrainedCheckpointBecomesAnMLNetModelThatScoresLikeTorchAndCanBeHandedToGohsp()
    {
        var dir = Directory.CreateTempSubdirectory("gohsp-pretrained-gohsp-").FullName;
        using var source = new VisionTransformerModel(ViTArchitecture.CifarMicro(), seed: 8);
        source.eval();
        string path = Path.Combine(dir, "model.safetensors");
        InteropTestFiles.Write(InteropTestFiles.HuggingFace(source), path, CheckpointFormat.Safetensors);
        File.WriteAllText(Path.Combine(dir, "config.json"),
            "{\"num_attention_heads\": 4, \"layer_norm_eps\": 1e-06, \"hidden_act\": \"gelu\", \"id2label\": {" +
            string.Join(", ", CifarNames.Select((n, i) => $"\"{i}\": \"{n}\"")) + "}}");
        File.WriteAllText(Path.Combine(dir, "preprocessor_config.json"),
            "{\"image_mean\": [0.4914, 0.4822, 0.4465], \"image_std\": [0.247, 0.2435, 0.2616]}");

        var ml = new MLContext(1);
        var pretrained = ml.Model.LoadPretrainedViT(path);
        var p = pretrained.Model;
        p.Architecture.Should().Be(source.Architecture);
        p.Preprocessing.Mean.Should().Equal(0.4914f, 0.4822f, 0.4465f);
        p.Preprocessing.Std.Should().Equal(0.247f, 0.2435f, 0.2616f);

        // scores = softmax of the TorchSharp model on the same normalised images
        var testSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 8);
        var prefix = ml.Transforms.Conversion.MapValueToKey("Label", keyData: ml.Data.LoadFromEnumerable(CifarNames.Select(n => new NameRow { Label = n })))
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false));
        var test = prefix.Fit(Cifar10.ToDataView(ml, testSet)).Transform(Cifar10.ToDataView(ml, testSet));
        var scored = pretrained.Transform(test);
        var scores = scored.GetColumn<float[]>("Score").ToArray();
        var predicted = new VBuffer<ReadOnlyMemory<char>>();
        scored.Schema["PredictedLabel"].GetKeyValues(ref predicted);
        predicted.DenseValues().Select(v => v.ToString()).Should().Equal(CifarNames, "class names come from config.json's id2label");
        using (no_grad())
        {
            using var x = InteropTestFiles.CifarBatch(8);
            using var probs = source.forward(x).softmax(1);
            var expected = probs.data<float>().ToArray();
            scores.SelectMany(s => s).Zip(expected, (a, b) => Math.Abs(a - b)).Max().Should().BeLessThan(1e-5f);
        }

        // hand it to GOHSP directly (tiny schedule: the point is that the imported model is accepted and pruned)
        var train = Cifar10.ToDataView(ml, Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 256));
        var trainView = prefix.Fit(train).Transform(train);
        var pruned = ml.Transforms.GohspPrune(InteropTestFiles.TinyGohsp(0.4), pretrained).Fit(trainView);
        output.WriteLine(pruned.Model.Architecture.ToString());
        pruned.Model.PruningReport!.AchievedSparsity.Should().BeApproximately(0.4, 0.01);
        pruned.Model.Preprocessing.Should().Be(p.Preprocessing, "the pruned model keeps the checkpoint's normalisation");
        string zip = Path.Combine(dir, "pruned.zip");
        ml.Model.SaveAtomically(pruned, trainView.Schema, zip);
        // UseBatchScoring: the reloaded model scores in the same batches as the in-memory one, so the scores match exactly
        var reloaded = ((MulticlassPredictionTransformer<ViTModelParameters>)new MLContext().Model.Load(zip, out _)).UseBatchScoring();
        reloaded.Model.Architecture.Should().Be(pruned.Model.Architecture);
        reloaded.Transform(test).GetColumn<float[]>("Score").First().Should().Equal(pruned.Transform(test).GetColumn<float[]>("Score").First());

        var wrong = () => ml.Model.LoadPretrainedViT(path, new PretrainedViTOptions { ClassNames = ["a", "b"] });
        wrong.Should().Throw<ArgumentException>().WithMessage("*ClassNames has 2 names; the model has 10 classes*");
        Directory.Delete(dir, true);
    }

    private sealed class NameRow { public string Label { get; set; } }
}
