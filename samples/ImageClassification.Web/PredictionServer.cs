using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.Features;

namespace ImageClassification.Web;

/// <summary>The web app: <c>POST /predict</c> with an image file (multipart/form-data) → its class and scores as JSON.</summary>
public static class PredictionServer
{
    /// <summary>Largest accepted upload (the image file), in bytes: 10 MiB.</summary>
    public const long DefaultMaxUploadBytes = 10 << 20;

    /// <summary>
    /// Builds the app on Kestrel at <paramref name="url"/> (<c>http://127.0.0.1:0</c> picks a free port; after
    /// <c>StartAsync</c>, <c>app.Urls</c> holds the bound one), serving the model saved at <paramref name="modelPath"/>.
    /// </summary>
    public static WebApplication Create(string modelPath, string url, long maxUploadBytes = DefaultMaxUploadBytes)
    {
        var pool = new PredictionEnginePool(modelPath); // loaded before the first request; a missing model fails here
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseUrls(url);
        // the whole request (form framing included) and the file in it; a larger upload gets 413 and the server goes on
        builder.WebHost.ConfigureKestrel(o => o.Limits.MaxRequestBodySize = maxUploadBytes + (64 << 10));
        builder.Services.Configure<FormOptions>(o => o.MultipartBodyLengthLimit = maxUploadBytes);
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.TypeInfoResolverChain.Insert(0, PredictionJson.Default));
        builder.Services.AddSingleton(pool);
        var app = builder.Build();
        app.MapPost("/predict", (HttpRequest request, PredictionEnginePool engines, CancellationToken ct) => PredictAsync(request, engines, maxUploadBytes, ct));
        return app;
    }

    private static async Task<IResult> PredictAsync(HttpRequest request, PredictionEnginePool engines, long maxUploadBytes, CancellationToken ct)
    {
        if (!request.HasFormContentType)
            return Error(StatusCodes.Status415UnsupportedMediaType, "POST /predict takes multipart/form-data with one image file (form field 'image').");
        IFormCollection form;
        try
        {
            form = await request.ReadFormAsync(ct);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return Error(StatusCodes.Status413PayloadTooLarge, $"The upload is larger than the limit of {maxUploadBytes:N0} bytes.");
        }
        catch (InvalidDataException e)
        {
            // the form reader's own limits (MultipartBodyLengthLimit) and malformed multipart bodies
            bool tooLarge = e.Message.Contains("limit", StringComparison.OrdinalIgnoreCase);
            return tooLarge
                ? Error(StatusCodes.Status413PayloadTooLarge, $"The image file is larger than the limit of {maxUploadBytes:N0} bytes.")
                : Error(StatusCodes.Status400BadRequest, $"The multipart form could not be read: {e.Message}");
        }
        var file = form.Files.GetFile("image") ?? (form.Files.Count == 1 ? form.Files[0] : null);
        if (file is null) return Error(StatusCodes.Status400BadRequest, "No image file in the form: send one file in the form field 'image'.");
        if (file.Length == 0) return Error(StatusCodes.Status400BadRequest, $"The file '{file.FileName}' is empty; expected an image (PNG, JPEG, BMP, GIF or WebP).");
        var bytes = new byte[file.Length];
        await using (var stream = file.OpenReadStream())
            await stream.ReadExactlyAsync(bytes, ct);
        try
        {
            var output = engines.Predict(new MLModel.ModelInput { ImageSource = bytes });
            var scores = engines.Labels.Select((l, i) => new LabelScore(l, output.Score[i])).OrderByDescending(s => s.Score).ToArray();
            return Results.Json(new Prediction(output.PredictedLabel, scores), PredictionJson.Default.Prediction);
        }
        catch (ArgumentException e)
        {
            return Error(StatusCodes.Status400BadRequest, $"The file '{file.FileName}' is not an image the model can read: {e.Message}");
        }
    }

    private static IResult Error(int status, string message) => Results.Json(new ErrorResponse(message), PredictionJson.Default.ErrorResponse, statusCode: status);
}

/// <summary>The answer of <c>POST /predict</c>: the predicted class and every class's score, best first.</summary>
public sealed record Prediction(string PredictedLabel, LabelScore[] Scores);

/// <summary>One class and its softmax score.</summary>
public sealed record LabelScore(string Label, float Score);

/// <summary>The body of a 4xx answer.</summary>
public sealed record ErrorResponse(string Error);

/// <summary>Source-generated JSON (camelCase) for the endpoint's answers.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(Prediction))]
[JsonSerializable(typeof(ErrorResponse))]
public sealed partial class PredictionJson : JsonSerializerContext;
