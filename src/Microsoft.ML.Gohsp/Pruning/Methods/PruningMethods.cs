namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// A pruning method as callers name it, registered once (<see cref="PruningMethods.Register"/>): its name, its label in
/// reports, new default options and how those options spend their training epochs. Everything that lists methods by name
/// reads the registrations: <c>mlContext.Transforms.Prune(name, sparsity)</c>, <see cref="PruningOptions.Create"/> and the
/// Cifar10Pruning sample's <c>--method</c>.
/// </summary>
public sealed class PruningMethodRegistration
{
    private readonly Func<PruningOptions> _createOptions;
    private readonly Func<PruningOptions, string>? _describeTraining;

    /// <summary>Creates a registration; its name is the name of the method its options create.</summary>
    /// <param name="label">The method's name in reports and on the console, e.g. "GOHSP".</param>
    /// <param name="createOptions">Creates new default options of the method.</param>
    /// <param name="describeTraining">
    /// How options spend their training epochs, for reports (e.g. "soft pruning 5 + fine-tune 5"); null lists the training
    /// stages with their epochs.
    /// </param>
    /// <exception cref="ArgumentException">The label is empty, or the method's name is not lower-case letters, digits and '-'.</exception>
    public PruningMethodRegistration(string label, Func<PruningOptions> createOptions, Func<PruningOptions, string>? describeTraining = null)
    {
        Label = string.IsNullOrWhiteSpace(label) ? throw new ArgumentException("The method's label must be set, e.g. \"GOHSP\".", nameof(label)) : label;
        _createOptions = createOptions ?? throw new ArgumentNullException(nameof(createOptions));
        _describeTraining = describeTraining;
        var options = CreateOptions();
        Name = options.CreateMethod().Name;
        if (string.IsNullOrEmpty(Name) || !Name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c == '-'))
            throw new ArgumentException($"The method's name '{Name}' (IPruningMethod.Name) must be lower-case letters, digits and '-'.", nameof(createOptions));
        MinimumTrainingEpochs = options.TrainingStages.Count;
    }

    /// <summary>The method's <see cref="IPruningMethod.Name"/>: the report's method, and the name callers select it by.</summary>
    public string Name { get; }

    /// <summary>The method's name in reports and on the console, e.g. "GOHSP".</summary>
    public string Label { get; }

    /// <summary>
    /// The fewest training epochs after the dense model that <see cref="PruningProtocol.ApplyEpochBudget"/> can split over
    /// the method's training stages: one per stage.
    /// </summary>
    public int MinimumTrainingEpochs { get; }

    /// <summary>New default options of the method.</summary>
    /// <exception cref="InvalidOperationException">The factory returned null.</exception>
    public PruningOptions CreateOptions() =>
        _createOptions() ?? throw new InvalidOperationException($"The options factory of the pruning method '{Label}' returned null.");

    /// <summary>How <paramref name="options"/> (this method's) spend their training epochs, e.g. "soft pruning 5 + fine-tune 5".</summary>
    public string DescribeTraining(PruningOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return _describeTraining?.Invoke(options) ?? string.Join(" + ", options.TrainingStages.Select(s => $"{s.Name} {s.Options?.Epochs}"));
    }

    /// <inheritdoc />
    public override string ToString() => Name;
}

/// <summary>
/// The registered pruning methods: the library's (<see cref="Gohsp"/>, <see cref="Sgmp"/>, <see cref="Somp"/>) and every
/// method registered with <see cref="Register"/>, in the order they were registered.
/// </summary>
public static class PruningMethods
{
    /// <summary>GOHSP (<see cref="GohspOptions"/>).</summary>
    public static PruningMethodRegistration Gohsp { get; } = new("GOHSP", () => new GohspOptions(),
        o => $"soft pruning {((GohspOptions)o).SoftPruning?.Epochs} + fine-tune {o.FineTune?.Epochs}");

    /// <summary>SGMP, structured gradual magnitude pruning (<see cref="SgmpOptions"/>).</summary>
    public static PruningMethodRegistration Sgmp { get; } = new("SGMP", () => new SgmpOptions(),
        o => $"gradual pruning {((SgmpOptions)o).Gradual?.Epochs} + fine-tune {o.FineTune?.Epochs}");

    /// <summary>SOMP, structured one-shot magnitude pruning (<see cref="SompOptions"/>).</summary>
    public static PruningMethodRegistration Somp { get; } = new("SOMP", () => new SompOptions(), o => $"one-shot pruning + fine-tune {o.FineTune?.Epochs}");

    private static readonly object Gate = new();
    private static PruningMethodRegistration[] _all = [Gohsp, Sgmp, Somp];

    /// <summary>Every registered method: the library's, then the others in the order they were registered.</summary>
    public static IReadOnlyList<PruningMethodRegistration> All => Volatile.Read(ref _all);

    /// <summary>
    /// Registers a method defined outside the library, so that it can be selected by its name. Registering the same
    /// registration again does nothing.
    /// </summary>
    /// <returns><paramref name="method"/>.</returns>
    /// <exception cref="ArgumentException">Another registration has the same name.</exception>
    public static PruningMethodRegistration Register(PruningMethodRegistration method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (Gate)
        {
            if (Find(method.Name) is { } existing)
                return existing == method ? method
                    : throw new ArgumentException($"A pruning method named '{method.Name}' ({existing.Label}) is registered already.", nameof(method));
            Volatile.Write(ref _all, [.. _all, method]);
            return method;
        }
    }

    /// <summary>The registered method named <paramref name="name"/> (case-insensitive); null when there is none.</summary>
    public static PruningMethodRegistration? Find(string name) =>
        All.FirstOrDefault(m => string.Equals(m.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>The registered method named <paramref name="name"/> (case-insensitive).</summary>
    /// <exception cref="ArgumentException">No method has that name; the message lists the registered ones.</exception>
    public static PruningMethodRegistration Get(string name) => Find(name ?? throw new ArgumentNullException(nameof(name)))
        ?? throw new ArgumentException($"Unknown pruning method '{name}'. Registered: {string.Join(", ", All.Select(m => m.Name))}.", nameof(name));
}
