namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// A structured pruning method: its options and how it runs. <see cref="GohspPruner"/>, <see cref="SompPruner"/> and
/// <see cref="SgmpPruner"/> are the library's; <see cref="PruningOptions.CreateMethod"/> gives the method that options
/// configure, which is how <see cref="PruningProtocol"/> and the ML.NET pruning estimators run any method.
/// </summary>
public interface IPruningMethod
{
    /// <summary>Lower-case name ("gohsp", "somp", "sgmp"): the report's <see cref="PruningReport.Method"/>, the log prefix and the training-stage prefix.</summary>
    string Name { get; }

    /// <summary>The options this method runs with.</summary>
    PruningOptions Options { get; }

    /// <summary>
    /// Prunes <see cref="PruningContext.Model"/> (not modified) and returns the pruned model with its report. Options are
    /// checked before any work.
    /// </summary>
    PruningResult Run(PruningContext context);
}
