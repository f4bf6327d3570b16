using System.Reflection;
using System.Reflection.Metadata;
using System.Reflection.Metadata.Ecma335;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

// The runtime honours IgnoresAccessChecksTo: together with the publicized reference assemblies
// (build/Publicize.targets) it lets this library use ML.NET's internal extension points
// (TrainerEstimatorBase, ModelParametersBase, ModelSaveContext, LoadableClass, the scorers) like first-party code.
// Without it the runtime silently drops [assembly: LoadableClass] and rejects the overrides.
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: System.Runtime.CompilerServices.IgnoresAccessChecksTo("Microsoft.ML.Data")]

namespace System.Runtime.CompilerServices
{
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute : Attribute
    {
        public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;
        public string AssemblyName { get; }
    }
}

namespace Microsoft.ML.Gohsp
{
    /// <summary>
    /// The one place that names this library's dependence on ML.NET internals. The library compiles against publicized
    /// copies of Microsoft.ML.Core and Microsoft.ML.Data (<c>PublicizeAssemblies</c> in the project file,
    /// build/Publicize.targets) and is allowed to use them at run time by the <c>IgnoresAccessChecksTo</c> attributes above.
    /// The internal API it uses: <c>TrainerEstimatorBase</c>, <c>TrainerUtils</c>, <c>TrainContext</c> and
    /// <c>RoleMappedData</c> (ViTClassificationTrainer); <c>ModelParametersBase</c>, <c>ModelSaveContext</c>,
    /// <c>ModelLoadContext</c>, <c>VersionInfo</c> and <c>[LoadableClass]</c> (ViTModelParameters); the
    /// <c>MulticlassPredictionTransformer</c> constructor (<see cref="PredictionTransformer"/>) and <c>CatalogUtils</c> (trainer,
    /// pruning estimators, catalog); <c>ISchemaBindableMapper</c>, <c>SchemaBindablePredictorWrapper</c> and
    /// <c>RoleMappedSchema</c> (<see cref="BindViT"/>, which lets a model read an MLImage column and still save); the
    /// scorer internals walked by <see cref="ScoringPredictor"/> (ViTLocator). Which Microsoft.ML versions the package
    /// accepts is declared in Directory.Build.props (<c>MicrosoftMLVersionRange</c>); <see cref="MissingMembers()"/> tells,
    /// member by member, whether the loaded ML.NET still has everything, and a test runs it.
    /// </summary>
    internal static class MLNetInternals
    {
        /// <summary>
        /// The predictor behind a scored data view (the output of a prediction transformer's <c>Transform</c>) and the
        /// feature column it reads; null when <paramref name="view"/> is not a scorer's output.
        /// Path: <c>RowToRowScorerBase.Bindable</c> (through <c>LabelNameBindableMapper</c>, which the multiclass scorer wraps
        /// around the predictor's mapper) → <c>SchemaBindablePredictorWrapperBase.ValueMapper</c> (the predictor); the feature column from
        /// <c>GetBindings().RowMapper.InputRoleMappedSchema</c>.
        /// </summary>
        internal static (object Predictor, string? FeatureColumnName)? ScoringPredictor(IDataView view)
        {
            if (view is not RowToRowScorerBase scorer) return null;
            var predictor = PredictorOf(scorer.Bindable);
            if (predictor is null) return null;
            return (predictor, scorer.GetBindings().RowMapper.InputRoleMappedSchema.Feature?.Name);
        }

        private static object? PredictorOf(ISchemaBindableMapper bindable, int depth = 0) => bindable switch
        {
            SchemaBindablePredictorWrapperBase w => w.ValueMapper, // the predictor itself, as IValueMapper (Predictor is protected)
            MulticlassClassificationScorer.LabelNameBindableMapper l when depth < 4 => PredictorOf(l._bindable, depth + 1),
            _ => null,
        };

        /// <summary>
        /// The prediction transformer of a ViT model, the one way this library creates them (trainer, pruning estimators,
        /// pretrained import), with the batched scorer attached. A model that reads an MLImage column gets a transformer
        /// without a feature column of its own: ML.NET stores a prediction transformer's training schema with
        /// <c>BinarySaver</c>, which has no codec for MLImage and drops the column, and ML.NET's loader then cannot find a
        /// named feature column. The model names its column instead (<see cref="ViTModelParameters.ImageColumnName"/>, saved
        /// with its weights) and binds it in <see cref="BindViT"/>, so that the zip loads into the same transformer.
        /// </summary>
        internal static MulticlassPredictionTransformer<ViTModelParameters> PredictionTransformer(IHostEnvironment env, ViTModelParameters model,
            DataViewSchema trainSchema, string featureColumn, string labelColumn)
        {
            string? feature = featureColumn;
            if (model.InputKind == ImageInputKind.Image)
            {
                model.ImageColumnName = featureColumn;
                feature = null;
            }
            return ViTBatchScorer.Attach(new MulticlassPredictionTransformer<ViTModelParameters>(env, model, trainSchema, feature, labelColumn));
        }

        /// <summary>
        /// <c>ISchemaBindableMapper.Bind</c> of a ViT model: ML.NET's own <c>SchemaBindablePredictorWrapper</c> (which the
        /// scorer then rebinds on every input schema), given the model's MLImage column as the feature role when the transformer
        /// has none (<see cref="PredictionTransformer"/>). The training schema of a loaded transformer lacks that column
        /// (<c>BinarySaver</c> drops it); it is bound there as the declared image type the model stored.
        /// </summary>
        internal static ISchemaBoundMapper BindViT(ViTModelParameters model, IHostEnvironment env, RoleMappedSchema schema)
        {
            ISchemaBindableMapper standard = new SchemaBindablePredictorWrapper(model);
            if (schema.Feature is null && model.ImageColumnName is { } image)
            {
                var columns = schema.Schema;
                if (columns.GetColumnOrNull(image) is null)
                {
                    var builder = new DataViewSchema.Builder();
                    builder.AddColumns(columns.Where(c => !c.IsHidden));
                    builder.AddColumn(image, model.InputType);
                    columns = builder.ToSchema();
                }
                schema = new RoleMappedSchema(columns, schema.GetColumnRoleNames().Append(RoleMappedSchema.ColumnRole.Feature.Bind(image)));
            }
            return standard.Bind(env, schema);
        }

        private static readonly Lazy<IReadOnlyList<string>> _missing = new(() => MissingMembers());

        /// <summary>
        /// Called by every catalog entry point: throws, naming the members, when the Microsoft.ML loaded at run time lacks
        /// something this library was compiled against (a Microsoft.ML outside the declared range). Checked once per
        /// process.
        /// </summary>
        internal static void EnsureCompatible()
        {
            var missing = _missing.Value;
            if (missing.Count == 0) return;
            var mlnet = typeof(MLContext).Assembly.GetName().Version;
            throw new InvalidOperationException(
                $"Microsoft.ML.Gohsp {typeof(MLNetInternals).Assembly.GetName().Version} uses ML.NET internals and supports the Microsoft.ML versions " +
                $"its package declares; the loaded Microsoft.ML ({mlnet}) lacks {missing.Count} of them:{Environment.NewLine}  " +
                string.Join(Environment.NewLine + "  ", missing));
        }

        /// <summary>
        /// Resolves every type and member this assembly references in any Microsoft.ML assembly against the ML.NET loaded
        /// at run time; returns one line per reference that no longer resolves ("Type.Member: reason"), empty when all do.
        /// A moved internal then reads as its own name instead of a MissingMethodException deep inside a Fit.
        /// </summary>
        internal static IReadOnlyList<string> MissingMembers() => MissingMembers(out _);

        /// <summary><see cref="MissingMembers()"/>, also counting the references checked.</summary>
        internal static IReadOnlyList<string> MissingMembers(out int checkedCount)
        {
            var self = typeof(MLNetInternals).Assembly;
            var module = self.ManifestModule;
            using var stream = File.OpenRead(self.Location);
            using var pe = new System.Reflection.PortableExecutable.PEReader(stream);
            var md = pe.GetMetadataReader();
            var missing = new List<string>();
            checkedCount = 0;

            string? AssemblyOf(EntityHandle h) => h.Kind switch
            {
                HandleKind.TypeReference => md.GetTypeReference((TypeReferenceHandle)h).ResolutionScope is var s && s.Kind == HandleKind.AssemblyReference
                    ? md.GetString(md.GetAssemblyReference((AssemblyReferenceHandle)s).Name)
                    : s.Kind == HandleKind.TypeReference ? AssemblyOf((TypeReferenceHandle)s) : null,
                _ => null,
            };
            string NameOf(TypeReferenceHandle h)
            {
                var t = md.GetTypeReference(h);
                string name = md.GetString(t.Name);
                return t.ResolutionScope.Kind == HandleKind.TypeReference
                    ? NameOf((TypeReferenceHandle)t.ResolutionScope) + "+" + name
                    : md.GetString(t.Namespace) + "." + name;
            }
            bool IsMLNet(string? assembly) => assembly is not null && assembly.StartsWith("Microsoft.ML", StringComparison.Ordinal) && assembly != self.GetName().Name;

            foreach (var h in md.TypeReferences)
            {
                if (!IsMLNet(AssemblyOf(h))) continue;
                checkedCount++;
                try { module.ResolveType(MetadataTokens.GetToken(h)); }
                catch (Exception e) when (e is TypeLoadException or FileNotFoundException or FileLoadException or BadImageFormatException)
                {
                    missing.Add($"{NameOf(h)} (in {AssemblyOf(h)}): {e.GetType().Name}: {e.Message}");
                }
            }
            foreach (var h in md.MemberReferences)
            {
                var m = md.GetMemberReference(h);
                // Members of generic instantiations (TypeSpec parents) resolve only with a generic context; their
                // generic type definitions are checked as type references above and their members are used by the
                // non-generic code paths the tests run.
                if (m.Parent.Kind != HandleKind.TypeReference) continue;
                var parent = (TypeReferenceHandle)m.Parent;
                if (!IsMLNet(AssemblyOf(parent))) continue;
                checkedCount++;
                try { module.ResolveMember(MetadataTokens.GetToken(h)); }
                catch (Exception e) when (e is MissingMemberException or TypeLoadException or FileNotFoundException or FileLoadException or BadImageFormatException)
                {
                    missing.Add($"{NameOf(parent)}.{md.GetString(m.Name)} (in {AssemblyOf(parent)}): {e.GetType().Name}: {e.Message}");
                }
            }
            return missing;
        }
    }
}
