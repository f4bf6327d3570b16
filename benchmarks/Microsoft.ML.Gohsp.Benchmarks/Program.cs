using System.Diagnostics;
using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

torch.set_num_threads(2);
var arch = ViTArchitecture.CifarTiny();
using var model = new VisionTransformerModel(arch, 0);
var opt = optim.AdamW(model.parameters(), 1e-3);
var x = randn(64, 3, 32, 32); var y = randint(0, 10, 64);
foreach (var prec in new[] { ComputePrecision.Float32, ComputePrecision.BFloat16 })
{
    model.Precision = prec; model.train();
    void Step() { using var s = NewDisposeScope(); opt.zero_grad(); var l = nn.functional.cross_entropy(model.forward(x), y); l.backward(); opt.step(); }
    for (int i = 0; i < 3; i++) Step();
    var sw = Stopwatch.StartNew(); for (int i = 0; i < 10; i++) Step();
    Console.WriteLine($"{prec} train img/s {640 / sw.Elapsed.TotalSeconds:F1}  gflops {640 * 3.0 * arch.ForwardFlops / sw.Elapsed.TotalSeconds / 1e9:F1}");
    model.eval();
    using (no_grad()) { for (int i = 0; i < 3; i++) model.forward(x).Dispose(); sw.Restart(); for (int i = 0; i < 10; i++) model.forward(x).Dispose(); }
    Console.WriteLine($"{prec} infer img/s {640 / sw.Elapsed.TotalSeconds:F1}  gflops {640.0 * arch.ForwardFlops / sw.Elapsed.TotalSeconds / 1e9:F1}");
}
