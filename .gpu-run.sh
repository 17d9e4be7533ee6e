# one device call: install the carried wheels, then measure (see benchmarks/gpu_throughput.py)
set -u
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
[ -d /tmp/b1 ] || { echo "no /tmp/b1: the machine changed between the calls"; exit 3; }
t0=$(date +%s)
cat /tmp/b1/ray.whl.part00 .gpu-bundle/part2/ray.whl.part01 > /tmp/$(cat .gpu-bundle/part2/RAY_WHEEL_NAME)
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site /tmp/ray-*.whl .gpu-bundle/part2/*.whl 2>&1 | grep -v WARNING | tail -3
cp -r .gpu-bundle/part2/distinfo/nas-0.1.0.dist-info /tmp/site/  # entry points of the built-in plugins
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH KERAS_BACKEND=jax RAY_USAGE_STATS_ENABLED=0
echo "installed in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
nproc; free -g | head -2
python3 -c "import jax, keras, ray, torch; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__, 'ray', ray.__version__, 'torch', torch.__version__)"
timeout 400 python3 benchmarks/gpu_throughput.py --generated --epochs 3 --out "$OUT"
echo "benchmark done at $(( $(date +%s) - t0 )) s"
export NAS_STORAGE=/tmp/runs
timeout 90 python3 -m nas.cli search --backend torch --space mlp --trials 2 --epochs 2 --gpus-per-trial 0.5 --name torch1 && python3 -m nas.cli status torch1 --json > "$OUT/torch1.json"
echo "all done at $(( $(date +%s) - t0 )) s"
