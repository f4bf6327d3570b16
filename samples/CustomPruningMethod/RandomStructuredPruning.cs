using Microsoft.ML.Gohsp.Pruning;

namespace CustomPruningMethod;

/// <summary>
/// Options of random structured pruning: the shared budget, fine-tuning and distillation of <see cref="PruningOptions"/>
/// (with the columns, validation data and progress the ML.NET estimators read), plus the seed of the random ranking.
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
    protected override IReadOnlyList<PruningStage> TrainingStages => [new(nameof(FineTune), () => FineTune, o => FineTune = o)];
}

/// <summary>
/// Random structured pruning, a pruning method that Microsoft.ML.Gohsp does not know, compiled against its public API
/// only: it scores every head, q/k dimension, v dimension and MLP neuron uniformly at random, spends the budget on the
/// highest scores with the allocator every method shares (<see cref="PruningBudget.Allocate"/>), removes the rest and
/// fine-tunes (<see cref="PruningRun.Finish"/>). <see cref="Register"/> names it "random" for
/// <c>mlContext.Transforms.Prune("random", sparsity)</c> and everything else that selects a method by name.
/// </summary>
public sealed class RandomStructuredPruning(RandomPruningOptions options) : IPruningMethod
{
    private static readonly PruningMethodRegistration Registration = new("Random", () => new RandomPruningOptions());

    /// <summary>Registers the method (<see cref="PruningMethods.Register"/>) under its name, "random"; a second call does nothing.</summary>
    /// <returns>The registration.</returns>
    public static PruningMethodRegistration Register() => PruningMethods.Register(Registration);

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
