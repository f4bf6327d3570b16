#!/usr/bin/env bash
# Microsoft.ML.Gohsp build entry point. Verbs:
#   ./build.sh test                  install prerequisites, build, run the test suite
#   ./build.sh sample [-- flags]     install prerequisites, build and run samples/Cifar10Pruning
#   ./build.sh bench [-- flags]      run the benchmark; its last output line is one JSON object
#   ./build.sh build                 build everything (Release)
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

build() { dotnet build Microsoft.ML.Gohsp.sln -c "$CONFIGURATION" -p:TorchBackend="$TORCH_BACKEND" -nologo -clp:"ErrorsOnly;Summary"; }

case "$verb" in
  build) ensure_prerequisites; build ;;
  test)
    ensure_prerequisites; build
    dotnet test test/Microsoft.ML.Gohsp.Tests/Microsoft.ML.Gohsp.Tests.csproj -c "$CONFIGURATION" --no-build \
      -p:TorchBackend="$TORCH_BACKEND" --logger "console;verbosity=normal" "$@" ;;
  sample)
    ensure_prerequisites; build
    dotnet samples/Cifar10Pruning/bin/"$CONFIGURATION"/net10.0/Cifar10Pruning.dll "$@" ;;
  bench)
    ensure_prerequisites; build
    dotnet benchmarks/Microsoft.ML.Gohsp.Benchmarks/bin/"$CONFIGURATION"/net10.0/Microsoft.ML.Gohsp.Benchmarks.dll "$@" ;;
  *) echo "usage: ./build.sh {test|sample|bench|build} [-- args]" >&2; exit 2 ;;
esac
