using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp.Data;
using Microsoft.ML.Gohsp.MLNet;
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
