r"""The pretrained backbone of the fine-tuning rows: a CIFAR ResNet trained with clean labels on a source task that
is not the target, saved as a state dict for `fastgr train --weights FILE`.

    python3 ../shared/tools/unpack_cifar10.py .data/src04 --classes 0-4 --test 200     # source: 25,000 images
    python3 ../shared/tools/unpack_cifar10.py .data/ft59 --classes 5-9 --train 1000    # target: 5,000 + 5,000
    uv run python bench/finetune_source.py --keep runs/finetune_source                  # -> .data/src04_resnet20.pth

Source: CIFAR-10's classes 0-4 (airplane, automobile, bird, cat, deer), all 5,000 training images of each; target
(bench/budget_sweep.py's `ft_*` cases): classes 5-9 (dog, frog, horse, ship, truck), the first 1,000 training
images of each. No image and no class is shared, so the target's labels are never seen by the backbone; the source
holds cat and deer, the target dog and horse, so what the body learned transfers as it does from ImageNet to a
user's photos. The recipe is `fastgr train`'s with cross-entropy on clean labels (`--loss ce --noise 0`): SGD
one-cycle, max lr 0.1, batch 128, L2 5e-4, pad-crop-flip. Its figures go to bench/results/finetune_source.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from fastgr import RunFolder, TrainConfig, train_run
from fastgr.config import versions
from fastgr.files import atomic_path, write_text

OUT = Path("bench/results/finetune_source.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=".data/src04")
    ap.add_argument("--arch", default="cifar_resnet20")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--weights", type=Path, default=Path(".data/src04_resnet20.pth"), help="the state dict written")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folder here (an interrupted run resumes)")
    a = ap.parse_args()
    if not Path(a.data, "train").is_dir():
        raise SystemExit(f"{a.data}/train missing: see this script's docstring")
    if a.weights.exists():
        raise SystemExit(f"{a.weights} exists: move it away first (it may be what earlier fine-tuning rows used)")
    import torch
    from fastai.learner import load_learner

    from fastgr.learner import unwrapped

    cfg = TrainConfig(data=a.data, arch=a.arch, loss="ce", noise=0.0, epochs=a.epochs)
    out = a.keep or Path(tempfile.mkdtemp())
    resume = a.keep is not None and RunFolder(out).interrupted
    s = train_run(cfg, out, overwrite=not resume, resume=resume)
    model = unwrapped(load_learner(out / "learner.pkl", cpu=True).model)
    with atomic_path(a.weights) as tmp:
        torch.save(model.state_dict(), tmp)
    digest = hashlib.sha256(a.weights.read_bytes()).hexdigest()
    result = {"config": cfg.to_dict(), "weights": str(a.weights), "sha256": digest,
              "test_accuracy_final": s["test_accuracy_final"], "test_accuracy_best": s["test_accuracy_best"],
              "train_accuracy_given": s["train_accuracy_given"], "seconds": RunFolder(out).training_seconds(),
              "versions": versions()}
    write_text(OUT, json.dumps(result, indent=1) + "\n")
    print(f"source test accuracy {s['test_accuracy_final']:.3f}; wrote {a.weights} (sha256 {digest[:12]})")


if __name__ == "__main__":
    main()
