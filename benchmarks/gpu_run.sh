#!/usr/bin/env bash
# The GPU machine's measurements, in as few device calls as its short lease allows (figures under $OUT/).
#
#   bash benchmarks/gpu_run.sh install throughput enas torch_search      # the second of two device calls
#   bash benchmarks/gpu_run.sh kerastuner torch_conformance              # a call right after, on the warm machine
#
# The GPU machine has JAX, torch and CUDA but no network, Ray or Keras: they travel in `.gpu-bundle/` (not in git,
# under 64 MiB a call): part1 = the first half of Ray's manylinux wheel (the first call copies it to /tmp/b1),
# part2 = its second half (RAY_WHEEL_NAME holds the wheel's file name) and the pure-Python wheels (keras,
# keras-tuner, optuna, pytest and their dependencies) downloaded with `pip download --no-deps`.
# `install` puts Ray, Keras, KerasTuner, Optuna, pytest and this project into /tmp/site from the carried
# .gpu-bundle/part2 and the part1 half of Ray copied to /tmp/b1 by the first call (it survives between calls while
# the machine stays warm); later calls reuse /tmp/site. Every step has its own time limit inside one deadline
# (GPU_DEADLINE_S, default 540 s, under the device's 600 s a call), writes its whole output to $OUT/<step>.log and
# one line to $OUT/summary.txt, so a step cut short still leaves what it printed, and the next step still runs.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
T0=$(date +%s)
DEADLINE=${GPU_DEADLINE_S:-540}
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH RAY_USAGE_STATS_ENABLED=0 NAS_STORAGE=/tmp/nas-runs
export KERAS_BACKEND=${KERAS_BACKEND:-jax}

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2 left start rc
    shift 2
    left=$((DEADLINE - ($(date +%s) - T0)))
    if [ "$left" -lt 25 ]; then echo "$name: not run (deadline)" >> "$OUT/summary.txt"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    start=$(date +%s)
    timeout -k 5 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name: rc=$rc in $(($(date +%s) - start)) s (limit $limit s)" >> "$OUT/summary.txt"
    if [ "$rc" -ne 0 ]; then ray stop --force > /dev/null 2>&1; fi  # a step cut short leaves no Ray behind
}

install() {
    [ -d /tmp/b1 ] || { echo "install: /tmp/b1 is missing (the machine changed between the calls)"; return 3; }
    local wheel
    wheel=/tmp/$(cat .gpu-bundle/part2/RAY_WHEEL_NAME)
    cat /tmp/b1/ray.whl.part00 .gpu-bundle/part2/ray.whl.part01 > "$wheel" &&
        python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$wheel" \
            .gpu-bundle/part2/*.whl &&
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . &&
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
        python3 -c "import jax, keras, ray, torch, keras_tuner, optuna; print('jax', jax.__version__, 'keras',
keras.__version__, 'ray', ray.__version__, 'torch', torch.__version__, 'keras-tuner', keras_tuner.__version__,
'optuna', optuna.__version__, 'devices', jax.devices())"
}

for item in "$@"; do
    case $item in
        install) step install 90 install ;;
        # 1. trials per GPU (1, 2, 4, 8, 16) against one plain model.fit
        throughput) step throughput 230 python3 benchmarks/gpu_throughput.py --generated --epochs 3 \
            --out "$OUT/throughput" ;;
        # 2. weight sharing against standalone rl on MNIST-sized data, trials on the GPU; Kendall's tau over 20
        enas) step enas 200 python3 benchmarks/enas.py --generated --samples 6000 --backend jax --epochs 2 \
            --trials 16 --supernet-epochs 6 --top-k 4 --tau-archs 20 --gpus-per-trial 0.125 --max-concurrent 8 \
            --storage /tmp/nas-enas ;;
        # 3. one torch search, 4 trials sharing the GPU; then the conformance suite under torch
        torch_search) step torch_search 60 python3 -m nas.cli search --name torch --space cnn --strategy random \
            --backend torch --gpus-per-trial 0.25 --max-concurrent 4 --trials 4 --epochs 2 ;;
        torch_conformance) KERAS_BACKEND=torch step torch_conformance 200 python3 -m pytest --noconftest -v \
            -p no:cacheprovider -o addopts= tests/plugins/test_conformance.py ;;
        # 4. the KerasTuner-shaped facade, 8 trials sharing the GPU, against KerasTuner's own loop, one at a time
        kerastuner) step kerastuner 150 python3 benchmarks/vs_kerastuner.py --mnist-sized 12000 --backend jax \
            --gpus-per-trial 0.125 --concurrent 8 --trials 16 --epochs 2 --only kerastuner,facade ;;
        *) echo "unknown step $item (install, throughput, enas, torch_search, torch_conformance, kerastuner)"
           exit 2 ;;
    esac
done
cat "$OUT/summary.txt"
