using Microsoft.ML.Gohsp.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Platform;

/// <summary>Resolves <see cref="ViTDevice"/> to a TorchSharp device and applies thread settings.</summary>
public static class TorchDevices
{
    /// <summary>Returns the device for the option: Auto picks CUDA when <c>torch.cuda.is_available()</c>.</summary>
    /// <exception cref="InvalidOperationException">Cuda was requested but no CUDA device is available.</exception>
    public static Device Resolve(ViTDevice device) => device switch
    {
        ViTDevice.Cpu => CPU,
        ViTDevice.Cuda => cuda.is_available()
            ? CUDA
            : throw new InvalidOperationException("Device = Cuda was requested but torch.cuda.is_available() is false. " +
                "Build with -p:TorchBackend=cuda on a machine with an NVIDIA GPU, or use Device = Auto or Cpu."),
        _ => cuda.is_available() ? CUDA : CPU,
    };

    /// <summary>Applies the intra-op thread count (0 leaves TorchSharp's default) for the rest of the process.</summary>
    public static void ApplyThreads(int numberOfThreads)
    {
        if (numberOfThreads > 0 && get_num_threads() != numberOfThreads) set_num_threads(numberOfThreads);
    }

    /// <summary>
    /// Applies the intra-op thread count (0 leaves TorchSharp's default) until the returned object is disposed, which
    /// restores the process's previous setting: a <c>Fit</c> with <c>NumberOfThreads = 2</c> leaves <c>torch.get_num_threads()</c>
    /// as it found it.
    /// </summary>
    public static IDisposable UseThreads(int numberOfThreads)
    {
        if (numberOfThreads <= 0) return ThreadsScope.None;
        int previous = get_num_threads();
        if (previous != numberOfThreads) set_num_threads(numberOfThreads);
        return new ThreadsScope(previous);
    }

    private sealed class ThreadsScope(int previous) : IDisposable
    {
        internal static readonly ThreadsScope None = new(0);
        private int _previous = previous;

        public void Dispose()
        {
            int p = Interlocked.Exchange(ref _previous, 0);
            if (p > 0 && get_num_threads() != p) set_num_threads(p);
        }
    }
}
