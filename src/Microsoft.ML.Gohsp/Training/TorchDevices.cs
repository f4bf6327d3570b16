using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Training;

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

    /// <summary>Applies the intra-op thread count (0 leaves TorchSharp's default).</summary>
    public static void ApplyThreads(int numberOfThreads)
    {
        if (numberOfThreads > 0 && get_num_threads() != numberOfThreads) set_num_threads(numberOfThreads);
    }
}
