// The runtime honours IgnoresAccessChecksTo: together with the publicized reference assemblies
// (build/Publicize.targets) it lets this library use ML.NET's internal extension points
// (TrainerEstimatorBase, ModelParametersBase, ModelSaveContext, LoadableClass) like first-party code.
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
