r"""Where a streamed CPU run's peak memory grows: resident and peak RSS before and after the fit, at the end.

    uv run python bench/stream_memory_probe.py FOLDER OUT [EPOCHS]
    MALLOC_MMAP_THRESHOLD_=131072 uv run python bench/stream_memory_probe.py FOLDER OUT [EPOCHS]

FOLDER: generated 256-px JPEGs (bench/stream_data.py's `make_folder`, e.g. /tmp/sb/jpeg256_1000). The run is
bench/stream_data.py's (`--in-memory no --img-size 32`, ResNet-20, no augmentation), for EPOCHS epochs (1). Comparing
1,000 files for 6 epochs with 6,000 files for 1 (the same number of steps) separates what the files cost from
what the steps cost (BENCHMARKS.md, "Streamed data").
"""

import resource
import sys
import time

import fastgr.training as training
from fastgr import TrainConfig, train_run


def rss_mb() -> str:
    "Resident now and peak so far."
    now = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
    return f"resident {now} MB, peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"


def main() -> None:
    folder, out = sys.argv[1], sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    fit = training.fit_schedule

    def probed(*a, **k):
        print("before fit:", rss_mb(), flush=True)
        fit(*a, **k)
        print("after fit:", rss_mb(), flush=True)

    training.fit_schedule = probed
    t = time.perf_counter()
    train_run(TrainConfig(data=folder, in_memory="no", img_size=32, epochs=epochs, bs=128, augment="none"), out,
              overwrite=True)
    print("end:", rss_mb(), f"{time.perf_counter() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
