#!/usr/bin/env bash
# Create the peer libraries' virtualenvs used by benchmarks/steer_overhead.py.
#
#   bash benchmarks/peers/setup_venvs.sh            # both peers
#   bash benchmarks/peers/setup_venvs.sh repeng     # one of them
#
# Each peer gets its own venv (git-ignored by the `.venv-*` pattern) because the peers pin
# different transformers ranges (steering-vectors: transformers<5). torch is installed first and
# pinned to the CPU wheel on local disk; an unpinned torch would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}

setup() {  # venv-dir, packages...
    local dir=$1; shift
    test -x "$dir/bin/python" || "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH" "$@"
    "$dir/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -i -E "^(torch|transformers|steering-vectors|repeng|numpy) "
}

want=${1:-all}
if [[ $want == all || $want == steering-vectors ]]; then
    setup .venv-sv "steering-vectors==0.12.2" "transformers>=4.57,<5"
fi
if [[ $want == all || $want == repeng ]]; then
    setup .venv-repeng "repeng==0.4.0" "transformers==5.23.0"
fi
