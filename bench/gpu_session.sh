#!/usr/bin/env bash
# The GPU evidence of BENCHMARKS.md ("GPU: one H100") and what is still to run. From the project root, with fastai
# importable (`bash ../shared/tools/device-wheels.sh` on a machine without it) and CIFAR-10 unpacked:
#     python3 ../shared/tools/unpack_cifar10.py .data/cifar10
#     bash bench/gpu_session.sh timings RESULTS_DIR    # quiet GPU: pipeline vs hand loop, GR overhead, compile
#     bash bench/gpu_session.sh graphs RESULTS_DIR     # fastgr's learner under CUDA graphs: speed and gradients
#     COMPILE=reduce-overhead bash bench/gpu_session.sh table3 RESULTS_DIR   # Table 3, r = 0.4, both protocols
# Table 3 runs 4 processes at once, which share the GPU (eager ResNet-56 at batch 128 keeps an H100 ~20% busy,
# BENCHMARKS.md "GPU: one H100"); their wall times are those of a shared device, upper bounds of a run alone.
# Start it with `setsid` so that it outlives a device command, and keep the machine held while it runs.
set -u
what=$1 dir=$2
mkdir -p "$dir"
py=${PYTHON:-python3}
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
  t3() { name=$1; shift; $py bench/reproduce_table3.py --data .data/cifar10 --device cuda --out "$dir/$name.json" \
         ${COMPILE:+--compile $COMPILE} "$@" > "$dir/$name.log" 2>&1; }
  for p in released text; do
    t3 ${p}_ce --protocol $p --rows ce &
    (t3 ${p}_gr --protocol $p --rows gr --probs "$dir/${p}_probs.pt" &&
     t3 ${p}_correct --protocol $p --rows correct --probs "$dir/${p}_probs.pt") &
  done
  wait
  for p in released text; do
    $py bench/reproduce_table3.py --merge "$dir"/${p}_{ce,gr,correct}.json --out "$dir/table3_$p.json"
  done > "$dir/table3.md" 2>&1
  ;;
esac
