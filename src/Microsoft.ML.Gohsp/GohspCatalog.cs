using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Microsoft.ML.Gohsp.Interop;
using Microsoft.ML.Gohsp.Pruning;
using Microsoft.ML.Gohsp.VisionTransformer;
using Microsoft.ML.Runtime;

namespace Microsoft.ML;

/// <summary>Every public ML.NET entry point of Microsoft.ML.Gohsp, as extension methods on the ML.NET catalogs.</summary>
public static class GohspCatalog
{
    /// <summary>
    /// A vision-transformer trainer: <c>mlContext.MulticlassClassification.Trainers.ViTClassification(...)</c>.
    /// </summary>
    /// <param name="catalog">The multiclass trainers catalog.</param>
    /// <param name="labelColumnName">Key-typed label column.</param>
    /// <param name="imageColumnName">MLImage column, or planar float vector column.</param>
    /// <param name="architecturePreset">Architecture preset name (see <see cref="ViTArchitecture.PresetNames"/>).</param>
    /// <param name="epochs">Training epochs.</param>
    /// <param name="batchSize">Images per step.</param>
    public static ViTClassificationTrainer ViTClassification(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        string labelColumnName = DefaultColumnNames.Label, string imageColumnName = "Image", string architecturePreset = "cifar-tiny",
        int epochs = 10, int batchSize = 64)
        => ViTClassification(catalog, new ViTClassificationTrainer.Options
        {
            LabelColumnName = labelColumnName,
            ImageColumnName = imageColumnName,
            ArchitecturePreset = architecturePreset,
            Epochs = epochs,
            BatchSize = batchSize,
        });

    /// <summary>A vision-transformer trainer with all options.</summary>
    /// <param name="catalog">The multiclass trainers catalog.</param>
    /// <param name="options">Trainer options.</param>
    public static ViTClassificationTrainer ViTClassification(this MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog,
        ViTClassificationTrainer.Options options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MLNetInternals.EnsureCompatible();
        ArgumentNullException.ThrowIfNull(options);
        return new ViTClassificationTrainer(CatalogUtils.GetEnvironment(catalog), options);
    }

    /// <summary>
    /// Saves a model like <c>mlContext.Model.Save</c>, but atomically: the zip is written to a temporary file next to
    /// <paramref name="path"/> and renamed into place, so a failure never leaves a half-written model behind.
    /// </summary>
    public static void SaveAtomically(this ModelOperationsCatalog catalog, ITransformer model, DataViewSchema inputSchema, string path)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MLNetInternals.EnsureCompatible();
        AtomicFile.Write(path, stream => catalog.Save(model, inputSchema, stream));
    }

    /// <summary>
    /// GOHSP structured pruning: <c>mlContext.Transforms.GohspPrune(options, denseModel)</c>. Pass the trained or loaded ViT
    /// model (or a chain containing it) as <paramref name="denseModel"/>, or leave it null and append the estimator right
    /// after <c>ViTClassification</c> in the same chain: it then prunes the model that chain just trained.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">GOHSP options (sparsity, head fraction, stage epochs, ADMM schedule, distillation, columns).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    public static GohspPruningEstimator GohspPrune(this TransformsCatalog catalog, GohspPruningEstimator.Options options, ITransformer? denseModel = null)
        => Estimator(catalog, env => new GohspPruningEstimator(env, options, denseModel));

    /// <summary>
    /// Trains a dense ViT with <paramref name="denseTrainer"/> and prunes it with GOHSP, as one estimator:
    /// <c>mlContext.Transforms.GohspPrune(options, mlContext.MulticlassClassification.Trainers.ViTClassification(...))</c>.
    /// The fitted transformer is the pruned model alone, so a saved pipeline holds only the pruned ViT (appending
    /// <c>GohspPrune(options)</c> after the trainer instead keeps the dense ViT in the chain, and in its zip).
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">GOHSP options (sparsity, head fraction, stage epochs, ADMM schedule, distillation, columns).</param>
    /// <param name="denseTrainer">The trainer of the dense model.</param>
    public static ViTTrainAndPruneEstimator GohspPrune(this TransformsCatalog catalog, GohspPruningEstimator.Options options, ViTClassificationTrainer denseTrainer)
        => TrainAndPrune(catalog, denseTrainer, (env, dense) => new GohspPruningEstimator(env, options, dense));

    /// <summary>SOMP after training a dense ViT, as one estimator; see <see cref="GohspPrune(TransformsCatalog, GohspPruningEstimator.Options, ViTClassificationTrainer)"/>.</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">SOMP options.</param>
    /// <param name="denseTrainer">The trainer of the dense model.</param>
    public static ViTTrainAndPruneEstimator SompPrune(this TransformsCatalog catalog, SompPruningEstimator.Options options, ViTClassificationTrainer denseTrainer)
        => TrainAndPrune(catalog, denseTrainer, (env, dense) => new SompPruningEstimator(env, options, dense));

    /// <summary>SGMP after training a dense ViT, as one estimator; see <see cref="GohspPrune(TransformsCatalog, GohspPruningEstimator.Options, ViTClassificationTrainer)"/>.</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">SGMP options.</param>
    /// <param name="denseTrainer">The trainer of the dense model.</param>
    public static ViTTrainAndPruneEstimator SgmpPrune(this TransformsCatalog catalog, SgmpPruningEstimator.Options options, ViTClassificationTrainer denseTrainer)
        => TrainAndPrune(catalog, denseTrainer, (env, dense) => new SgmpPruningEstimator(env, options, dense));

    /// <summary>
    /// Structured pruning with any method: <c>mlContext.Transforms.Prune(methodOptions, denseModel)</c> runs the method that
    /// <paramref name="options"/> configure (<see cref="PruningOptions.CreateMethod"/>: GOHSP, SOMP, SGMP or a method defined
    /// elsewhere). Pass the trained or loaded ViT model (or a chain containing it) as <paramref name="denseModel"/>, or leave it
    /// null and append the estimator right after <c>ViTClassification</c> in the same chain.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">The method's options, with the columns, validation data and progress.</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    public static PruningEstimator Prune(this TransformsCatalog catalog, PruningOptions options, ITransformer? denseModel = null)
        => Estimator(catalog, env => new PruningEstimator(env, options, denseModel));

    /// <summary>
    /// Structured pruning with the method registered as <paramref name="method"/> (<see cref="PruningMethods"/>: "gohsp",
    /// "somp", "sgmp", or a method registered elsewhere), with its default options and <paramref name="sparsity"/>; see the
    /// overload taking the method's options.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="method">The registered method's name.</param>
    /// <param name="sparsity">Fraction of the parameters to remove, in (0, 1).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    /// <param name="labelColumnName">Key-typed label column.</param>
    public static PruningEstimator Prune(this TransformsCatalog catalog, string method, double sparsity, ITransformer? denseModel = null,
        string labelColumnName = DefaultColumnNames.Label)
    {
        var options = PruningMethods.Get(method).CreateOptions();
        (options.Sparsity, options.LabelColumnName) = (sparsity, labelColumnName);
        return Prune(catalog, options, denseModel);
    }

    /// <summary>Any pruning method after training a dense ViT, as one estimator; see <see cref="GohspPrune(TransformsCatalog, GohspPruningEstimator.Options, ViTClassificationTrainer)"/>.</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">The method's options, with the columns, validation data and progress.</param>
    /// <param name="denseTrainer">The trainer of the dense model.</param>
    public static ViTTrainAndPruneEstimator Prune(this TransformsCatalog catalog, PruningOptions options, ViTClassificationTrainer denseTrainer)
        => TrainAndPrune(catalog, denseTrainer, (env, dense) => new PruningEstimator(env, options, dense));

    /// <summary>
    /// GOHSP stage 1 only: graph-based head ranking and the head mask. Chain
    /// <c>GohspRankHeads(o).Append(GohspSoftPrune(o)).Append(GohspHardPrune(o))</c> to run GOHSP one stage at a time and
    /// inspect (or save) the model and its <see cref="ViTModelParameters.PruningReport"/> between stages.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">GOHSP options (this stage reads the head-ranking options).</param>
    /// <param name="model">The ViT to rank; null to take it from the upstream trainer in a chain.</param>
    public static GohspHeadRankingEstimator GohspRankHeads(this TransformsCatalog catalog, GohspPruningEstimator.Options options, ITransformer? model = null)
        => Estimator(catalog, env => new GohspHeadRankingEstimator(env, options, model));

    /// <summary>GOHSP stage 2 only: ADMM soft structured pruning (see <see cref="GohspRankHeads"/>).</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">GOHSP options (this stage reads Sparsity, SoftPruning, Admm, Budget).</param>
    /// <param name="model">The (head-masked) ViT; null to take it from the upstream stage in a chain.</param>
    public static GohspSoftPruningEstimator GohspSoftPrune(this TransformsCatalog catalog, GohspPruningEstimator.Options options, ITransformer? model = null)
        => Estimator(catalog, env => new GohspSoftPruningEstimator(env, options, model));

    /// <summary>GOHSP stage 3 only: projection, physical pruning and fine-tuning (see <see cref="GohspRankHeads"/>).</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">GOHSP options (this stage reads Sparsity, Budget, FineTune and the distillation options).</param>
    /// <param name="model">The soft-pruned ViT; null to take it from the upstream stage in a chain.</param>
    /// <param name="teacher">Distillation teacher (normally the dense model); null uses the model entering this stage.</param>
    public static GohspHardPruningEstimator GohspHardPrune(this TransformsCatalog catalog, GohspPruningEstimator.Options options, ITransformer? model = null,
        ITransformer? teacher = null)
        => Estimator(catalog, env => new GohspHardPruningEstimator(env, options, model, teacher));

    /// <summary>GOHSP structured pruning with the main options; see the overload taking <see cref="GohspPruningEstimator.Options"/>.</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="sparsity">Fraction of the parameters to remove, in (0, 1).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    /// <param name="labelColumnName">Key-typed label column.</param>
    public static GohspPruningEstimator GohspPrune(this TransformsCatalog catalog, double sparsity, ITransformer? denseModel = null,
        string labelColumnName = DefaultColumnNames.Label)
        => GohspPrune(catalog, new GohspPruningEstimator.Options { Sparsity = sparsity, LabelColumnName = labelColumnName }, denseModel);

    /// <summary>
    /// SOMP, structured one-shot magnitude pruning (a baseline for GOHSP): <c>mlContext.Transforms.SompPrune(options, denseModel)</c>.
    /// Ranks heads, q/k dims, v dims and MLP neurons once by ℓ2 magnitude, removes the least important ones until
    /// <see cref="PruningOptions.Sparsity"/> of the parameters is gone, and fine-tunes. Pass the trained or loaded ViT
    /// model (or a chain containing it) as <paramref name="denseModel"/>, or leave it null and append the estimator right after
    /// <c>ViTClassification</c> in the same chain.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">SOMP options (sparsity, budget floors, fine-tuning, distillation, columns).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    public static SompPruningEstimator SompPrune(this TransformsCatalog catalog, SompPruningEstimator.Options options, ITransformer? denseModel = null)
        => Estimator(catalog, env => new SompPruningEstimator(env, options, denseModel));

    /// <summary>SOMP with the main options; see the overload taking <see cref="SompPruningEstimator.Options"/>.</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="sparsity">Fraction of the parameters to remove, in (0, 1).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    /// <param name="labelColumnName">Key-typed label column.</param>
    public static SompPruningEstimator SompPrune(this TransformsCatalog catalog, double sparsity, ITransformer? denseModel = null,
        string labelColumnName = DefaultColumnNames.Label)
        => SompPrune(catalog, new SompPruningEstimator.Options { Sparsity = sparsity, LabelColumnName = labelColumnName }, denseModel);

    /// <summary>
    /// SGMP, structured gradual magnitude pruning (a baseline for GOHSP): <c>mlContext.Transforms.SgmpPrune(options, denseModel)</c>.
    /// Trains while raising the structured sparsity on Zhu &amp; Gupta's cubic schedule (re-ranking by ℓ2 magnitude at every
    /// pruning step, pruned structures kept at zero), then removes the pruned structures and fine-tunes. Pass the trained or
    /// loaded ViT model (or a chain containing it) as <paramref name="denseModel"/>, or leave it null and append the estimator
    /// right after <c>ViTClassification</c> in the same chain.
    /// </summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="options">SGMP options (final sparsity, schedule, gradual and fine-tuning stages, budget, distillation, columns).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    public static SgmpPruningEstimator SgmpPrune(this TransformsCatalog catalog, SgmpPruningEstimator.Options options, ITransformer? denseModel = null)
        => Estimator(catalog, env => new SgmpPruningEstimator(env, options, denseModel));

    /// <summary>SGMP with the main options; see the overload taking <see cref="SgmpPruningEstimator.Options"/>.</summary>
    /// <param name="catalog">The transforms catalog.</param>
    /// <param name="sparsity">Final fraction of the parameters to remove, in (0, 1).</param>
    /// <param name="denseModel">The dense ViT to prune; null to take it from the upstream trainer in a chain.</param>
    /// <param name="labelColumnName">Key-typed label column.</param>
    public static SgmpPruningEstimator SgmpPrune(this TransformsCatalog catalog, double sparsity, ITransformer? denseModel = null,
        string labelColumnName = DefaultColumnNames.Label)
        => SgmpPrune(catalog, new SgmpPruningEstimator.Options { Sparsity = sparsity, LabelColumnName = labelColumnName }, denseModel);

    // Every pruning entry: the catalog checked, ML.NET's internals checked, the estimator created in the catalog's environment.
    private static TEstimator Estimator<TEstimator>(TransformsCatalog catalog, Func<IHostEnvironment, TEstimator> create)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MLNetInternals.EnsureCompatible();
        return create(CatalogUtils.GetEnvironment(catalog));
    }

    // Every train-and-prune entry: the dense trainer, then the pruning estimator over the model it trains.
    private static ViTTrainAndPruneEstimator TrainAndPrune(TransformsCatalog catalog, ViTClassificationTrainer denseTrainer,
        Func<IHostEnvironment, ITransformer?, IEstimator<MulticlassPredictionTransformer<ViTModelParameters>>> create)
    {
        ArgumentNullException.ThrowIfNull(denseTrainer);
        return Estimator(catalog, env => new ViTTrainAndPruneEstimator(env, denseTrainer, dense => create(env, dense)));
    }

    /// <summary>
    /// Imports a pretrained ViT/DeiT checkpoint (timm or Hugging Face naming; <c>.safetensors</c>, or a PyTorch <c>.pth</c>/<c>.bin</c>
    /// state dict behind an allow-list) as the same transformer <c>ViTClassification</c> produces, so it can be evaluated,
    /// saved, exported, or passed as <c>denseModel</c> to <see cref="GohspPrune(TransformsCatalog, GohspPruningEstimator.Options, ITransformer?)"/>.
    /// It scores a planar float vector column of raw 0…255 pixels (<c>ExtractPixels(interleavePixelColors: false)</c>). See docs/interop.md.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="path">The checkpoint file, or a Hugging Face hub model as <c>hf:org/name[@revision]</c> (e.g.
    /// <c>hf:facebook/deit-small-patch16-224</c>, <c>hf:timm/deit_small_patch16_224.fb_in1k</c>): its <c>model.safetensors</c>
    /// (else <c>pytorch_model.bin</c>) and config files are downloaded into the hub's cache, or taken from it
    /// (<see cref="PretrainedViTOptions.Hub"/>, <see cref="HuggingFaceHub"/>).</param>
    /// <param name="options">Heads, class count (a different one gets a new head), image size (resamples the position
    /// embedding), normalisation (default: the files beside the checkpoint, else ImageNet's), column names, class names.</param>
    public static MulticlassPredictionTransformer<ViTModelParameters> LoadPretrainedViT(this ModelOperationsCatalog catalog, string path,
        PretrainedViTOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MLNetInternals.EnsureCompatible();
        return PretrainedViTTransformer.Create(CatalogUtils.GetEnvironment(catalog), path, options ?? new PretrainedViTOptions());
    }

    /// <summary>
    /// Exports the ViT of <paramref name="model"/> (a ViT transformer or a chain containing one; dense or pruned) to ONNX
    /// (opset 17), written atomically. Input: float32 [batch, C, H, W], planar RGB; with <paramref name="includePreprocessing"/>
    /// (default) the graph starts with the model's own normalisation and takes raw 0…255 pixels — exactly what
    /// <c>ExtractPixels(interleavePixelColors: false)</c> gives, so <c>ApplyOnnxModel</c> can replace the ViT transformer in a
    /// pipeline. Outputs: <c>logits</c> and <c>probabilities</c> (softmax), float32 [batch, classes]. See docs/interop.md.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">The trained, pruned or loaded model.</param>
    /// <param name="path">The .onnx file to write.</param>
    /// <param name="includePreprocessing">Put the model's pixel scaling and mean/std normalisation inside the graph.</param>
    /// <param name="options">Names, opset and quantization; its <see cref="OnnxExportOptions.Normalization"/>, when set, wins over the model's.</param>
    public static void ExportViTToOnnx(this ModelOperationsCatalog catalog, ITransformer model, string path, bool includePreprocessing = true,
        OnnxExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        MLNetInternals.EnsureCompatible();
        ArgumentNullException.ThrowIfNull(model);
        var vit = ViTLocator.FindViT(model)?.Model ?? throw new ArgumentException(
            $"The model is a {model.GetType().Name} without a ViT from Microsoft.ML.Gohsp (expected a MulticlassPredictionTransformer<ViTModelParameters> or a chain that contains one).", nameof(model));
        var pre = vit.Preprocessing;
        var o = options?.Clone() ?? new OnnxExportOptions();
        o.Normalization = options?.Normalization ?? (includePreprocessing ? new OnnxInputNormalization(pre.PixelScale, pre.Mean.ToArray(), pre.Std.ToArray()) : null);
        OnnxExport.Save(vit.Model, path, o);
    }

    /// <summary>
    /// Exports the ViT of <paramref name="model"/> to ONNX with the model's normalisation inside the graph (raw 0…255 pixels in),
    /// as <see cref="ExportViTToOnnx(ModelOperationsCatalog, ITransformer, string, bool, OnnxExportOptions?)"/> does, with
    /// <paramref name="options"/>: e.g. <c>new OnnxExportOptions { Quantization = OnnxQuantization.Int8Dynamic }</c> writes int8
    /// weights and dynamically quantized activations in the blocks' linear layers, read by <c>ApplyOnnxModel</c> like the
    /// float32 file (same input and outputs). Written atomically. See docs/interop.md for the measured accuracy and speed.
    /// </summary>
    /// <param name="catalog">The model operations catalog.</param>
    /// <param name="model">The trained, pruned or loaded model.</param>
    /// <param name="path">The .onnx file to write.</param>
    /// <param name="options">Quantization, names and opset; its <see cref="OnnxExportOptions.Normalization"/>, when set, wins over the model's.</param>
    public static void ExportViTToOnnx(this ModelOperationsCatalog catalog, ITransformer model, string path, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ExportViTToOnnx(catalog, model, path, includePreprocessing: true, options);
    }
}
