"""A `fastgr train` run that is killed (SIGKILL: no cleanup of any kind) at a chosen point; test_runs.py runs it.

    python -m tests.killer POINT OUT CONFIG_JSON
"""

import json
import os
import signal
import sys


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main(point: str, out: str, config: str) -> None:
    import torch

    from fastgr import TrainConfig, train_run
    from fastgr.runs import RunFolder
    from fastgr.training import RunLog

    cfg = TrainConfig(**json.loads(config))
    write, save, export = RunFolder.write, RunLog.save, RunFolder.export

    def patched_write(self, name, obj):
        if point == f"before {name}" and self.path.name != "retrain":
            die()
        return write(self, name, obj)

    def patched_save(self, epoch):
        if point == "inside the last checkpoint" and epoch == cfg.epochs:
            real = torch.save

            def half(obj, f, *a, **k):  # a kill while the file is written: a partial temporary file
                with open(f, "wb") as fh:
                    fh.write(b"\x80partial")
                die()

            torch.save = half
            try:
                save(self, epoch)
            finally:
                torch.save = real
        save(self, epoch)
        if point == "after the last checkpoint" and epoch == cfg.epochs:
            die()

    def patched_export(self, learn, drop=()):
        path = export(self, learn, drop)
        if point == "after learner.pkl":
            die()
        return path

    RunFolder.write, RunLog.save, RunFolder.export = patched_write, patched_save, patched_export
    train_run(cfg, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
