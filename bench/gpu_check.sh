#!/usr/bin/env bash
# The GPU check, in one bounded command on a CUDA machine (see docs/training.md, "On a GPU"):
#   the CUDA-path tests (tests/test_cuda.py), training speed on the GPU relative to DeepFM
#   (bench/speed_ratio.py --device cuda) and, in parallel, SASRec then TIGER on Amazon Beauty for
#   the given seeds (bench/gr_benchmark.py, the configs of bench/configs/gr.yaml, TIGER capped at
#   17 epochs as the CPU seed-1 run).
# usage: bench/gpu_check.sh OUT_DIR [SEEDS] [GR_TIMEOUT_S]
# The public data is read from $AGENTICRS_DATA_DIR; wheels in .whl/ are installed first where the
# machine lacks packages (a machine with no package registry).
set -u
out=${1:?usage: bench/gpu_check.sh OUT_DIR [SEEDS] [GR_TIMEOUT_S]}
seeds=${2:-"2 3"}
gr_timeout=${3:-470}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
for seed in $seeds; do
    timeout "$gr_timeout" python3 bench/gr_benchmark.py --dataset amazon_beauty --seeds 1 --first-seed "$seed" \
        --set sasrec.train.device=cuda --set tiger.train.device=cuda --set tiger.train.epochs=17 \
        --set tiger.train.time_budget_s=null --runs-dir /tmp/gr-runs --json "$out/gr_beauty_cuda_seed$seed.json" \
        >"$out/gr_seed$seed.log" 2>&1 &
done
python3 -m pytest -q -m cuda tests/test_cuda.py tests/train/test_engine.py -p no:cacheprovider -n 4 2>&1 | tee "$out/pytest_cuda.log" | tail -25
python3 bench/speed_ratio.py --dataset sim-small --config bench/configs/sim.yaml --device cuda --json "$out/speed_sim_cuda.json"
wait
tail -c 3000 "$out"/gr_seed*.log
