// The served model: POST /predict with an image file (multipart/form-data, field 'image') answers its class and scores.
//   dotnet ImageClassification.Web.dll train <images folder> <model.zip> [--preset cifar-tiny] [--epochs 30] [--pruning-epochs 5] [--sparsity 0.5]
//   dotnet ImageClassification.Web.dll serve <model.zip> [--urls http://127.0.0.1:5000]
//   dotnet ImageClassification.Web.dll bench <model.zip> <images folder> [--clients 1,8] [--requests 50] [--rounds 3]
//   dotnet ImageClassification.Web.dll cifar-to-folder <cifar-10 folder> <images folder> [--count 1000] [--split train|test]
// bench serves the model on a loopback port and drives it with concurrent clients; its last line is one JSON object.
// cifar-to-folder writes CIFAR-10 images as PNG files in a folder per class, the layout Train(folder) reads.
using System.Diagnostics;
using System.Text.Json;
using ImageClassification;
using ImageClassification.Web;
using Microsoft.ML.Gohsp.Diagnostics;

string Flag(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
switch (args)
{
    case ["train", var folder, var output, ..]:
    {
        var settings = new MLModel.TrainingSettings
        {
            ArchitecturePreset = Flag("--preset", "cifar-tiny"),
            Epochs = int.Parse(Flag("--epochs", "30")),
            PruningEpochs = int.Parse(Flag("--pruning-epochs", "5")),
            Sparsity = double.Parse(Flag("--sparsity", "0.5"), System.Globalization.CultureInfo.InvariantCulture),
        };
        var sw = Stopwatch.StartNew();
        MLModel.Train(folder, output, settings, Console.WriteLine);
        Console.WriteLine($"trained, pruned and saved {output} in {sw.Elapsed.TotalSeconds:F0} s");
        return 0;
    }
    case ["serve", var model, ..]:
    {
        var app = PredictionServer.Create(model, Flag("--urls", "http://127.0.0.1:5000"));
        await app.StartAsync();
        Console.WriteLine($"serving {model} at {string.Join(", ", app.Urls)}: POST /predict (multipart/form-data, field 'image')");
        await app.WaitForShutdownAsync();
        return 0;
    }
    case ["bench", var model, var folder, ..]:
    {
        // --clients 1,8: the configurations are interleaved round by round; each reports the median round's requests/s
        // and the p50/p99 latency over all its rounds' requests
        var clientCounts = Flag("--clients", "8").Split(',').Select(int.Parse).ToArray();
        int requests = int.Parse(Flag("--requests", "50")), rounds = int.Parse(Flag("--rounds", "3"));
        var images = MLModel.LoadImagesFromFolder(folder).Select(i => i.ImageSource).Take(64).ToList();
        await using var app = PredictionServer.Create(model, "http://127.0.0.1:0");
        await app.StartAsync();
        var predict = new Uri(new Uri(app.Urls.First()), "/predict");
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
        await LoadDriver.RunAsync(http, predict, images, clientCounts.Max(), 5); // warm-up: engines, connections, JIT
        var latencies = clientCounts.ToDictionary(c => c, _ => new List<double>());
        var rates = clientCounts.ToDictionary(c => c, _ => new List<double>());
        for (int r = 0; r < rounds; r++)
            foreach (int clients in clientCounts)
            {
                var sw = Stopwatch.StartNew();
                var responses = await LoadDriver.RunAsync(http, predict, images, clients, requests);
                double seconds = sw.Elapsed.TotalSeconds;
                var failed = responses.Where(x => x.Status != 200).ToList();
                if (failed.Count > 0) { Console.Error.WriteLine($"{failed.Count} of {responses.Count} requests failed: {failed[0].Body}"); return 1; }
                latencies[clients].AddRange(responses.Select(x => x.Milliseconds));
                rates[clients].Add(responses.Count / seconds);
                Console.WriteLine($"round {r + 1}, {clients} client(s): {responses.Count} requests in {seconds:F2} s = {responses.Count / seconds:F1} requests/s");
            }
        var machine = MachineInfo.Probe();
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            benchmark = "POST /predict",
            model = Path.GetFullPath(model),
            requestsPerClient = requests,
            rounds,
            results = clientCounts.Select(c =>
            {
                var l = latencies[c].Order().ToList();
                var rate = rates[c].Order().ToList();
                return new { clients = c, p50Ms = Math.Round(LoadDriver.Quantile(l, 0.50), 2), p99Ms = Math.Round(LoadDriver.Quantile(l, 0.99), 2), requestsPerSecond = Math.Round(rate[rate.Count / 2], 1) };
            }),
            cpu = machine.CpuModel,
            isa = machine.IsaFlags,
            cores = machine.LogicalCores,
            torchThreads = machine.TorchThreads,
        }));
        return 0;
    }
    case ["cifar-to-folder", var cifar, var folder, ..]:
    {
        var split = Flag("--split", "train") == "test" ? Microsoft.ML.Gohsp.Data.Cifar10Split.Test : Microsoft.ML.Gohsp.Data.Cifar10Split.Train;
        var set = Microsoft.ML.Gohsp.Data.Cifar10.Read(cifar, split, int.Parse(Flag("--count", "1000")));
        const int n = 32 * 32;
        for (int i = 0; i < set.Count; i++)
        {
            var planar = set.GetImage(i);
            var rgba = new byte[4 * n];
            for (int p = 0; p < n; p++) { rgba[4 * p] = planar[p]; rgba[4 * p + 1] = planar[n + p]; rgba[4 * p + 2] = planar[2 * n + p]; rgba[4 * p + 3] = 255; }
            using var image = Microsoft.ML.Data.MLImage.CreateFromPixels(32, 32, Microsoft.ML.Data.MLPixelFormat.Rgba32, rgba);
            image.Save(Path.Combine(Directory.CreateDirectory(Path.Combine(folder, set.ClassNames[set.Labels[i]])).FullName, $"{i:D5}.png"));
        }
        Console.WriteLine($"{set.Count} PNG files in {folder}");
        return 0;
    }
    default:
        Console.Error.WriteLine("usage: ImageClassification.Web {train <folder> <model.zip> | serve <model.zip> | bench <model.zip> <folder> | cifar-to-folder <cifar-10 folder> <folder>} [flags]");
        return 2;
}
