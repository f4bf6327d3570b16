using Microsoft.ML.Gohsp.Training;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Gohsp;

/// <summary>
/// Carries ML.NET's cancellation (<c>MLContext.CancelExecution()</c>, observed through the host's <c>CheckAlive</c>) into the
/// training loop: the loop reports progress after every optimiser step, and this progress sink checks the host there and
/// throws <see cref="OperationCanceledException"/>, so a cancelled <c>Fit</c> stops within one step. It also cancels
/// <see cref="Token"/>, which the loop checks before the next step, before the end-of-epoch work and between stages.
/// Reports are passed on to the user's progress sink.
/// </summary>
internal sealed class HostCancellation : IProgress<ViTTrainingProgress>, IDisposable
{
    private readonly IHost _host;
    private readonly IProgress<ViTTrainingProgress>? _inner;
    private readonly CancellationTokenSource _source = new();

    public HostCancellation(IHost host, IProgress<ViTTrainingProgress>? inner)
    {
        _host = host;
        _inner = inner;
    }

    /// <summary>Cancelled as soon as a check finds the host cancelled.</summary>
    public CancellationToken Token => _source.Token;

    /// <summary>Throws <see cref="OperationCanceledException"/> when the host's MLContext was cancelled.</summary>
    public void Check()
    {
        if (_host is ICancelable { IsCanceled: true })
        {
            _source.Cancel();
            throw new OperationCanceledException("MLContext.CancelExecution() was called: the ViT training stopped.", _source.Token);
        }
    }

    /// <inheritdoc />
    public void Report(ViTTrainingProgress value)
    {
        Check();
        _inner?.Report(value);
    }

    public void Dispose() => _source.Dispose();
}
