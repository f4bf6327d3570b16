using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Trains one small ViT on the real CIFAR-10 subset once for all tests that need a trained model.
/// Config: CifarMicro-like (96 wide, 4 blocks, 4 heads, MLP 192, patch 4), 4 epochs on the 5,085 training images, 2 threads.
/// </summary>
public sealed class TrainedModelFixture : IDisposable
{
    public MLContext Ml { get; } = new(seed: 1);
    public Cifar10Dataset TrainSet { get; }
    public Cifar10Dataset TestSet { get; }
    public IDataView Train { get; }
    public IDataView Test { get; }
    public ITransformer Model { get; }
    public MulticlassPredictionTransformer<ViTModelParameters> Predictor { get; }
    public List<ViTTrainingProgress> Progress { get; } = new();
    public List<string> Log { get; } = new();
    public string TempDir { get; } = Directory.CreateTempSubdirectory("gohsp-tests-").FullName;

    public static ViTClassificationTrainer.Options SmallOptions() => new()
    {
        Architecture = ViTArchitecture.CifarMicro(),
        Epochs = 4,
        BatchSize = 64,
        LearningRate = 2e-3,
        WarmupEpochs = 0.5,
        NumberOfThreads = 2,
        Device = ViTDevice.Cpu,
        Seed = 7,
    };

    public TrainedModelFixture()
    {
        TrainSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train);
        TestSet = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test);
        Train = Cifar10.ToDataView(Ml, TrainSet);
        Test = Cifar10.ToDataView(Ml, TestSet);
        Ml.Log += (_, e) => { if (e.Message.Contains("[dense]")) lock (Log) Log.Add(e.Message); };
        var o = SmallOptions();
        o.Progress = new SyncProgress<ViTTrainingProgress>(p => { lock (Progress) Progress.Add(p); });
        o.ImageColumnName = "Pixels";
        var pipeline = Ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(Ml.Transforms.ExtractPixels("Pixels", "Image", interleavePixelColors: false))
            .Append(Ml.MulticlassClassification.Trainers.ViTClassification(o));
        var chain = pipeline.Fit(Train);
        Model = chain;
        Predictor = chain.LastTransformer;
    }

    public void Dispose()
    {
        try { Directory.Delete(TempDir, true); } catch (IOException) { }
    }
}

/// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

/// <summary>One row for PredictionEngine tests.</summary>
public sealed class ImageRow
{
    [Microsoft.ML.Transforms.Image.ImageType(32, 32)]
    public MLImage Image { get; set; }
    public string Label { get; set; }
}

public sealed class ScoreRow
{
    public float[] Score { get; set; }
    public uint PredictedLabel { get; set; }
}

/// <summary>Checks shared by the model tests.</summary>
internal static class ModelChecks
{
    /// <summary>Asserts that two models give the same scores and labels, through PredictionEngine, on the first <paramref name="count"/> images.</summary>
    public static void SamePredictions(MLContext mlA, ITransformer a, MLContext mlB, ITransformer b, Cifar10Dataset images, int count)
    {
        var ea = mlA.Model.CreatePredictionEngine<ImageRow, ScoreRow>(a);
        var eb = mlB.Model.CreatePredictionEngine<ImageRow, ScoreRow>(b);
        for (int i = 0; i < count; i++)
        {
            var row = new ImageRow { Image = Cifar10.CreateImage(images.GetImage(i)), Label = "cat" };
            var pa = ea.Predict(row);
            var pb = eb.Predict(row);
            pb.Score.Should().Equal(pa.Score, $"image {i}");
            pb.PredictedLabel.Should().Be(pa.PredictedLabel);
        }
    }

    /// <summary>Bit-exact copies of every tensor of <paramref name="model"/>'s state.</summary>
    public static Dictionary<string, TorchSharp.torch.Tensor> Snapshot(VisionTransformer.VisionTransformerModel model) =>
        model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

    /// <summary>Asserts that <paramref name="dense"/> still equals <paramref name="snapshot"/> and that <paramref name="pruned"/> maps images to class scores.</summary>
    public static void DenseUntouchedAndPrunedRuns(VisionTransformer.VisionTransformerModel dense, Dictionary<string, TorchSharp.torch.Tensor> snapshot,
        VisionTransformer.VisionTransformerModel pruned)
    {
        foreach (var (k, v) in dense.state_dict()) TensorAssert.Same(v, snapshot[k]).Should().BeTrue($"the dense model is not modified ({k})");
        using var x = TorchSharp.torch.randn(2, 3, 32, 32);
        using var _ = TorchSharp.torch.no_grad();
        using var y = pruned.forward(x);
        y.shape.Should().Equal(2, dense.Architecture.NumClasses);
    }
}
