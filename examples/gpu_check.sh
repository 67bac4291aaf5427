#!/usr/bin/env bash
# One script for a machine with a GPU: the CUDA tests, the GPU benchmarks and a shrunk run of the
# CIFAR-100 main job with a kill and a rerun in the middle; every log goes to $OUT (default ./gpu_check).
#
#   bash examples/gpu_check.sh                 # on the GPU machine, from the repository root
#   TINY=1 DEVICE=cpu bash examples/gpu_check.sh   # the same steps at toy size on a CPU (to check the script)
#   LADDER=1 bash examples/gpu_check.sh        # and then the scale ladder's GPU rung (hours: step 4)
#
# CIFAR-100-format files of class-structured random images are generated on the machine
# (nasdistill.data.cifar.write_synthetic_cifar100): nothing is downloaded.
set -uo pipefail
OUT=${OUT:-gpu_check}
DEVICE=${DEVICE:-cuda}
TINY=${TINY:-0}
mkdir -p "$OUT"
export NASDISTILL_PROGRESS=0 NASDISTILL_TENSORBOARD=0
: > "$OUT/summary.txt"
FAILED=""
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME CMD...: run, keep its output and exit status (written to the summary as it ends)
    local name=$1; shift
    local t0=$(date +%s)
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    # a step that ran nothing fails the check (pytest: exit 5 when no test was collected)
    [ $rc -ne 0 ] && FAILED="$FAILED $name"
    log "$name: exit $rc in $(( $(date +%s) - t0 )) s$([ $rc -ne 0 ] && echo ' (FAILED)')"
    tail -n 3 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
    return 0
}

python - <<'EOF' > "$OUT/env.txt" 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
EOF
cat "$OUT/env.txt" | tee -a "$OUT/summary.txt"

if [ "$TINY" = 1 ]; then
    N_TRAIN=192; KD_ARGS="--teacher resnet8 --student resnet8 --n-train 1024 --steps 4 --rounds 1 --workers 0 --threads 1"
    TEACH_ARGS="--teacher resnet8 --steps 2 --rounds 1 --threads 1"; PYTEST_DEVICE=cpu
    # a part of the tests (on a CPU the whole files take minutes), each kind of test once
    PYTEST_K="kill_and_resume or export_of or (test_teacher and ce)"
    SUPERNET_ARGS="digits_small --batch-size 8 --paths 1 --reps 1"
    POOL_ARGS="--runs 2 --runs-per-gpu 1 2 --n-train 128 --size 8 --channels 1 --num-classes 10 --epochs 1"
else
    N_TRAIN=5000; KD_ARGS="--workers 8"; TEACH_ARGS="--dataset synthetic --size 32 --channels 3 --teacher resnet32 --batch-size 64 --rounds 3"
    PYTEST_DEVICE=cuda; PYTEST_K=""
    SUPERNET_ARGS="gtn_cifar --batch-size 64 --paths 3 --reps 5"
    POOL_ARGS="--runs 16 --runs-per-gpu 1 2 4 8 --epochs 2"
fi

# 1. the CUDA tests (on the CPU with TINY=1: the same tests under bf16)
step cuda_tests env NASDISTILL_TEST_DEVICE=$PYTEST_DEVICE python -m pytest -m cuda -q -x -p no:cacheprovider \
    -o addopts="" ${PYTEST_K:+-k "$PYTEST_K"} tests/engine/test_cuda.py tests/engine/test_bf16.py

# 2. benchmarks: KD epoch vs the conventional loop; GTN/SFTN teacher cost; supernet overhead;
#    pool throughput (small students, 1 to 8 runs per GPU: runs per hour against one run per GPU)
step bench_kd python -m nasdistill bench kd --device $DEVICE $KD_ARGS --json
step bench_teachers python -m nasdistill bench teachers --device $DEVICE $TEACH_ARGS --json
step bench_supernet python -m nasdistill bench supernet $SUPERNET_ARGS --device $DEVICE --json
step bench_pool python -m nasdistill bench pool $POOL_ARGS --json

# 3. the shrunk CIFAR-100 main job, killed in the middle of its teachers and run again
python -c "from nasdistill.data.cifar import write_synthetic_cifar100; write_synthetic_cifar100('$OUT/data', $N_TRAIN, 1000)"
SHRINK="data.root=$OUT/data data.val_size=500 search.targets=[150000000] search.train.epochs=3
  search.search.warmup_epochs=1 students.sampled=2 teachers.train.epochs=4 teachers.seeds=[0]
  distill.seeds=[0,1] distill.train.epochs=3 workers=1 teachers.model.name=resnet8
  search.train.device=$DEVICE teachers.train.device=$DEVICE distill.train.device=$DEVICE"
# toy size: a few steps of every stage (the CIFAR-size supernet is slow on a CPU)
[ "$TINY" = 1 ] && SHRINK="$SHRINK data.val_size=64 search.train.batch_size=64 search.targets=[60000000]
  search.train.epochs=2 students.sampled=0 students.random_per_target=0 teachers.train.epochs=2
  distill.seeds=[0] distill.train.epochs=1"
python -m nasdistill run examples/cifar100_gtn.yaml $SHRINK --out-dir "$OUT/job" > "$OUT/job_first.log" 2>&1 &
PID=$!
while kill -0 $PID 2>/dev/null && [ ! -e "$OUT/job/teachers/gtn_s0/last.ckpt" ]; do sleep 0.2; done
kill -9 $PID 2>/dev/null && log "main job killed during the GTN teacher"
wait $PID 2>/dev/null
step job_rerun python -m nasdistill run examples/cifar100_gtn.yaml $SHRINK --out-dir "$OUT/job"
step job_reuse python -m nasdistill run examples/cifar100_gtn.yaml $SHRINK --out-dir "$OUT/job"
cp "$OUT/job/report.md" "$OUT/report.md" 2>/dev/null

# 4. the GPU rung of the scale ladder (examples/gtn_scale.py): GTN at 50,000 weight steps on 100,000
#    synthetic images, CE/MSE/SFTN/GTN resnet8 teachers over 3 seeds (the CPU rungs' settings, one
#    rung further), 6 students, plain / standardized / calibrated KD; eight runs share the GPU at a
#    time. Hours of GPU time, so it runs only when asked: LADDER=1 (LADDER_RUNGS for other rungs).
#    Every finished run is reused, so a rerun with the same LADDER_DIR continues an interrupted rung.
if [ "${LADDER:-0}" = 1 ]; then
    LADDER_DIR=${LADDER_DIR:-$OUT/ladder}
    if [ "$TINY" = 1 ]; then
        step ladder python examples/gtn_scale.py --tiny --device $DEVICE --out "$LADDER_DIR"
    else
        step ladder python examples/gtn_scale.py --rungs ${LADDER_RUNGS:-50000:100000} --device $DEVICE \
            --workers auto --runs-per-gpu ${RUNS_PER_GPU:-8} --out "$LADDER_DIR"
    fi
    cp "$LADDER_DIR/ladder.json" "$LADDER_DIR/ladder.png" "$OUT/" 2>/dev/null
fi
if [ -n "$FAILED" ]; then
    log "FAILED:$FAILED (see $OUT/<step>.log)"
    exit 1
fi
log "done, every step passed: $OUT/summary.txt"
