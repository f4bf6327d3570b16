using System.Text.RegularExpressions;
using FluentAssertions;

namespace Microsoft.ML.Gohsp.Tests;

/// <summary>
/// Every repository path that README.md and docs/*.md name in backquotes exists: a path that starts with one of the
/// repository's top-level folders is taken from the repository root, and a source path such as <c>MLNet/Foo.cs</c> from
/// the library's project folder (the docs name them that way). Paths with placeholders (<c>&lt;…&gt;</c>, <c>{…}</c>,
/// <c>*</c>, <c>…</c>, <c>N</c> segments) and paths outside the repository (<c>../shared</c>, <c>/proc</c>, <c>~</c>) are
/// not checked.
/// </summary>
public class DocsPathsTests
{
    internal static readonly string Root = RepositoryRoot();

    private static readonly string[] TopLevel = ["src/", "test/", "samples/", "benchmarks/", "build/", "docs/", ".ci/"];
    private static readonly string[] SourceFolders =
        ["MLNet/", "VisionTransformer/", "Training/", "Pruning/", "Interop/", "Data/", "Diagnostics/", "Platform/"];

    /// <summary>
    /// The repository paths a markdown text names: backquoted tokens by the rules above, and file paths written without
    /// backquotes (a known folder, then a name with a file extension, such as MLNet/Foo.cs in running text).
    /// </summary>
    internal static IEnumerable<string> NamedPaths(string markdown) =>
        Regex.Matches(markdown, "`([^`\\s]+)`").Select(m => m.Groups[1].Value.TrimEnd('.', ',', ';', ':', ')'))
            .Where(p => TopLevel.Any(p.StartsWith) || SourceFolders.Any(p.StartsWith) || p is "README.md" or "CHANGELOG.md" or "build.sh" or "build.cmd")
            .Concat(Regex.Matches(markdown, BareFilePath).Select(m => m.Groups[1].Value))
            .Where(p => !Regex.IsMatch(p, @"[<>{}*…]|\.\.\.|(^|/)N(/|$)|-N/"))
            .Distinct();

    private const string BareFilePath =
        @"(?<![\w/.`-])((?:src|test|samples|benchmarks|build|docs|\.ci|MLNet|VisionTransformer|Training|Pruning|Interop|Data|Diagnostics|Platform)/[\w./-]*\w\.(?:cs|md|targets|props|c|py|sh|json|csproj|png))";

    /// <summary>Whether <paramref name="path"/> exists from the repository root or, for a source path, the library's folder.</summary>
    internal static bool Exists(string root, string path)
    {
        string[] bases = SourceFolders.Any(path.StartsWith) ? [Path.Combine(root, "src", "Microsoft.ML.Gohsp"), root] : [root];
        return bases.Any(b => File.Exists(Path.Combine(b, path)) || Directory.Exists(Path.Combine(b, path)));
    }

    [Fact]
    public void EveryPathTheDocsNameExists()
    {
        var pages = Directory.GetFiles(Path.Combine(Root, "docs"), "*.md").Append(Path.Combine(Root, "README.md")).ToArray();
        pages.Length.Should().BeGreaterThan(5, "the docs are found");
        var missing = pages.SelectMany(page => NamedPaths(File.ReadAllText(page))
                .Where(p => !Exists(Root, p)).Select(p => $"{Path.GetRelativePath(Root, page)}: `{p}`"))
            .ToArray();
        missing.Should().BeEmpty("every path a page names must exist in the repository");
        pages.SelectMany(p => NamedPaths(File.ReadAllText(p))).Should().Contain("src/Microsoft.ML.Gohsp/Diagnostics/MachineInfo.cs", "the check reads the paths the docs name");
    }

    [Fact]
    public void TheCheckFindsAMissingPathAndSkipsPlaceholders()
    {
        var named = NamedPaths("see `MLNet/NoSuchFile.cs` and `docs/results.md`, `out/seed-N/`, `MLNet/Gohsp{A,B}Estimator.cs`, `../shared/data`, " +
            "`test/.../Fixtures`, and in running text (MLNet/Gone.cs) or ../shared/notes/x.md").ToArray();
        named.Should().Equal("MLNet/NoSuchFile.cs", "docs/results.md", "MLNet/Gone.cs");
        Exists(Root, "MLNet/NoSuchFile.cs").Should().BeFalse();
        Exists(Root, "MLNet/MLNetInternals.cs").Should().BeTrue("a source path is taken from the library's folder");
        Exists(Root, "docs/results.md").Should().BeTrue();
    }

    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Microsoft.ML.Gohsp.sln"))) return d.FullName;
        throw new DirectoryNotFoundException("The repository root (Microsoft.ML.Gohsp.sln) is not above the test's folder.");
    }
}
