#!/usr/bin/env bash
# Create the peer libraries' virtualenvs used by benchmarks/steer_overhead.py (and llama.cpp's, used by
# benchmarks/llamacpp_speed.py).
#
#   bash benchmarks/peers/setup_venvs.sh            # both peers
#   bash benchmarks/peers/setup_venvs.sh repeng     # one of them
#   bash benchmarks/peers/setup_venvs.sh llama-cpp  # llama-cpp-python, for benchmarks/llamacpp_speed.py
#
# `all` means the two HF peers only: llama-cpp is a separate, explicit target because
# llama-cpp-python ships no binary wheel on PyPI and compiles llama.cpp from source (needs cmake and
# a C++ compiler; about 10 minutes on 2 cores), which a plain `all` should not depend on. The log of
# its last run is kept in .venv-llamacpp/build.log. `gguf` is installed next to it so that the runner
# reads control-vector files with the same reader steerlab uses.
#
# Each peer gets its own venv (git-ignored by the `.venv-*` pattern) because the peers pin
# different transformers ranges (steering-vectors: transformers<5). torch is installed first and
# pinned to the CPU wheel on local disk; an unpinned torch would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
LLAMA_CPP=${LLAMA_CPP:-llama-cpp-python==0.3.36}
GGUF=${GGUF:-gguf==0.19.0}

setup() {  # venv-dir, packages...
    local dir=$1; shift
    test -x "$dir/bin/python" || "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH" "$@"
    "$dir/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -i -E "^(torch|transformers|steering-vectors|repeng|numpy) "
}

setup_llamacpp() {  # venv-dir; CPU-only build of llama-cpp-python, no torch
    local dir=$1
    test -x "$dir/bin/python" || "$PYTHON" -m venv "$dir"
    local jobs=${JOBS:-$(nproc)}
    local noamx=""
    [[ $(uname -m) == x86_64 ]] && noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    # CPU backend only (no CUDA / Metal / Vulkan probing). GGML_NATIVE (-march=native) tunes to this
    # machine's CPU, minus AMX: on a VM whose CPUID lists amx_tile/amx_int8 without AMX being usable,
    # ggml's AMX matmul dies with SIGILL (`tilezero`) at the first llama_decode, so AMX is switched off
    # in the compiler flags on x86-64 (which -march=native would otherwise turn on).
    CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF"} \
    CFLAGS=${CFLAGS:-$noamx} CXXFLAGS=${CXXFLAGS:-$noamx} \
    CMAKE_BUILD_PARALLEL_LEVEL=$jobs MAKEFLAGS=-j$jobs \
        "$dir/bin/python" -m pip install --disable-pip-version-check --no-cache-dir --verbose "$LLAMA_CPP" "$GGUF" \
        > "$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; return 1; }
    "$dir/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -i -E "^(llama_cpp_python|llama-cpp-python|gguf|numpy) "
}

want=${1:-all}
if [[ $want == all || $want == steering-vectors ]]; then
    setup .venv-sv "steering-vectors==0.12.2" "transformers>=4.57,<5"
fi
if [[ $want == all || $want == repeng ]]; then
    setup .venv-repeng "repeng==0.4.0" "transformers==5.23.0"
fi
if [[ $want == llama-cpp ]]; then
    setup_llamacpp .venv-llamacpp
fi
