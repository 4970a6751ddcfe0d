#!/usr/bin/env bash
# The GPU evidence of BENCHMARKS.md ("GPU: one H100") and what is still to run. From the project root, with fastai
# importable (`bash ../shared/tools/device-wheels.sh` on a machine without it) and CIFAR-10 unpacked:
#     python3 ../shared/tools/unpack_cifar10.py .data/cifar10
#     bash bench/gpu_session.sh timings RESULTS_DIR    # quiet GPU: pipeline vs hand loop, GR overhead, compile
#     bash bench/gpu_session.sh graphs RESULTS_DIR     # fastgr's learner under CUDA graphs: speed and gradients
#     COMPILE=reduce-overhead bash bench/gpu_session.sh table3 RESULTS_DIR   # Table 3, r = 0.4, both protocols
#     COMPILE=reduce-overhead WARMUP=0.5 bash bench/gpu_session.sh table3 RESULTS_DIR   # GR rows with the warm-up
#     COMPILE=reduce-overhead STAGE=gr bash bench/gpu_session.sh correct RESULTS_DIR   # GR + correction (warm-up),
#     COMPILE=reduce-overhead STAGE=correct bash bench/gpu_session.sh correct RESULTS_DIR   # both protocols
#     COMPILE=reduce-overhead NOISE=0.8 bash bench/gpu_session.sh rows RESULTS_DIR   # Table 3's other rows
#     COMPILE=reduce-overhead bash bench/gpu_session.sh balanced RESULTS_DIR   # CE, class-balanced batches of 256
#     bash bench/gpu_session.sh streamed RESULTS_DIR   # the streamed path (files) against hand loops
#     bash bench/gpu_session.sh sweep RESULTS_DIR      # budget_sweep's 120-epoch CIFAR rows, every column
#     bash bench/gpu_session.sh issues RESULTS_DIR     # label_issues' CIFAR cases: every part (no cleanlab here)
# sweep and issues need .data/cifar5k (`unpack_cifar10.py .data/cifar5k --train 500 --test 100`) and the CIFAR-10N
# labels CSVs in .data (budget_sweep.py's docstring); they run JOBS (12) trainings at once, sharing the GPU (ResNet-20
# on 5,000 images is host-bound alone); merge their rows here with `budget_sweep.py --merge DIR/sweep_*.json --out
# bench/results/budget_sweep_gpu.json` (GPU rows beside, not over, the CPU ones; `--table --out` prints them) and
# score the issues parts with `uv run --group bench python bench/label_issues.py --case C --keep DIR/issues --collect`.
# Table 3 runs 4 processes at once, which share the GPU (eager ResNet-56 at batch 128 keeps an H100 ~20% busy,
# BENCHMARKS.md "GPU: one H100"); their wall times are those of a shared device, upper bounds of a run alone.
# Keep each device command's runs inside that command: a machine left idle 30 s goes back, and runs started
# with `setsid` to outlive a command were lost so between two commands on 2026-11-24. Where a chain needs two
# commands, return what the second needs (GR's probabilities) through $OUT and carry it back. Install
# fastai's wheels outside the checkout (`pip install --target /tmp/site`): a later device command replaces the
# checkout, and a stage still running then fails to import what was installed in it (2026-11-23's corrections).
set -u
what=$1 dir=$2
mkdir -p "$dir"
py=${PYTHON:-python3}
t3() { name=$1; shift; $py bench/reproduce_table3.py --data .data/cifar10 --device cuda --out "$dir/$name.json" \
       ${COMPILE:+--compile $COMPILE} "$@" > "$dir/$name.log" 2>&1; }
case $what in
timings)
  nvidia-smi > "$dir/nvidia-smi.txt" 2>&1
  $py bench/pipeline_speed.py --data .data/cifar10 --device cuda --steps 50 --reps 3 \
      --modes loop fastgr-ce-bare fastgr-ce fastgr-gr fastai-sgd --out "$dir/pipeline.json" > "$dir/pipeline.log" 2>&1
  $py bench/gr_overhead.py --device cuda --steps 30 --reps 6 --sync-check > "$dir/gr_overhead.json" \
      2> "$dir/gr_overhead.log"
  timeout 300 $py bench/compile_check.py --skip-timing --out "$dir/compile.json" > "$dir/compile.log" 2>&1
  ;;
graphs)
  $py bench/pipeline_speed.py --data .data/cifar10 --device cuda --steps 50 --reps 3 \
      --modes loop loop-cudagraphs fastgr-gr fastgr-gr-cudagraphs --out "$dir/pipeline_graphs.json" \
      > "$dir/pipeline_graphs.log" 2>&1
  timeout 300 $py bench/compile_check.py --mode reduce-overhead --out "$dir/compile_graphs.json" \
      > "$dir/compile_graphs.log" 2>&1
  ;;
table3)
  w=${WARMUP:+_warm}  # GR's rows with fastgr's warm-up: CE is the same run, trained once
  for p in released text; do
    [ -n "$w" ] || t3 ${p}_ce --protocol $p --rows ce &
    (t3 ${p}_gr$w --protocol $p --rows gr --probs "$dir/${p}_probs$w.pt" ${WARMUP:+--warmup $WARMUP} &&
     t3 ${p}_correct$w --protocol $p --rows correct --probs "$dir/${p}_probs$w.pt" ${WARMUP:+--warmup $WARMUP}) &
  done
  wait
  for p in released text; do
    $py bench/reproduce_table3.py --merge "$dir"/${p}_*.json --out "$dir/table3_$p.json"
  done > "$dir/table3.md" 2>&1
  ;;
correct)
  # GR with fastgr's warm-up writes its training-set probabilities, then relabel + retrain, both protocols side by
  # side (the paper's GR without the warm-up collapses: BENCHMARKS.md "GPU: one H100"). The released chain is two
  # 30k-iteration runs, ~15 minutes shared: more than one device command. Run STAGE=gr, bring DIR/*_probs_warm.pt
  # back through $OUT, carry it to the next command and run STAGE=correct there (the 2026-11-24 runs).
  # PROTOCOLS="released" for one (the text protocol's correction finished on 2026-11-24, the released one did not)
  rows="gr correct"; [ -n "${STAGE:-}" ] && rows=$STAGE
  for p in ${PROTOCOLS:-released text}; do
    t3 ${p}_${STAGE:-gr_correct}_warm --protocol $p --rows $rows --warmup 0.5 --probs "$dir/${p}_probs_warm.pt" &
  done
  wait
  ;;
rows)
  # the other rows of Table 3 under the released solver, CE and GR (the paper's lam / beta for the row) with the
  # warm-up; NOISE="0.8" by default, two processes per rate (~8 minutes for one rate)
  for r in ${NOISE:-0.8}; do
    t3 released_r${r}_ce --protocol released --noise $r --rows ce &
    t3 released_r${r}_gr_warm --protocol released --noise $r --rows gr --warmup 0.5 &
  done
  wait
  ;;
balanced)
  # CE with the released solver's batches, 256 drawn class-balanced over the noisy labels: does CE memorise as the
  # paper's did (0.609)? 30k iterations of 256, twice the images of a batch-128 run: time not yet measured
  t3 released_ce_balanced256 --protocol released --rows ce --bs 256 --balanced
  ;;
streamed)
  # timeout: on 2026-11-24 the process wrote its results, then did not exit (not seen on a CPU)
  timeout 300 $py bench/pipeline_speed.py --data .data/cifar10 --device cuda --steps 50 --reps 3 \
      --modes loop loop-streamed fastgr-gr fastgr-gr-streamed fastgr-gr-streamed-fastai --out "$dir/pipeline_streamed.json" \
      > "$dir/pipeline_streamed.log" 2>&1
  ;;
sweep)
  for c in cifar5k_sym40 c10n_random1 c10n_aggre cifar5k_pair30; do
    for col in ce ls gce sce mixup gr gr116 preset tune; do
      echo "$py bench/budget_sweep.py --case $c --epochs ${EPOCHS:-120} --columns $col --keep $dir/sweep" \
           "--out $dir/sweep_${c}_$col.json > $dir/sweep_${c}_$col.log 2>&1"
    done
  done | xargs -P "${JOBS:-12}" -I{} bash -c {}
  ;;
issues)
  for c in cifar5k_sym40 cifar5k_pair30 c10n_random1; do
    for part in gr ce {fold,eqfold,grfold}{0..4}; do  # bench/label_issues.py PARTS
      echo "$py bench/label_issues.py --case $c --epochs ${EPOCHS:-120} --keep $dir/issues --part $part" \
           "> $dir/issues_${c}_$part.log 2>&1"
    done
  done | xargs -P "${JOBS:-12}" -I{} bash -c {}
  ;;
esac
