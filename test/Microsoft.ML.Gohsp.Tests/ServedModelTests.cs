using System.Text.Json;
using FluentAssertions;
using ImageClassification;
using ImageClassification.Web;
using Microsoft.ML.Gohsp.Data;
using Xunit.Abstractions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// samples/ImageClassification (Model Builder's shape: ModelInput/ModelOutput, a static Predict on a pool of prediction
/// engines, Train(folder) that trains, prunes and saves) and its web endpoint, served by Kestrel on 127.0.0.1 and
/// driven over real HTTP.
/// </summary>
public class ServedModelTests(ITestOutputHelper output)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    [Fact]
    public async Task PrunedModelServesConcurrentClientsTheSingleThreadedAnswersAndRefusesBadUploadsWhileServingOn()
    {
        var tmp = Directory.CreateTempSubdirectory("gohsp-served-");
        try
        {
            await ServeAndDrive(tmp.FullName);
        }
        finally
        {
            tmp.Delete(recursive: true);
        }
    }

    private async Task ServeAndDrive(string folder)
    {
        // a folder per class: 4 real CIFAR-10 training images each; 8 test images to predict
        var set = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Train, 400);
        var perClass = new int[set.ClassNames.Count];
        for (int i = 0; i < set.Count; i++)
        {
            int label = set.Labels[i];
            if (perClass[label]++ >= 4) continue;
            var dir = Directory.CreateDirectory(Path.Combine(folder, "images", set.ClassNames[label])).FullName;
            File.WriteAllBytes(Path.Combine(dir, $"{i:D5}.png"), EncodedImageInputTests.Png(set.GetImage(i)));
        }
        var test = Cifar10.Read(Cifar10Tests.SubsetDir, Cifar10Split.Test, 8);
        var images = Enumerable.Range(0, test.Count).Select(i => EncodedImageInputTests.Png(test.GetImage(i), size: i % 4 == 3 ? 48 : 32)).ToList();

        // Train(folder): trains, prunes with GOHSP, saves
        string zip = Path.Combine(folder, "MLModel.zip");
        var trained = MLModel.Train(Path.Combine(folder, "images"), zip, new MLModel.TrainingSettings
        {
            ArchitecturePreset = "cifar-micro", Epochs = 1, PruningEpochs = 1, BatchSize = 16, Sparsity = 0.5,
        });
        File.Exists(zip).Should().BeTrue();
        ((IEnumerable<ML.ITransformer>)trained).OfType<ML.Data.MulticlassPredictionTransformer<ViTModelParameters>>().Single().Model.PruningReport
            .Should().NotBeNull("the saved model is the pruned ViT");

        // single-threaded answers through the static Predict (one pooled engine at a time)
        MLModel.ModelPath = zip;
        var expected = images.Select(b => MLModel.Predict(new MLModel.ModelInput { ImageSource = b })).ToList();
        var labels = MLModel.Engines.Labels;
        labels.Should().BeEquivalentTo(set.ClassNames);
        expected.Select(e => e.Score.Sum()).Should().AllSatisfy(s => s.Should().BeApproximately(1f, 1e-4f));

        await using var app = PredictionServer.Create(zip, "http://127.0.0.1:0");
        await app.StartAsync();
        var predict = new Uri(new Uri(app.Urls.Single()), "/predict");
        predict.Host.Should().Be("127.0.0.1");
        using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(2) };

        void ShouldEqualExpected(int status, string body, int image)
        {
            status.Should().Be(200, body);
            var answer = JsonSerializer.Deserialize<Prediction>(body, Json)!;
            answer.PredictedLabel.Should().Be(expected[image].PredictedLabel);
            answer.Scores.Select(s => s.Score).Should().BeInDescendingOrder();
            answer.Scores.ToDictionary(s => s.Label, s => s.Score).Should().Equal(
                labels.Select((l, k) => (l, k)).ToDictionary(p => p.l, p => expected[image].Score[p.k]), "image {0}'s scores over HTTP are the single-threaded ones", image);
        }

        // 8 concurrent clients × 50 requests: no error, every answer the single-threaded one
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var responses = await LoadDriver.RunAsync(http, predict, images, clients: 8, requestsPerClient: 50);
        output.WriteLine($"{responses.Count} requests from 8 clients in {sw.Elapsed.TotalSeconds:F1} s");
        responses.Should().HaveCount(400);
        foreach (var r in responses) ShouldEqualExpected(r.Status, r.Body, r.Image);
        responses.Select(r => r.Image).Distinct().Should().HaveCount(images.Count);

        // bad uploads: a 4xx with a message, and the server keeps serving
        async Task StillServes()
        {
            var (status, body) = await LoadDriver.PostImageAsync(http, predict, images[1], "again.png");
            ShouldEqualExpected(status, body, 1);
        }
        async Task ShouldBeRefused(Task<(int Status, string Body)> send, int status, string message)
        {
            var (code, body) = await send;
            code.Should().Be(status, body);
            JsonSerializer.Deserialize<ErrorResponse>(body, Json)!.Error.Should().Contain(message);
            await StillServes();
        }
        await ShouldBeRefused(LoadDriver.PostImageAsync(http, predict, "not an image, a text file"u8.ToArray(), "notes.png"), 400, "not an image the model can read");
        await ShouldBeRefused(LoadDriver.PostImageAsync(http, predict, [], "empty.png"), 400, "is empty");
        // 50 MB, sent as curl and HttpClient send large bodies when asked to: the server refuses it from its Content-Length,
        // before the body is sent (Kestrel checks the limit before it answers 100 Continue)
        await ShouldBeRefused(LoadDriver.PostImageAsync(http, predict, new byte[50 << 20], "huge.png", expectContinue: true), 413, "larger than the limit");
        using (var json = new StringContent("{}", System.Text.Encoding.UTF8, "application/json"))
        {
            using var response = await http.PostAsync(predict, json);
            await ShouldBeRefused(Task.FromResult(((int)response.StatusCode, await response.Content.ReadAsStringAsync())), 415, "multipart/form-data");
        }
        (await LoadDriver.RunAsync(http, predict, images, clients: 2, requestsPerClient: 8)).Should().AllSatisfy(r => ShouldEqualExpected(r.Status, r.Body, r.Image));
        await app.StopAsync();
    }
}
