#!/usr/bin/env bash
# Microsoft.ML.Gohsp build entry point. Verbs:
#   ./build.sh test                  install prerequisites, build, run the test suite and the extension tests, the ML.NET-layer tests again on
#                                    ML.NET 6.0.0, then the package check: pack the library, build the user apps
#                                    test/consumer (ML.NET 5.0.1) and test/consumer-mlnet6 (6.0.0) against it, run them
#   ./build.sh pack                  build and pack Microsoft.ML.Gohsp (.nupkg + .snupkg) into artifacts/packages
#   ./build.sh sample [-- flags]     install prerequisites, build and run samples/Cifar10Pruning
#   ./build.sh bench [-- flags]      run the benchmark; its last output line is one JSON object
#   ./build.sh build                 build everything (Release)
#   ./build.sh consumer              the package check alone
#   ./build.sh mlnet6                the ML.NET-layer tests on ML.NET 6.0.0 alone
# Options (environment): CONFIGURATION (default Release), TORCH_BACKEND (cpu | cuda; default cpu).
set -euo pipefail
cd "$(dirname "$0")"
verb="${1:-test}"; shift || true
[ "${1:-}" = "--" ] && shift
CONFIGURATION="${CONFIGURATION:-Release}"
TORCH_BACKEND="${TORCH_BACKEND:-cpu}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

ensure_prerequisites() {
  command -v dotnet >/dev/null || { echo "error: the .NET SDK (dotnet) is required: https://dot.net" >&2; exit 1; }
  # TorchSharp 0.107's natives need GLIBCXX_3.4.32; on older libstdc++ (Debian 12, Ubuntu 22.04) the build patches
  # them (build/TorchSharpNativeCompat.targets), which needs patchelf and a C compiler. Install them only when needed.
  if [ "$(uname -s)" = "Linux" ]; then
    # awk reads to the end (no early exit): an early exit would SIGPIPE ldconfig, which pipefail turns into exit 141
    local stdcxx; stdcxx=$(/sbin/ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ && !found {print $NF; found=1}')
    if [ -n "$stdcxx" ] && ! grep -q GLIBCXX_3.4.32 "$stdcxx"; then
      local missing=()
      command -v patchelf >/dev/null || missing+=(patchelf)
      command -v cc >/dev/null || missing+=(gcc)
      if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing ${missing[*]} (needed to make TorchSharp load on this host's libstdc++)..."
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
      fi
    fi
  fi
}

# The CIFAR-10 subset the tests and the consumer check read: $CIFAR10_SUBSET_DIR, else the first shared/data beside a parent.
cifar_subset() {
  if [ -n "${CIFAR10_SUBSET_DIR:-}" ]; then echo "$CIFAR10_SUBSET_DIR"; return; fi
  local d; d=$(pwd)
  while [ "$d" != "/" ]; do
    [ -d "$d/shared/data/cifar-10-subset" ] && { echo "$d/shared/data/cifar-10-subset"; return; }
    d=$(dirname "$d")
  done
  echo "../shared/data/cifar-10-subset"
}

# Package check: pack the built library under a version no earlier run used (so a package cached in ~/.nuget/packages
# can never stand in for this build), then build two user apps against it (outside the solution, PackageReference only,
# their own nuget.config) and run them end to end on PNG files: test/consumer on ML.NET 5.0.1 and test/consumer-mlnet6 on
# ML.NET 6.0.0 beside Microsoft.ML.TorchSharp. NU1608 (a dependency outside a package's declared range) is an error.
consumer_check() {
  local feed=artifacts/feed prefix version
  prefix=$(sed -n 's:.*<VersionPrefix>\(.*\)</VersionPrefix>.*:\1:p' Directory.Build.props)
  version="$prefix-local.$(date -u +%Y%m%d%H%M%S).$$"
  rm -rf "$feed" test/consumer/obj test/consumer/bin test/consumer-mlnet6/obj test/consumer-mlnet6/bin && mkdir -p "$feed"
  rm -rf "${NUGET_PACKAGES:-$HOME/.nuget/packages}/microsoft.ml.gohsp/$prefix-local."*   # earlier checks' packages
  echo "Package check: Microsoft.ML.Gohsp $version"
  dotnet pack src/Microsoft.ML.Gohsp/Microsoft.ML.Gohsp.csproj -c "$CONFIGURATION" --no-build -o "$feed" \
    -p:VersionSuffix="${version#"$prefix"-}" -nologo -clp:"ErrorsOnly;Summary"
  local app mlnet
  for app in consumer:5.0.1 consumer-mlnet6:6.0.0; do
    mlnet=${app#*:}; app=${app%%:*}
    echo "Package check: test/$app on Microsoft.ML $mlnet"
    dotnet build test/"$app" -c "$CONFIGURATION" -p:GohspPackageVersion="$version" -warnaserror:NU1608 -nologo -clp:"ErrorsOnly;Summary"
    GOHSP_EXPECT_MLNET="$mlnet" dotnet test/"$app"/bin/"$CONFIGURATION"/net10.0/GohspConsumer*.dll "$(cifar_subset)" artifacts/"$app"
  done
  readme_snippet_check "$version"
}

# The library's ML.NET-layer tests on ML.NET 6.0.0: the test project restored against 6.0.0 (Directory.Build.props:
# its obj/ and bin/ under artifacts/mlnet6.0.0/), the library and apps as the main build compiled them (against 5.0.1,
# as the package ships). Only the tests that exercise ML.NET run: the whole suite on both versions would double its time.
mlnet6_tests() {
  echo "ML.NET 6.0.0: building the tests against Microsoft.ML 6.0.0"
  dotnet build test/Microsoft.ML.Gohsp.Tests/Microsoft.ML.Gohsp.Tests.csproj -c "$CONFIGURATION" -p:TorchBackend="$TORCH_BACKEND" \
    -p:MicrosoftMLVersion=6.0.0 -p:BuildProjectReferences=false -nologo -clp:"ErrorsOnly;Summary"
  dotnet test artifacts/mlnet6.0.0/Microsoft.ML.Gohsp.Tests/bin/"$CONFIGURATION"/net10.0/Microsoft.ML.Gohsp.Tests.dll \
    --logger "console;verbosity=normal" --filter "$MLNET_LAYER_TESTS"
}
# The test classes that go through ML.NET: its internals, the trainer and estimators, save/load, scoring, image inputs,
# ONNX in ML.NET, the served model.
MLNET_LAYER_TESTS="FullyQualifiedName~MLNetInternalsTests|FullyQualifiedName~EncodedImageInputTests|FullyQualifiedName~BatchScoringTests|FullyQualifiedName~ViTSaveLoadTests|FullyQualifiedName~GohspPruningEstimatorTests|FullyQualifiedName~ServedModelTests|FullyQualifiedName~BadInputTests"

# The README's "Using it" program compiles as shown: its csharp block becomes the Program.cs of an app built like
# test/consumer (same project file, the package just packed), outside the repository's build settings.
readme_snippet_check() {
  local dir=artifacts/readme-snippet
  rm -rf "$dir" && mkdir -p "$dir"
  awk '/^```csharp/{n++; if (n==1) {p=1; next}} /^```/{p=0} p' README.md > "$dir/Program.cs"
  [ -s "$dir/Program.cs" ] || { echo "error: README.md has no csharp block" >&2; exit 1; }
  cp test/consumer/GohspConsumer.csproj "$dir/ReadmeSnippet.csproj"
  cp test/consumer/Directory.Build.props test/consumer/Directory.Build.targets "$dir/"
  sed 's#"../../artifacts/feed"#"../feed"#' test/consumer/nuget.config > "$dir/nuget.config"
  echo "README snippet check: building the 'Using it' program against Microsoft.ML.Gohsp $1"
  # Built, never run: its package files may be hard links into the NuGet cache (the consumer check copies, as an app does).
  dotnet build "$dir/ReadmeSnippet.csproj" -c "$CONFIGURATION" -p:GohspPackageVersion="$1" -p:CreateHardLinksForCopyLocalIfPossible=true -nologo -clp:"ErrorsOnly;Summary"
}

# The ONNX export tests run python3-onnx's checker (onnx.checker.check_model(full_check=True)); install it when no Python has
# the onnx module and apt-get is there (Debian/Ubuntu). Elsewhere those tests fail, saying what to install.
ensure_onnx_checker() {
  for py in "${GOHSP_PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null && "$py" -c 'import onnx' 2>/dev/null && return
  done
  if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null; then
    echo "Installing python3-onnx (the ONNX export tests run its checker)..."
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-onnx >/dev/null
  fi
}

build() { dotnet build Microsoft.ML.Gohsp.sln -c "$CONFIGURATION" -p:TorchBackend="$TORCH_BACKEND" -nologo -clp:"ErrorsOnly;Summary"; }

case "$verb" in
  build) ensure_prerequisites; build ;;
  test)
    ensure_prerequisites; ensure_onnx_checker; build
    dotnet test test/Microsoft.ML.Gohsp.Tests/Microsoft.ML.Gohsp.Tests.csproj -c "$CONFIGURATION" --no-build \
      -p:TorchBackend="$TORCH_BACKEND" --logger "console;verbosity=normal" "$@"
    # the extension point as a third party sees it: a method compiled without InternalsVisibleTo, through the catalog
    dotnet test test/Microsoft.ML.Gohsp.ExtensionTests/Microsoft.ML.Gohsp.ExtensionTests.csproj -c "$CONFIGURATION" --no-build \
      -p:TorchBackend="$TORCH_BACKEND" --logger "console;verbosity=normal"
    mlnet6_tests
    consumer_check ;;
  consumer) ensure_prerequisites; build; consumer_check ;;
  mlnet6) ensure_prerequisites; build; mlnet6_tests ;;
  pack)
    ensure_prerequisites
    dotnet pack src/Microsoft.ML.Gohsp/Microsoft.ML.Gohsp.csproj -c "$CONFIGURATION" -o artifacts/packages -nologo -clp:"ErrorsOnly;Summary" "$@" ;;
  sample)
    ensure_prerequisites; build
    dotnet samples/Cifar10Pruning/bin/"$CONFIGURATION"/net10.0/Cifar10Pruning.dll "$@" ;;
  bench)
    ensure_prerequisites; build
    dotnet benchmarks/Microsoft.ML.Gohsp.Benchmarks/bin/"$CONFIGURATION"/net10.0/Microsoft.ML.Gohsp.Benchmarks.dll "$@" ;;
  *) echo "usage: ./build.sh {test|consumer|mlnet6|pack|sample|bench|build} [-- args]" >&2; exit 2 ;;
esac
