"""`fastgr` as a rank of a launch whose rank 0 dies (no cleanup) once epoch K's checkpoint is written; the launcher
then stops the other ranks. test_launch.py runs it:

    python -m torch.distributed.run --nproc_per_node 2 -m tests.stop_after K train ...
"""

import os
import sys


def main(k: int, args: list[str]) -> None:
    from fastgr.cli import app

    from fastgr.training import RunLog

    save = RunLog.save

    def save_then_die(self, epoch):
        save(self, epoch)
        if epoch == k and self.folder.writes:  # rank 0, its checkpoint on disk
            os._exit(3)

    RunLog.save = save_then_die
    app(args, prog_name="fastgr")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
