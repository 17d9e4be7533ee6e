#!/usr/bin/env bash
# Build and install Horovod for the TensorFlow that is installed in this Python environment.
#
# Horovod 0.28.1 (the newest release) does not build against TF >= 2.16 as shipped: the GPU-only
# source horovod/tensorflow/xla_mpi_ops.cc needs XLA headers TensorFlow no longer ships. This script
# downloads the PyPI sdist, drops that one source from the CMake build, builds a wheel with Gloo
# (plus NCCL when TensorFlow is built with CUDA and nccl.h is found, plus MPI when mpicxx is on PATH),
# caches the wheel under ~/.cache/nas/wheels/<key>/ and installs it. A second run installs the cached
# wheel in seconds.
#
# Usage:  bash launch/install-horovod.sh            # uses python3 (or $PYTHON)
#         PYTHON=/path/to/venv/bin/python bash launch/install-horovod.sh
# Env:    HOROVOD_VERSION (default 0.28.1), NAS_WHEEL_CACHE (default ~/.cache/nas/wheels),
#         HOROVOD_GPU_OPERATIONS / HOROVOD_WITH_MPI / HOROVOD_WITHOUT_MPI to override the detection.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
HOROVOD_VERSION="${HOROVOD_VERSION:-0.28.1}"
CACHE_ROOT="${NAS_WHEEL_CACHE:-$HOME/.cache/nas/wheels}"

tf_info="$("$PYTHON" - <<'PY'
import sys
import tensorflow as tf
cuda = int(bool(tf.test.is_built_with_cuda()))
print(f"{tf.__version__} cp{sys.version_info[0]}{sys.version_info[1]} {cuda}")
PY
)"
read -r TF_VERSION PY_TAG TF_CUDA <<<"$tf_info"

# Which collectives to build besides Gloo.
gpu_ops=""
if [[ -n "${HOROVOD_GPU_OPERATIONS:-}" ]]; then
    gpu_ops="$HOROVOD_GPU_OPERATIONS"
elif [[ "$TF_CUDA" == 1 ]] && command -v nvcc >/dev/null 2>&1; then
    for d in "${NCCL_HOME:-/nonexistent}/include" /usr/include /usr/local/include /usr/local/cuda/include; do
        if [[ -f "$d/nccl.h" ]]; then gpu_ops=NCCL; break; fi
    done
fi
with_mpi=0
if [[ -n "${HOROVOD_WITH_MPI:-}" ]]; then
    with_mpi=1
elif [[ -z "${HOROVOD_WITHOUT_MPI:-}" ]] && command -v mpicxx >/dev/null 2>&1; then
    with_mpi=1
fi

key="horovod-${HOROVOD_VERSION}-tf${TF_VERSION}-${PY_TAG}-gloo"
[[ -n "$gpu_ops" ]] && key="${key}-$(echo "$gpu_ops" | tr '[:upper:]' '[:lower:]')"
[[ "$with_mpi" == 1 ]] && key="${key}-mpi"
cache_dir="$CACHE_ROOT/$key"

wheel="$(find "$cache_dir" -maxdepth 1 -name 'horovod-*.whl' 2>/dev/null | head -n 1 || true)"
if [[ -n "$wheel" ]]; then
    echo "install-horovod: using cached wheel $wheel"
else
    echo "install-horovod: building Horovod $HOROVOD_VERSION for TensorFlow $TF_VERSION ($PY_TAG;" \
         "gloo${gpu_ops:+, $gpu_ops}$( [[ $with_mpi == 1 ]] && echo ', mpi'); takes a few minutes)"
    if ! command -v cmake >/dev/null 2>&1; then  # a pip-installed cmake works as well
        "$PYTHON" -m pip install --quiet cmake
        PATH="$(dirname "$("$PYTHON" -c 'import sys; print(sys.executable)')"):$PATH"
        export PATH
        command -v cmake >/dev/null 2>&1 || { echo "install-horovod: cmake is required (apt-get install cmake)" >&2; exit 1; }
    fi
    command -v g++ >/dev/null 2>&1 || { echo "install-horovod: a C++ compiler is required (apt-get install g++)" >&2; exit 1; }
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$work"
    tar -xzf "$work"/horovod-"$HOROVOD_VERSION".tar.gz -C "$work"
    src="$work/horovod-$HOROVOD_VERSION"
    # The one source that does not compile against current TF (GPU-only XLA ops).
    sed -i '/xla_mpi_ops\.cc/d' "$src/horovod/tensorflow/CMakeLists.txt"
    # Build requirements: the installed TensorFlow must be visible (no build isolation).
    "$PYTHON" -m pip install --quiet "setuptools" "wheel" "cloudpickle" "psutil" "pyyaml" "packaging" "cffi>=1.4.0"
    export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
    if [[ -n "$gpu_ops" ]]; then export HOROVOD_GPU_OPERATIONS="$gpu_ops"; else unset HOROVOD_GPU_OPERATIONS || true; fi
    if [[ "$with_mpi" == 1 ]]; then export HOROVOD_WITH_MPI=1; unset HOROVOD_WITHOUT_MPI || true
    else export HOROVOD_WITHOUT_MPI=1; unset HOROVOD_WITH_MPI || true; fi
    start=$(date +%s)
    "$PYTHON" -m pip wheel --no-deps --no-build-isolation "$src" -w "$work/dist"
    mkdir -p "$cache_dir"
    cp "$work"/dist/horovod-*.whl "$cache_dir"/
    wheel="$(find "$cache_dir" -maxdepth 1 -name 'horovod-*.whl' | head -n 1)"
    echo "install-horovod: built $wheel in $(( $(date +%s) - start )) s"
fi

"$PYTHON" -m pip install --quiet --force-reinstall --no-deps "$wheel"
"$PYTHON" -m pip install --quiet "cloudpickle" "psutil" "pyyaml" "packaging" "cffi>=1.4.0"
"$PYTHON" - <<'PY'
import horovod.tensorflow as hvd
print("install-horovod: ok, horovod", __import__("horovod").__version__,
      "gloo built:", hvd.gloo_built(), "mpi built:", hvd.mpi_built(), "nccl built:", hvd.nccl_built())
PY
