using System.Diagnostics;
using System.Net.Http.Headers;

namespace ImageClassification.Web;

/// <summary>Concurrent clients posting images to <c>/predict</c> over HTTP: the load test and the latency benchmark.</summary>
public static class LoadDriver
{
    /// <summary>One request: which client sent it, which image, the status, the body and the latency.</summary>
    public sealed record Response(int Client, int Image, int Status, string Body, double Milliseconds);

    /// <summary>
    /// <paramref name="clients"/> concurrent clients, each posting <paramref name="requestsPerClient"/> images one after
    /// another (client c's request i sends image (c·requestsPerClient + i) mod the image count).
    /// </summary>
    public static async Task<IReadOnlyList<Response>> RunAsync(HttpClient http, Uri predict, IReadOnlyList<byte[]> images, int clients, int requestsPerClient)
    {
        var results = new Response[clients * requestsPerClient];
        await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (int i = 0; i < requestsPerClient; i++)
            {
                int n = c * requestsPerClient + i, image = n % images.Count;
                var sw = Stopwatch.StartNew();
                var (status, body) = await PostImageAsync(http, predict, images[image], $"image{image}.png");
                results[n] = new Response(c, image, status, body, sw.Elapsed.TotalMilliseconds);
            }
        })));
        return results;
    }

    /// <summary>
    /// Posts one file as multipart/form-data (field 'image'); returns the status code and the body. With
    /// <c>expectContinue</c> the request carries <c>Expect: 100-continue</c>, so that a server that refuses the upload
    /// (413) answers before the body is sent.
    /// </summary>
    public static async Task<(int Status, string Body)> PostImageAsync(HttpClient http, Uri predict, byte[] file, string fileName, bool expectContinue = false)
    {
        using var content = new MultipartFormDataContent();
        var part = new ByteArrayContent(file);
        part.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        content.Add(part, "image", fileName);
        using var request = new HttpRequestMessage(HttpMethod.Post, predict) { Content = content };
        if (expectContinue) request.Headers.ExpectContinue = true;
        using var response = await http.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>The q-quantile (nearest rank) of <paramref name="sorted"/>.</summary>
    public static double Quantile(IReadOnlyList<double> sorted, double q) => sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Count) - 1, 0, sorted.Count - 1)];
}
