using System.Reflection;
using Microsoft.ML.Gohsp.VisionTransformer;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>Where tensors live during training and inference.</summary>
public enum ViTDevice
{
    /// <summary>CUDA when <c>torch.cuda.is_available()</c>, otherwise the CPU.</summary>
    Auto = 0,
    /// <summary>Always the CPU.</summary>
    Cpu = 1,
    /// <summary>The first CUDA device; fails at <c>Fit</c> when none is available.</summary>
    Cuda = 2,
}

/// <summary>
/// Hyper-parameters of the training loop shared by dense training, GOHSP soft pruning, fine-tuning and the
/// magnitude-pruning baselines: AdamW with decoupled weight decay, linear warm-up then cosine decay per step,
/// label smoothing, random-crop/flip augmentation and per-channel normalisation.
/// </summary>
public class ViTTrainingOptions
{
    /// <summary>Number of passes over the training data. Must be positive. Default 10.</summary>
    public int Epochs { get; set; } = 10;

    /// <summary>Images per optimisation step. Must be positive. Default 64.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>Peak learning rate of AdamW (reached after warm-up). Default 1e-3.</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>Learning rate at the end of the cosine decay. Default 1e-5.</summary>
    public double MinLearningRate { get; set; } = 1e-5;

    /// <summary>Linear warm-up length in epochs (may be fractional; 0 disables warm-up). Default 1.</summary>
    public double WarmupEpochs { get; set; } = 1;

    /// <summary>Decoupled (AdamW) weight decay, applied to weight matrices only — not to biases, norms, the class token or position embedding. Default 0.05.</summary>
    public double WeightDecay { get; set; } = 0.05;

    /// <summary>Label smoothing of the cross-entropy loss, in [0, 1). Default 0.1.</summary>
    public double LabelSmoothing { get; set; } = 0.1;

    /// <summary>Random-crop padding in pixels (zero padding, then a random crop back to the image size); 0 disables. Default 4.</summary>
    public int RandomCropPadding { get; set; } = 4;

    /// <summary>Random horizontal flips with probability 1/2. Default true.</summary>
    public bool HorizontalFlip { get; set; } = true;

    /// <summary>
    /// Multiplier applied to input pixel values before normalisation. ML.NET's <c>ExtractPixels</c> and
    /// <c>MLImage</c> give values in 0…255, hence the default 1/255.
    /// </summary>
    public float PixelScale { get; set; } = 1f / 255f;

    /// <summary>Per-channel mean subtracted after scaling (default: CIFAR-10's).</summary>
    public float[] Mean { get; set; } = [0.4914f, 0.4822f, 0.4465f];

    /// <summary>Per-channel standard deviation divided after subtracting the mean (default: CIFAR-10's).</summary>
    public float[] Std { get; set; } = [0.2470f, 0.2435f, 0.2616f];

    /// <summary>Seed for initialisation, shuffling and augmentation; the same seed reproduces a run on the CPU. Default 1.</summary>
    public int Seed { get; set; } = 1;

    /// <summary>Device selection. Default <see cref="ViTDevice.Auto"/>.</summary>
    public ViTDevice Device { get; set; } = ViTDevice.Auto;

    /// <summary>Intra-op threads for TorchSharp on the CPU; 0 keeps TorchSharp's default (all cores).</summary>
    public int NumberOfThreads { get; set; }

    /// <summary>
    /// Matrix-product precision during training. <see cref="ComputePrecision.BFloat16"/> is opt-in mixed
    /// precision (float32 master weights); the saved model and inference use float32.
    /// </summary>
    public ComputePrecision TrainingPrecision { get; set; } = ComputePrecision.Float32;

    /// <summary>
    /// Optional folder for per-epoch checkpoints. When it holds a checkpoint of the same run (same data size,
    /// architecture and options), training resumes after the last finished epoch instead of restarting.
    /// </summary>
    public string? CheckpointFolder { get; set; }

    /// <summary>Batch size used for validation and other no-gradient passes. Default 256.</summary>
    public int EvaluationBatchSize { get; set; } = 256;

    /// <summary>
    /// Weight α of a teacher's soft targets, in [0, 1]: when the training images carry a teacher's class probabilities
    /// (<see cref="ImageTensorData.TeacherProbabilities"/>; in ML.NET a teacher score column), the loss is
    /// α·T²·KL(teacher ‖ student, at temperature T) + (1 − α)·CE(label). 0 trains on the labels alone. Ignored without
    /// teacher probabilities. Default 0.5.
    /// </summary>
    public double TeacherWeight { get; set; } = 0.5;

    /// <summary>
    /// Temperature T of a teacher's soft targets (<see cref="TeacherWeight"/>), a positive finite number: teacher and student
    /// distributions are softened to softmax(log p / T) and softmax(logits / T). Ignored without teacher probabilities.
    /// Default 1: the teacher's own probabilities (docs/results.md, "Distillation from a teacher's scores").
    /// </summary>
    public double TeacherTemperature { get; set; } = 1;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first invalid option.</summary>
    public virtual void Validate(int channels)
    {
        if (Epochs <= 0) throw new ArgumentOutOfRangeException(nameof(Epochs), Epochs, "Epochs must be positive.");
        if (BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be positive.");
        if (EvaluationBatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(EvaluationBatchSize), EvaluationBatchSize, "EvaluationBatchSize must be positive.");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "LearningRate must be a positive finite number.");
        if (!(MinLearningRate >= 0) || MinLearningRate > LearningRate) throw new ArgumentOutOfRangeException(nameof(MinLearningRate), MinLearningRate, "MinLearningRate must be in [0, LearningRate].");
        if (!(WarmupEpochs >= 0) || double.IsInfinity(WarmupEpochs)) throw new ArgumentOutOfRangeException(nameof(WarmupEpochs), WarmupEpochs, "WarmupEpochs must be a non-negative finite number.");
        if (!(WeightDecay >= 0) || double.IsInfinity(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "WeightDecay must be a non-negative finite number.");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 1)) throw new ArgumentOutOfRangeException(nameof(LabelSmoothing), LabelSmoothing, "LabelSmoothing must be in [0, 1).");
        if (RandomCropPadding < 0) throw new ArgumentOutOfRangeException(nameof(RandomCropPadding), RandomCropPadding, "RandomCropPadding must be non-negative.");
        if (!(PixelScale > 0) || float.IsInfinity(PixelScale)) throw new ArgumentOutOfRangeException(nameof(PixelScale), PixelScale, "PixelScale must be a positive finite number.");
        if (NumberOfThreads < 0) throw new ArgumentOutOfRangeException(nameof(NumberOfThreads), NumberOfThreads, "NumberOfThreads must be 0 (default) or positive.");
        if (Mean is null || Mean.Length != channels) throw new ArgumentException($"Mean must have one value per channel ({channels}).", nameof(Mean));
        if (Std is null || Std.Length != channels || Std.Any(s => !(s > 0))) throw new ArgumentException($"Std must have one positive value per channel ({channels}).", nameof(Std));
        if (!(TeacherWeight >= 0 && TeacherWeight <= 1))
            throw new ArgumentOutOfRangeException(nameof(TeacherWeight), TeacherWeight, "TeacherWeight (α of α·T²·KL(teacher ‖ student) + (1 − α)·CE) must be in [0, 1].");
        if (!(TeacherTemperature > 0) || double.IsInfinity(TeacherTemperature))
            throw new ArgumentOutOfRangeException(nameof(TeacherTemperature), TeacherTemperature, "TeacherTemperature must be a positive finite number.");
        if (!Enum.IsDefined(Device)) throw new ArgumentOutOfRangeException(nameof(Device), Device, "Unknown device.");
        if (!Enum.IsDefined(TrainingPrecision)) throw new ArgumentOutOfRangeException(nameof(TrainingPrecision), TrainingPrecision, "Unknown precision.");
    }

    /// <summary>
    /// Every option this class declares (its public read-write properties, in declaration order): the one list that
    /// <see cref="Copy"/>, <see cref="Fingerprint"/> and <see cref="TeacherFingerprint"/> read, so that an option added to the
    /// class is copied and fingerprinted without another list to keep.
    /// </summary>
    internal static IReadOnlyList<PropertyInfo> Declared { get; } = typeof(ViTTrainingOptions)
        .GetProperties(BindingFlags.Public | BindingFlags.Instance)
        .Where(p => p.DeclaringType == typeof(ViTTrainingOptions) && p.CanRead && p.CanWrite)
        .OrderBy(p => p.MetadataToken)
        .ToArray();

    /// <summary>
    /// Options that do not change what a run computes — where it runs, with how many threads, in which batches it is
    /// evaluated, where it checkpoints — and so stay out of <see cref="Fingerprint"/>: a run resumes from its checkpoint on
    /// another device or thread count.
    /// </summary>
    internal static IReadOnlyList<string> NotFingerprinted { get; } = [nameof(Device), nameof(NumberOfThreads), nameof(CheckpointFolder), nameof(EvaluationBatchSize)];

    /// <summary>The options of a teacher's soft targets: <see cref="TeacherFingerprint"/> holds them, <see cref="Fingerprint"/> does not.</summary>
    internal static IReadOnlyList<string> TeacherOptions { get; } = [nameof(TeacherWeight), nameof(TeacherTemperature)];

    /// <summary>
    /// A new <see cref="ViTTrainingOptions"/> (this class, whatever the runtime type of this object) with every option of
    /// <see cref="Declared"/> copied; arrays are copied, not shared.
    /// </summary>
    internal ViTTrainingOptions Copy()
    {
        var copy = new ViTTrainingOptions();
        foreach (var p in Declared) p.SetValue(copy, p.GetValue(this) is Array a ? a.Clone() : p.GetValue(this));
        return copy;
    }

    /// <summary>
    /// A short, stable description of the options that determine a run (used to match checkpoints): every option of
    /// <see cref="Declared"/> but <see cref="NotFingerprinted"/> and <see cref="TeacherOptions"/>, joined by '|'.
    /// </summary>
    internal string Fingerprint() => string.Join("|", Declared
        .Where(p => !NotFingerprinted.Contains(p.Name) && !TeacherOptions.Contains(p.Name))
        .Select(FingerprintOf));

    /// <summary>What a teacher's soft targets add to <see cref="Fingerprint"/> (only runs with teacher probabilities include it).</summary>
    internal string TeacherFingerprint() => "teacher " + string.Join(" ", Declared.Where(p => TeacherOptions.Contains(p.Name)).Select(FingerprintOf));

    // Numbers as checkpoints of earlier versions wrote them: floating-point scalars round-trip ("R"), vectors comma-separated.
    private string FingerprintOf(PropertyInfo p) => RunFingerprint.Value(p.GetValue(this)) ?? throw new InvalidOperationException(
        $"ViTTrainingOptions.{p.Name} ({p.PropertyType.Name}) has no fingerprint form: give its type one in RunFingerprint.Value, or list it in NotFingerprinted.");
}
