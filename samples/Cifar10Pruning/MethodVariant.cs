using Microsoft.ML.Gohsp.Pruning;

namespace Cifar10Pruning;

/// <summary>
/// A pruning method as the sample runs it: every registered method (<see cref="PruningMethods"/>: the library's, and any
/// registered before the flags are parsed) as itself, and the controls, the library's methods ranked in the strongest
/// criteria the library has: SGMP in GOHSP's Fisher metric, SOMP in the Fisher metric, and SOMP by first-order Taylor
/// importance.
/// </summary>
internal sealed record MethodVariant(string Name, PruningMethodRegistration Method, string Label, Action<PruningOptions>? Criterion = null)
{
    public static MethodVariant Gohsp => Of(PruningMethods.Gohsp);
    public static MethodVariant Sgmp => Of(PruningMethods.Sgmp);
    public static MethodVariant Somp => Of(PruningMethods.Somp);
    public static readonly MethodVariant SgmpFisher = new("sgmp-fisher", PruningMethods.Sgmp, "SGMP (Fisher metric)", o => ((SgmpOptions)o).Metric = ProjectionMetric.Fisher);
    public static readonly MethodVariant SompFisher = new("somp-fisher", PruningMethods.Somp, "SOMP (Fisher metric)", o => ((SompOptions)o).Importance = SompImportance.Fisher);
    public static readonly MethodVariant SompTaylor = new("somp-taylor", PruningMethods.Somp, "SOMP (Taylor importance)", o => ((SompOptions)o).Importance = SompImportance.Taylor);

    /// <summary>A registered method as itself, with its own name and label.</summary>
    public static MethodVariant Of(PruningMethodRegistration method) => new(method.Name, method, method.Label);

    /// <summary>Every variant, in the order reports list them: the registered methods, then the controls.</summary>
    public static IReadOnlyList<MethodVariant> All => [.. PruningMethods.All.Select(Of), SgmpFisher, SompFisher, SompTaylor];

    /// <summary>The <c>--method</c> names that stand for several variants.</summary>
    public static IReadOnlyDictionary<string, IReadOnlyList<MethodVariant>> Groups => new Dictionary<string, IReadOnlyList<MethodVariant>>
    {
        ["all"] = [Gohsp, Sgmp, Somp],
        ["controls"] = [SgmpFisher, SompFisher, SompTaylor],
    };

    /// <summary>The variant of an entry or flag name; null when there is none.</summary>
    public static MethodVariant? ByName(string name) => All.FirstOrDefault(v => v.Name == name);

    /// <summary>Sets the variant's criterion on <paramref name="options"/> (the method's defaults otherwise).</summary>
    public PruningOptions Configure(PruningOptions options)
    {
        Criterion?.Invoke(options);
        return options;
    }
}

/// <summary>One pruning budget of the run: a fraction of the parameters, or of the dense model's measured latency.</summary>
/// <param name="Sparsity">Fraction of the parameters to remove (0 for a latency budget).</param>
/// <param name="LatencyFraction">The pruned model's batch latency over the dense model's; null for a parameter budget.</param>
internal sealed record PruningBudgetSpec(double Sparsity, double? LatencyFraction)
{
    public static PruningBudgetSpec Parameters(double sparsity) => new(sparsity, null);
    public static PruningBudgetSpec Latency(double fraction) => new(0, fraction);

    /// <summary>The budget of an entry of report.json.</summary>
    public static PruningBudgetSpec Of(ModelEntry e) => new(e.TargetLatency is null ? e.Sparsity : 0, e.TargetLatency);

    /// <summary>Part of the model file name: "50" (50% of the parameters removed) or "lat50" (50% of the dense latency).</summary>
    public string Suffix => LatencyFraction is double f ? Text.Invariant($"lat{f * 100:0}") : Text.Invariant($"{Sparsity * 100:0}");

    /// <summary>"50%" or "latency 50%".</summary>
    public string Short => LatencyFraction is double f ? Text.Invariant($"latency {f:P0}") : Text.Invariant($"{Sparsity:P0}");

    /// <summary>For the console: "to 50% sparsity" or "to 50% of the dense latency".</summary>
    public string Describe => LatencyFraction is double f ? Text.Invariant($"to {f:P0} of the dense latency") : Text.Invariant($"to {Sparsity:P0} sparsity");

    /// <summary>Sets the budget on <paramref name="options"/>: <see cref="PruningOptions.Sparsity"/> or <see cref="PruningOptions.TargetLatencyFraction"/>.</summary>
    public T Apply<T>(T options) where T : PruningOptions
    {
        if (LatencyFraction is double f) options.TargetLatencyFraction = f;
        else options.Sparsity = Sparsity;
        return options;
    }

    /// <summary>Sorts parameter budgets first (by sparsity), then latency budgets (by target, fastest last).</summary>
    public static int Order(PruningBudgetSpec a, PruningBudgetSpec b) =>
        (a.LatencyFraction, b.LatencyFraction) switch
        {
            (null, null) => a.Sparsity.CompareTo(b.Sparsity),
            (null, _) => -1,
            (_, null) => 1,
            ({ } x, { } y) => y.CompareTo(x),
        };

    public override string ToString() => Short;
}
