using Microsoft.ML;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Training;

namespace ImageClassification;

public static partial class MLModel
{
    /// <summary>What <see cref="Train"/> trains: the defaults are the README's (cifar-tiny, 30 epochs, half of it pruned).</summary>
    public sealed record TrainingSettings
    {
        /// <summary>The ViT architecture preset (cifar-micro, cifar-tiny, cifar-small, deit-tiny, ...).</summary>
        public string ArchitecturePreset { get; init; } = "cifar-tiny";

        /// <summary>Epochs of dense training.</summary>
        public int Epochs { get; init; } = 30;

        /// <summary>Epochs of GOHSP soft pruning and of fine-tuning, each.</summary>
        public int PruningEpochs { get; init; } = 5;

        /// <summary>Fraction of the prunable parameters GOHSP removes.</summary>
        public double Sparsity { get; init; } = 0.5;

        /// <summary>Images per training batch.</summary>
        public int BatchSize { get; init; } = 64;

        /// <summary>Seed of every random choice: the same folder and settings give the same model.</summary>
        public int Seed { get; init; } = 1;
    }

    /// <summary>
    /// Trains a ViT on a folder of images with one subfolder per class (<c>folder/cat/1.png</c>, ...), prunes it with GOHSP,
    /// saves the pruned model to <paramref name="outputModelPath"/> (never half-written) and returns it.
    /// </summary>
    /// <param name="folder">One subfolder per class, holding PNG, JPEG, BMP, GIF or WebP files.</param>
    /// <param name="outputModelPath">Where the model is saved; <see cref="ModelPath"/> when <see langword="null"/>.</param>
    /// <param name="settings">Architecture, epochs and sparsity; the defaults when <see langword="null"/>.</param>
    /// <param name="log">Receives one line per epoch (MLContext.Log at Info level), when given.</param>
    public static ITransformer Train(string folder, string? outputModelPath = null, TrainingSettings? settings = null, Action<string>? log = null)
    {
        settings ??= new TrainingSettings();
        var ml = new MLContext(settings.Seed);
        if (log is not null) ml.Log += (_, e) => { if (e.Kind >= Microsoft.ML.Runtime.ChannelMessageKind.Info) log(e.Message); };
        var data = ml.Data.LoadFromEnumerable(LoadImagesFromFolder(folder));
        var model = BuildPipeline(ml, settings).Fit(data);
        ml.Model.SaveAtomically(model, data.Schema, outputModelPath ?? ModelPath);
        return model;
    }

    /// <summary>The training pipeline: label to key, a ViT trained and pruned by GOHSP as one estimator, key back to label.</summary>
    public static IEstimator<ITransformer> BuildPipeline(MLContext mlContext, TrainingSettings settings)
    {
        var pruning = new GohspPruningEstimator.Options
        {
            Sparsity = settings.Sparsity,
            SoftPruning = new ViTTrainingOptions { Epochs = settings.PruningEpochs, BatchSize = settings.BatchSize, LearningRate = 5e-4, MinLearningRate = 5e-4, WarmupEpochs = 0, Seed = settings.Seed },
            FineTune = new ViTTrainingOptions { Epochs = settings.PruningEpochs, BatchSize = settings.BatchSize, WarmupEpochs = 0, Seed = settings.Seed },
        };
        var trainer = mlContext.MulticlassClassification.Trainers.ViTClassification(new ViTClassificationTrainer.Options
        {
            LabelColumnName = "Label",
            ImageColumnName = ImageColumn,
            ArchitecturePreset = settings.ArchitecturePreset,
            Epochs = settings.Epochs,
            BatchSize = settings.BatchSize,
            Seed = settings.Seed,
        });
        return mlContext.Transforms.Conversion.MapValueToKey("Label", "Label")
            .Append(mlContext.Transforms.GohspPrune(pruning, trainer))
            .Append(mlContext.Transforms.Conversion.MapKeyToValue("PredictedLabel", "PredictedLabel"));
    }

    /// <summary>One <see cref="ModelInput"/> per image file under <paramref name="folder"/>, labelled by its subfolder.</summary>
    public static IEnumerable<ModelInput> LoadImagesFromFolder(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Training folder '{folder}' does not exist; expected one subfolder per class.");
        string[] extensions = [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"];
        var files = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Where(f => extensions.Contains(Path.GetExtension(f).ToLowerInvariant()))
            .Order(StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0) throw new ArgumentException($"Training folder '{folder}' has no image files (PNG, JPEG, BMP, GIF or WebP) in its subfolders.", nameof(folder));
        return files.Select(f => new ModelInput { Label = Path.GetFileName(Path.GetDirectoryName(f)!)!, ImageSource = File.ReadAllBytes(f) }).ToList();
    }
}
