using Microsoft.ML.Gohsp.Pruning;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Options of random structured pruning: the shared budget, fine-tuning and distillation of <see cref="PruningOptions"/>,
/// plus the seed of the random ranking. A fourth pruning method, defined here and nowhere in the library: it shows that
/// <see cref="PruningProtocol"/> and the ML.NET pruning estimators run a method they do not know.
/// </summary>
public sealed class RandomPruningOptions : PruningOptions
{
    /// <summary>Creates the default options (one fine-tuning epoch).</summary>
    public RandomPruningOptions() : base(fineTuneEpochs: 1) { }

    /// <summary>Seed of the random structure scores. Default 1.</summary>
    public int RankingSeed { get; set; } = 1;

    /// <inheritdoc />
    public override IPruningMethod CreateMethod() => new RandomStructuredPruning(this);

    /// <inheritdoc />
    protected internal override IReadOnlyList<PruningStage> TrainingStages => [new(nameof(FineTune), () => FineTune, o => FineTune = o)];
}

/// <summary>
/// Random structured pruning: scores every head, q/k dimension, v dimension and MLP neuron uniformly at random, spends the
/// budget on the highest scores with the allocator every method shares, removes the rest and fine-tunes.
/// </summary>
public sealed class RandomStructuredPruning(RandomPruningOptions options) : IPruningMethod
{
    /// <inheritdoc />
    public string Name => "random";

    /// <summary>The method's options.</summary>
    public RandomPruningOptions Options { get; } = options ?? throw new ArgumentNullException(nameof(options));

    PruningOptions IPruningMethod.Options => Options;

    /// <inheritdoc />
    public PruningResult Run(PruningContext context)
    {
        var run = PruningRun.Start(context, this);
        var dense = context.Model;
        var random = new Random(Options.RankingSeed);
        float[] Scores(int n) => Enumerable.Range(0, n).Select(_ => random.NextSingle()).ToArray();
        var importance = dense.Architecture.Blocks.Select(b => new BlockImportance
        {
            Heads = Scores(b.Heads),
            QkDims = Enumerable.Range(0, b.Heads).Select(_ => Scores(b.QkDim)).ToArray(),
            VDims = Enumerable.Range(0, b.Heads).Select(_ => Scores(b.VDim)).ToArray(),
            Mlp = Scores(b.MlpHidden),
        }).ToArray();
        var plan = run.Budget.Allocate(dense.Architecture, importance);
        run.Log($"kept heads per block {string.Join(" | ", plan.Blocks.Select(b => string.Join(",", b.Heads)))}");
        return run.Finish(dense, plan);
    }
}
