using Microsoft.ML.Gohsp.VisionTransformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Gohsp.Pruning;

/// <summary>
/// ℓ2 importance of every prunable structure (<see cref="StructuredProjection.Magnitude"/>): the mean squared magnitude per
/// parameter of the q/k rows, v rows with their output-projection columns, heads and MLP neurons.
/// </summary>
internal static class MagnitudeImportance
{
    /// <summary>
    /// Importance of every structure of every block. <paramref name="weightOf"/> maps a parameter to the tensor to measure
    /// (default: the parameter itself; ADMM passes W + U).
    /// </summary>
    public static BlockImportance[] Measure(VisionTransformerModel model, Func<TorchSharp.Modules.Parameter, Tensor>? weightOf = null)
    {
        weightOf ??= p => p;
        var a = model.Architecture;
        var result = new BlockImportance[a.Depth];
        using var _ = no_grad();
        for (int bi = 0; bi < a.Depth; bi++)
        {
            var blk = model.Blocks[bi];
            using var scope = NewDisposeScope();
            // rows of qkv: squared norms over inputs + bias²
            var qkvRows = Rows(weightOf(blk.attn.qkv.weight), weightOf(blk.attn.qkv.bias));       // [h(2dq+dv)]
            var projCols = Cols(weightOf(blk.attn.proj.weight));                                     // [h dv]
            var fc1Rows = Rows(weightOf(blk.mlp.fc1.weight), weightOf(blk.mlp.fc1.bias));            // [m]
            var fc2Cols = Cols(weightOf(blk.mlp.fc2.weight));                                        // [m]
            result[bi] = OfBlock(a.Blocks[bi], a.EmbedDim, qkvRows, projCols, fc1Rows, fc2Cols);
        }
        return result;
    }

    // per structure: its squared norms summed, divided by its parameter count (d inputs per row, plus a bias for rows)
    private static BlockImportance OfBlock(ViTBlockSpec spec, int d, float[] qkvRows, float[] projCols, float[] fc1Rows, float[] fc2Cols)
    {
        int h = spec.Heads, dq = spec.QkDim, dv = spec.VDim, m = spec.MlpHidden;
        var layout = spec.Qkv;
        var heads = new float[h]; var qkd = new float[h][]; var vd = new float[h][];
        for (int i = 0; i < h; i++)
        {
            qkd[i] = new float[dq]; vd[i] = new float[dv];
            double sum = 0;
            for (int j = 0; j < dq; j++)
            {
                float s = qkvRows[layout.QRow(i, j)] + qkvRows[layout.KRow(i, j)];
                qkd[i][j] = s / (2 * (d + 1));
                sum += s;
            }
            for (int j = 0; j < dv; j++)
            {
                float s = qkvRows[layout.VRow(i, j)] + projCols[layout.ProjColumn(i, j)];
                vd[i][j] = s / (2 * d + 1);
                sum += s;
            }
            heads[i] = (float)(sum / ((2 * dq + dv) * (d + 1) + dv * d));
        }
        var mlp = new float[m];
        for (int j = 0; j < m; j++) mlp[j] = (fc1Rows[j] + fc2Cols[j]) / (2 * d + 1);
        return new BlockImportance { Heads = heads, QkDims = qkd, VDims = vd, Mlp = mlp };
    }

    private static float[] Rows(Tensor w, Tensor b)
    {
        using var s = w.square().sum(1).add_(b.square());
        return s.to(ScalarType.Float32).cpu().data<float>().ToArray();
    }

    private static float[] Cols(Tensor w)
    {
        using var s = w.square().sum(new long[] { 0 }); // not sum(0): a literal 0 converts to the ScalarType overload
        return s.to(ScalarType.Float32).cpu().data<float>().ToArray();
    }
}
