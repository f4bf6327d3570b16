using System.Runtime.CompilerServices;

namespace CustomPruningMethod;

/// <summary>Registers this assembly's pruning method when the assembly loads, so that a host that loads it (the Cifar10Pruning sample's <c>--method-assembly</c>) can select it by name.</summary>
internal static class MethodRegistration
{
#pragma warning disable CA2255 // a plug-in assembly: registering its method on load is its purpose
    [ModuleInitializer]
    internal static void RegisterOnLoad() => RandomStructuredPruning.Register();
#pragma warning restore CA2255
}
