using Microsoft.Extensions.ObjectPool;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace ImageClassification;

/// <summary>
/// The model, used the way ML.NET Model Builder's generated code uses its models: <see cref="ModelInput"/> in,
/// <see cref="ModelOutput"/> out, a static <see cref="Predict"/>; <see cref="Train"/> (MLModel.training.cs) trains,
/// prunes and saves it.
/// </summary>
public static partial class MLModel
{
    /// <summary>Name of the column that holds the encoded image (the file's bytes).</summary>
    public const string ImageColumn = "ImageSource";

    /// <summary>One image: its file's bytes and, for training, its class.</summary>
    public sealed class ModelInput
    {
        /// <summary>The class name (the image's folder when training); ignored by <see cref="Predict"/>.</summary>
        [ColumnName("Label")]
        public string Label { get; set; } = "";

        /// <summary>The encoded image: PNG, JPEG, BMP, GIF or WebP file contents, any size.</summary>
        [ColumnName(ImageColumn)]
        public byte[] ImageSource { get; set; } = [];
    }

    /// <summary>A prediction: the class and one score per class (in the order of <see cref="PredictionEnginePool.Labels"/>).</summary>
    public sealed class ModelOutput
    {
        /// <summary>The predicted class name.</summary>
        [ColumnName("PredictedLabel")]
        public string PredictedLabel { get; set; } = "";

        /// <summary>Softmax scores, one per class.</summary>
        [ColumnName("Score")]
        public float[] Score { get; set; } = [];
    }

    /// <summary>The model file <see cref="Predict"/> loads on first use (default: MLModel.zip in the working folder).</summary>
    public static string ModelPath
    {
        get => _modelPath;
        set
        {
            lock (_gate)
            {
                if (_pool is not null) throw new InvalidOperationException($"{nameof(ModelPath)} is set before the first {nameof(Predict)}; the model at '{_modelPath}' is already loaded.");
                _modelPath = Path.GetFullPath(value);
            }
        }
    }

    private static string _modelPath = Path.GetFullPath("MLModel.zip");
    private static readonly object _gate = new();
    private static PredictionEnginePool? _pool;

    /// <summary>The pool behind <see cref="Predict"/>, loaded from <see cref="ModelPath"/> on first use.</summary>
    public static PredictionEnginePool Engines
    {
        get
        {
            lock (_gate) return _pool ??= new PredictionEnginePool(_modelPath);
        }
    }

    /// <summary>Predicts the class of one image; thread-safe (each call borrows a prediction engine from a pool).</summary>
    /// <exception cref="ArgumentException">The image bytes are empty or are not an image.</exception>
    public static ModelOutput Predict(ModelInput input) => Engines.Predict(input);

    /// <summary>Every class with its score, best first (Model Builder's <c>PredictAllLabels</c>).</summary>
    public static IOrderedEnumerable<KeyValuePair<string, float>> PredictAllLabels(ModelInput input)
    {
        var output = Predict(input);
        return Engines.Labels.Zip(output.Score, (l, s) => new KeyValuePair<string, float>(l, s)).OrderByDescending(p => p.Value);
    }
}

/// <summary>
/// A loaded model and a pool of <see cref="PredictionEngine{TSrc, TDst}"/>s on it (an engine serves one call at a time;
/// the pool keeps up to two per core and makes more under load).
/// </summary>
public sealed class PredictionEnginePool
{
    private readonly ObjectPool<PredictionEngine<MLModel.ModelInput, MLModel.ModelOutput>> _engines;

    /// <summary>Loads the model saved at <paramref name="modelPath"/> (by <see cref="MLModel.Train"/>).</summary>
    public PredictionEnginePool(string modelPath)
    {
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"No model at '{modelPath}': train one first (MLModel.Train).", modelPath);
        var ml = new MLContext();
        Model = ml.Model.Load(modelPath, out _);
        _engines = new DefaultObjectPool<PredictionEngine<MLModel.ModelInput, MLModel.ModelOutput>>(
            new EnginePolicy(ml, Model), 2 * Environment.ProcessorCount);
        var engine = _engines.Get();
        Labels = SlotNames(engine.OutputSchema["Score"]);
        _engines.Return(engine);
    }

    /// <summary>The loaded pipeline.</summary>
    public ITransformer Model { get; }

    /// <summary>The class names, in the order of <see cref="MLModel.ModelOutput.Score"/>.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>Predicts one image on a pooled engine.</summary>
    /// <exception cref="ArgumentException">The image bytes are empty or are not an image (the message says which).</exception>
    public MLModel.ModelOutput Predict(MLModel.ModelInput input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.ImageSource is not { Length: > 0 })
            throw new ArgumentException($"{nameof(MLModel.ModelInput.ImageSource)} is empty; expected an encoded image (PNG, JPEG, BMP, GIF or WebP file contents).", nameof(input));
        var engine = _engines.Get();
        MLModel.ModelOutput output;
        try
        {
            output = engine.Predict(input);
        }
        catch (InvalidOperationException e) when (e.Message.StartsWith("Image column '", StringComparison.Ordinal))
        {
            // the library's message for image bytes it cannot decode ("Image column '…' holds N bytes that do not decode
            // as an image …"); the engine is not returned to the pool, whatever state the failure left it in
            engine.Dispose();
            throw new ArgumentException(e.Message, nameof(input), e);
        }
        catch
        {
            engine.Dispose();
            throw;
        }
        _engines.Return(engine);
        return output;
    }

    private static string[] SlotNames(DataViewSchema.Column score)
    {
        // the multiclass scorer names the score slots after the label's key values
        string kind = score.Annotations.Schema.GetColumnOrNull("SlotNames") is null ? "TrainingLabelValues" : "SlotNames";
        VBuffer<ReadOnlyMemory<char>> names = default;
        score.Annotations.GetValue(kind, ref names);
        return names.DenseValues().Select(n => n.ToString()).ToArray();
    }

    private sealed class EnginePolicy(MLContext ml, ITransformer model) : IPooledObjectPolicy<PredictionEngine<MLModel.ModelInput, MLModel.ModelOutput>>
    {
        public PredictionEngine<MLModel.ModelInput, MLModel.ModelOutput> Create() => ml.Model.CreatePredictionEngine<MLModel.ModelInput, MLModel.ModelOutput>(model);

        public bool Return(PredictionEngine<MLModel.ModelInput, MLModel.ModelOutput> obj) => true;
    }
}
