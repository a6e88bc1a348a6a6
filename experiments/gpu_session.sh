#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in stages that each fit one 10-minute command of a lent machine
# (one H100: 30 minutes of device time per session; see experiments/results/kernels.md).
#
#   bash experiments/gpu_session.sh setup                 # install, versions, nvidia-smi        (~1 min)
#   bash experiments/gpu_session.sh tests                 # CUDA tests of kernels and models     (~3 min)
#   bash experiments/gpu_session.sh kernels               # kernel benchmarks beside their anchors (~3 min)
#   bash experiments/gpu_session.sh throughput 2048       # hybrid training throughput, one T per call
#   bash experiments/gpu_session.sh shakespeare hybrid    # nanoGPT's GPU config, 5,000 steps; repeat the call
#   bash experiments/gpu_session.sh shakespeare transformer   #   until it prints DONE (resumes exactly)
#
# Every stage writes what it made to $OUT (the device tool brings that folder back; default
# experiments/bench/results/gpu_session), as few files as possible: results JSON and one log per stage.
# Priorities for a 30-minute session: setup + tests + kernels (~7 min), throughput 8192 and 32768
# (~8 min), then shakespeare. `shakespeare` runs `sosm train` under `timeout -s TERM` (default 530 s,
# $BUDGET): a SIGTERM'd run saves the step it finished and the next call continues it with --resume
# (the machine must still be warm, i.e. called again within its idle window, or the run starts over).
# The mamba_ssm anchor of the scan benchmark is optional: put a built `selective_scan_cuda*.so` on
# PYTHONPATH (kernels.md says how it was built from the public source); without it that row is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-experiments/bench/results/gpu_session}"
mkdir -p "$OUT"
stage="${1:-}"
shift || true
py="${PYTHON:-python3}"

need_install() {
    "$py" -c "import sosm.kernels, sosm.graph" 2>/dev/null || {
        "$py" -m pip install --no-deps --no-build-isolation -q -e . >"$OUT/install.log" 2>&1 \
            || { echo "pip install -e . failed (see $OUT/install.log)"; exit 1; }
    }
}

case "$stage" in
setup)
    need_install
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"
        "$py" -c "import torch, triton, sys; print(sys.version.split()[0], torch.__version__, triton.__version__, torch.cuda.get_device_name())"
        git log --oneline -1 2>/dev/null || true
    } 2>&1 | tee "$OUT/setup.log"
    ;;
tests)
    need_install
    # tests/kernels run every Triton kernel on CUDA (bf16 too); tests/model includes the CUDA
    # model paths; the leak and generation tests run on whatever device the tests pick.
    "$py" -m pytest -q -x -p no:cacheprovider tests/kernels tests/model 2>&1 | tail -40 | tee "$OUT/cuda_tests.log"
    ;;
kernels)
    need_install
    {
        "$py" experiments/bench/bench_graph_attention.py --out "$OUT/graph_attention_gpu.json"
        "$py" experiments/bench/bench_selective_scan.py --out "$OUT/selective_scan_gpu.json"
        "$py" experiments/bench/bench_topk_gpu.py --out "$OUT/topk_gpu.json"
    } 2>&1 | tail -80 | tee "$OUT/kernels.log"
    ;;
throughput)
    need_install
    T="${1:?usage: gpu_session.sh throughput <T: 2048 | 8192 | 32768>}"
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "$py" experiments/bench/bench_train_throughput.py \
        --size anchor --lengths "$T" --name "train_throughput_gpu_T$T" --out "$OUT/train_throughput_gpu_T$T.json" \
        --strict 2>&1 | tail -30 | tee "$OUT/throughput_T$T.log"
    ;;
shakespeare)
    need_install
    model="${1:?usage: gpu_session.sh shakespeare <hybrid | transformer>}"
    case "$model" in
        hybrid) config=experiments/configs/shakespeare_char_gpu.yaml ;;
        transformer) config=experiments/configs/shakespeare_char_gpu_transformer.yaml ;;
        *) echo "model must be hybrid or transformer, got $model"; exit 2 ;;
    esac
    run="${RUNS:-runs/shakespeare_char_gpu}/$model"
    resume=()
    [ -d "$run/checkpoints" ] && resume=(--resume)
    status=0
    # $SHAKESPEARE_ARGS: extra `sosm train` options, e.g. "--device cpu --max-steps 40" to try this stage off a GPU
    # shellcheck disable=SC2086
    timeout -s TERM "${BUDGET:-530}" "$py" -m sosm.cli train --config "$config" --out "$run" --no-progress \
        "${resume[@]}" ${SHAKESPEARE_ARGS:-} >>"$OUT/shakespeare_$model.log" 2>&1 || status=$?
    tail -5 "$OUT/shakespeare_$model.log"
    if [ "$status" = 143 ] || [ "$status" = 124 ]; then
        echo "CONTINUE: call 'gpu_session.sh shakespeare $model' again (resumes from the saved step)"
        exit 0
    fi
    [ "$status" = 0 ] || { echo "sosm train exited $status"; exit "$status"; }
    "$py" -m sosm.cli eval --checkpoint "$run" --leak-check --json "$OUT/shakespeare_gpu_$model.json" 2>&1 \
        | tail -4 | tee -a "$OUT/shakespeare_$model.log"
    cp "$run/summary.json" "$OUT/shakespeare_gpu_${model}_summary.json"
    cp "$run/log.jsonl" "$OUT/shakespeare_gpu_${model}_log.jsonl"
    echo "DONE: $OUT/shakespeare_gpu_$model.json"
    ;;
*)
    sed -n '2,20p' "$0"
    exit 2
    ;;
esac
