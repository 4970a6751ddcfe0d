"""GR under DDP: two CPU processes (gloo) give the single-process gradient of the concatenated batch."""

import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

from fastgr import gr_gradient
from tests import ddp_worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradient_equals_the_concatenated_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    y = torch.randint(0, 4, (32,), generator=g)
    torch.manual_seed(0)
    state = torch.nn.Linear(6, 4).state_dict()
    out = tmp_path / "rank0.pt"
    lr = 0.5
    mp.spawn(ddp_worker.run, args=(2, free_port(), x, y, state, lr, str(out)), nprocs=2, join=True)
    got = torch.load(out)
    # the single-process gradient of all 32 examples, weights normalised over all of them
    logits = x @ state["weight"].T + state["bias"]
    expected = gr_gradient(logits, y, lam=1.0, beta=16.0).T @ x
    torch.testing.assert_close(got["grad"], expected, rtol=1e-5, atol=1e-7)
    assert abs(got["weight_sum"].item() - 1) < 1e-6  # the ranks' weights add up to 1 together
    # and per-rank normalisation would have been different: the test can fail
    halves = sum(gr_gradient(z, t, 1.0, 16.0).T @ xx for z, t, xx in zip(logits.chunk(2), y.chunk(2), x.chunk(2))) / 2
    assert (halves - expected).abs().max() > 1e-4
    # GRCallback in a fastai Learner around the DDP model: one SGD step moves the weights like the full batch
    torch.testing.assert_close(got["stepped"], state["weight"] - lr * expected, rtol=1e-5, atol=1e-6)


def test_ranks_check_that_they_agree_and_sum_and_gather(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(ddp_worker.agree, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["error"] == "the processes disagree on the labels: every rank must see the same files and options"
    assert got["sum"].tolist() == [2.0, 3.0]
    assert got["gathered"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_a_launch_without_accelerate_names_the_extra(monkeypatch):
    from fastgr.ranks import processes

    monkeypatch.setitem(sys.modules, "accelerate", None)  # what an environment without it raises on import
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ImportError, match=r"needs accelerate: pip install 'fastgr\[distributed\]'"):
        with processes(torch.device("cpu")):
            pass


def test_shard_dl_gives_each_rank_its_slice_of_every_global_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(ddp_worker.shards, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    for drop, want_len in ((False, 2), (True, 1)):
        order, (r0, r1) = got[drop]["order"], got[drop]["batches"]
        assert got[drop]["len"] == want_len == len(r0) == len(r1)
        # global batch k is order[6k : 6k + 6]: rank 0 its first half, rank 1 its second
        assert r0[0] + r1[0] == order[:6]
        if not drop:  # the last 4 items split 2 and 2
            assert r0[1] + r1[1] == order[6:10]


def test_ranks_that_disagree_lose_nothing_of_an_older_run(tmp_path, monkeypatch):
    "check_agree runs before the folder is opened: an --overwrite launch whose ranks disagree leaves the old run."
    import fastgr.experiment
    from fastgr import TrainConfig, train_run

    old = tmp_path / "run"
    old.mkdir()
    (old / "config.json").write_text("{}")
    (old / "metrics.csv").write_text("epoch\n1\n")

    def disagree(what, *arrays):
        raise RuntimeError(f"the processes disagree on {what}: every rank must see the same files and options")

    monkeypatch.setattr(fastgr.experiment, "check_agree", disagree)
    with pytest.raises(RuntimeError, match="disagree"):
        train_run(TrainConfig(epochs=1), old, overwrite=True)
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "metrics.csv"]
