#!/usr/bin/env bash
# The GPU evidence of BENCHMARKS.md ("GPU"), as one session on one GPU ran it. From the project root, with fastai
# importable (`bash ../shared/tools/device-wheels.sh` on a machine without it) and CIFAR-10 unpacked:
#     python3 ../shared/tools/unpack_cifar10.py .data/cifar10
#     bash bench/gpu_session.sh timings RESULTS_DIR    # quiet GPU: pipeline vs hand loop, GR overhead, compile
#     bash bench/gpu_session.sh table3 RESULTS_DIR     # Table 3 at r = 0.4, both protocols, 4 processes at once
# The Table 3 rows share the GPU (ResNet-56 at batch 128 keeps an H100 far from busy); their wall times are
# those of a shared device, upper bounds of a run alone.
set -u
what=$1 dir=$2
mkdir -p "$dir"
py=${PYTHON:-python3}
case $what in
timings)
  nvidia-smi > "$dir/nvidia-smi.txt" 2>&1
  $py bench/pipeline_speed.py --data .data/cifar10 --device cuda --steps 100 --reps 5 \
      --out "$dir/pipeline.json" --profile "$dir/profile.txt" > "$dir/pipeline.log" 2>&1
  $py bench/pipeline_speed.py --data .data/cifar10 --device cuda --steps 100 --reps 5 --cudnn-benchmark \
      --modes loop fastgr-ce fastgr-gr --out "$dir/pipeline_cudnn_benchmark.json" > "$dir/pipeline_cb.log" 2>&1
  $py bench/gr_overhead.py --device cuda --steps 50 --reps 10 --sync-check > "$dir/gr_overhead.json" \
      2> "$dir/gr_overhead.log"
  timeout 300 $py bench/compile_check.py --out "$dir/compile.json" > "$dir/compile.log" 2>&1
  ;;
table3)
  t3() { name=$1; shift; $py bench/reproduce_table3.py --data .data/cifar10 --device cuda --out "$dir/$name.json" \
         "$@" > "$dir/$name.log" 2>&1; }
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
