using System.Globalization;
using System.Reflection;

namespace Microsoft.ML.Gohsp.Training;

/// <summary>
/// How a training run's checkpoint fingerprint writes settings: the one form of <see cref="ViTTrainingOptions.Fingerprint"/>
/// and of the hooks' <see cref="ITrainingHook.Fingerprint"/>, so that a checkpoint resumes only a run with the same settings.
/// </summary>
internal static class RunFingerprint
{
    /// <summary>
    /// One setting: floating-point scalars round-trip ("R"), vectors are comma-separated, whole numbers, flags and enums as
    /// they print, all in the invariant culture; null for a value of another type (it has no fingerprint form).
    /// </summary>
    public static string? Value(object? value) => value switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        float[] v => string.Join(",", v.Select(x => x.ToString("R", CultureInfo.InvariantCulture))),
        int or long or bool or Enum or string => Convert.ToString(value, CultureInfo.InvariantCulture),
        _ => null,
    };

    /// <summary>
    /// Every public readable property that the type of <paramref name="settings"/> declares, in declaration order, as
    /// <c>Type(Name=value …)</c>.
    /// </summary>
    /// <exception cref="InvalidOperationException">A property's type has no form in <see cref="Value"/>.</exception>
    public static string Of(object settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var type = settings.GetType();
        var parts = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.DeclaringType == type && p.CanRead && p.GetIndexParameters().Length == 0)
            .OrderBy(p => p.MetadataToken)
            .Select(p => $"{p.Name}=" + (Value(p.GetValue(settings)) ?? throw new InvalidOperationException(
                $"{type.Name}.{p.Name} ({p.PropertyType.Name}) has no fingerprint form: give its type one in RunFingerprint.Value.")));
        return $"{type.Name}({string.Join(" ", parts)})";
    }
}
