using FluentAssertions;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Gohsp;
using Xunit;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>ML.NET Transform cursors score a batch of rows per forward and give the row-by-row results.</summary>
public partial class ViTClassificationTrainerTests
{
    private sealed record Scored(float[][] Scores, uint[] Labels, uint[] Keys);

    /// <summary>Score, PredictedLabel and the pass-through label of every test row, with the model's current batch size.</summary>
    private static Scored ScoreAll(IDataView scored)
    {
        var scores = new List<float[]>();
        var labels = new List<uint>();
        var keys = new List<uint>();
        using var cursor = scored.GetRowCursor(scored.Schema);
        var s = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        var p = cursor.GetGetter<uint>(scored.Schema["PredictedLabel"]);
        var l = cursor.GetGetter<uint>(scored.Schema["Label"]);
        VBuffer<float> v = default;
        uint pl = 0, key = 0;
        while (cursor.MoveNext())
        {
            s(ref v); p(ref pl); l(ref key);
            scores.Add(v.DenseValues().ToArray());
            labels.Add(pl);
            keys.Add(key);
        }
        return new Scored(scores.ToArray(), labels.ToArray(), keys.ToArray());
    }

    private static void SameScores(float[][] actual, float[][] expected, string what)
    {
        actual.Should().HaveCount(expected.Length, what);
        double worst = 0;
        for (int i = 0; i < expected.Length; i++)
            for (int k = 0; k < expected[i].Length; k++)
                worst = Math.Max(worst, Math.Abs(actual[i][k] - expected[i][k]));
        worst.Should().BeLessThan(1e-5, $"{what}: batched and row-by-row scores differ only by float rounding of the matrix products");
    }

    private T WithBatchSize<T>(int batchSize, Func<T> run)
    {
        var model = _f.Predictor.Model;
        int before = model.ScoringBatchSize;
        model.ScoringBatchSize = batchSize;
        try { return run(); }
        finally { model.ScoringBatchSize = before; }
    }

    [Fact]
    public void TransformScoresInBatchesWithTheRowByRowResultsIncludingTheLastPartialBatch()
    {
        // 1,017 test rows: batches of 64 end with 57 rows, batches of 10 with 7
        var rowByRow = WithBatchSize(1, () => ScoreAll(_f.Model.Transform(_f.Test)));
        rowByRow.Scores.Should().HaveCount(1017);
        foreach (int batch in new[] { 64, 10 })
        {
            var batched = WithBatchSize(batch, () =>
            {
                var scored = _f.Model.Transform(_f.Test);
                using (var c = scored.GetRowCursor(scored.Schema))
                    c.GetType().Name.Should().Be("BatchCursor", "the scorer reads ahead a batch per forward");
                return ScoreAll(scored);
            });
            SameScores(batched.Scores, rowByRow.Scores, $"batch {batch}");
            batched.Labels.Should().Equal(rowByRow.Labels, $"batch {batch}");
            batched.Keys.Should().Equal(rowByRow.Keys, "pass-through columns stay on their rows");
        }
        // Evaluate gives the same metrics either way
        var m1 = WithBatchSize(1, () => _f.Ml.MulticlassClassification.Evaluate(_f.Model.Transform(_f.Test)));
        var m64 = _f.Ml.MulticlassClassification.Evaluate(_f.Model.Transform(_f.Test));
        m64.MicroAccuracy.Should().Be(m1.MicroAccuracy);
        m64.LogLoss.Should().BeApproximately(m1.LogLoss, 1e-5);
        FluentActions.Invoking(() => _f.Predictor.Model.ScoringBatchSize = 0).Should().Throw<ArgumentOutOfRangeException>()
            .Where(e => e.ParamName == "ScoringBatchSize");
    }

    [Fact]
    public void BatchedCursorsDisposedEarlyOrReadingSomeColumnsGiveTheRowByRowValues()
    {
        var reference = WithBatchSize(1, () => ScoreAll(_f.Model.Transform(_f.Test)));
        var scored = _f.Model.Transform(_f.Test);

        // disposed after 70 rows (inside the second batch of 64); a new cursor starts again from the first row
        var firstRows = new List<float[]>();
        var cursor = scored.GetRowCursor(new[] { scored.Schema["Score"] });
        var score = cursor.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        VBuffer<float> v = default;
        for (int i = 0; i < 70 && cursor.MoveNext(); i++) { score(ref v); firstRows.Add(v.DenseValues().ToArray()); }
        cursor.Dispose();
        cursor.MoveNext().Should().BeFalse("a disposed cursor has no more rows");
        SameScores(firstRows.ToArray(), reference.Scores.Take(70).ToArray(), "cursor disposed after 70 rows");
        SameScores(scored.GetColumn<float[]>("Score").Take(5).ToArray(), reference.Scores.Take(5).ToArray(), "a cursor opened afterwards");

        // only the predicted label; only the label (no forward: ML.NET's scorer); a cursor set asked for 4 cursors
        scored.GetColumn<uint>("PredictedLabel").ToArray().Should().Equal(reference.Labels);
        using (var labelOnly = scored.GetRowCursor(new[] { scored.Schema["Label"] }))
        {
            labelOnly.GetType().Name.Should().NotBe("BatchCursor");
            labelOnly.IsColumnActive(scored.Schema["Score"]).Should().BeFalse();
        }
        scored.GetColumn<uint>("Label").ToArray().Should().Equal(reference.Keys);
        var set = scored.GetRowCursorSet(new[] { scored.Schema["Score"], scored.Schema["PredictedLabel"] }, 4);
        set.Should().HaveCount(1, "one batched cursor uses every torch thread");
        var fromSet = new List<float[]>();
        var g = set[0].GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        while (set[0].MoveNext()) { g(ref v); fromSet.Add(v.DenseValues().ToArray()); }
        set[0].Dispose();
        SameScores(fromSet.ToArray(), reference.Scores, "GetRowCursorSet");

        // getters before MoveNext fail clearly
        using var fresh = scored.GetRowCursor(new[] { scored.Schema["Score"] });
        var early = fresh.GetGetter<VBuffer<float>>(scored.Schema["Score"]);
        FluentActions.Invoking(() => early(ref v)).Should().Throw<InvalidOperationException>().WithMessage("*MoveNext*");
    }

    [Fact]
    public void LoadedModelsScoreInBatchesAfterUseBatchScoringWithTheSameResults()
    {
        var path = Path.Combine(_f.TempDir, "batch-scoring.zip");
        _f.Ml.Model.SaveAtomically(_f.Model, _f.Train.Schema, path);
        var fresh = new MLContext(seed: 3);
        var loaded = fresh.Model.Load(path, out _);
        var rowByRow = ScoreAll(loaded.Transform(_f.Test));
        using (var c = loaded.Transform(_f.Test).GetRowCursor(loaded.Transform(_f.Test).Schema))
            c.GetType().Name.Should().NotBe("BatchCursor", "Model.Load rebuilds ML.NET's own scorer");

        loaded.UseBatchScoring().Should().BeSameAs(loaded);
        var scored = loaded.Transform(_f.Test);
        using (var c = scored.GetRowCursor(scored.Schema))
            c.GetType().Name.Should().Be("BatchCursor");
        var batched = ScoreAll(scored);
        SameScores(batched.Scores, rowByRow.Scores, "loaded model");
        batched.Labels.Should().Equal(rowByRow.Labels);

        // PredictionEngine still scores one row as before, and the model still saves
        ModelChecks.SamePredictions(_f.Ml, _f.Model, fresh, loaded, _f.TestSet, 3);
        fresh.Model.SaveAtomically(loaded, _f.Train.Schema, Path.Combine(_f.TempDir, "batch-scoring-again.zip"));
    }
}
