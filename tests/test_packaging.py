"""fastgr as a package: what it depends on, what it ships, how its README reads on a package index, its docs site's
generated pages, its `--help`, and its learning curves."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPO = PYPROJECT["project"]["urls"]["Repository"]


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_the_library_needs_fastai_and_torch_only_the_command_its_extra():
    from fastgr.cli import EXTRA

    runtime = _names(PYPROJECT["project"]["dependencies"])
    assert {"fastai", "torch"} <= runtime and not runtime & {"timm", "typer", "rich"}
    assert _names(PYPROJECT["project"]["optional-dependencies"]["cli"]) == set(EXTRA)
    assert all(">=" in r for r in PYPROJECT["project"]["dependencies"])  # floors, tested by tools/check.sh
    assert not any("<" in r for r in PYPROJECT["project"]["dependencies"])  # no caps on users' environments


BLOCKED = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):  # an environment where `pip install fastgr` left out the cli extra
    def find_spec(self, name, path, target=None):  # (rich comes with fastai, through plum-dispatch)
        if name.split(".")[0] in ("timm", "typer"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
sys.meta_path.insert(0, Missing())
"""


def test_the_callback_trains_without_the_cli_extra():
    code = BLOCKED + """
import math, torch
from torch import nn
from fastai.learner import Learner
from fastgr import GRCallback, EmphasisMonitor, gr_learner, load_data, make_dataloaders
dls = make_dataloaders(load_data("digits"), bs=128)
model = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
learn = Learner(dls, model, cbs=[GRCallback(lam=0.5, beta=8), EmphasisMonitor()])
with learn.no_bar(), learn.no_logging():
    learn.fit_one_cycle(2, 0.01)
print("accuracy", float((learn.get_preds()[0].argmax(1) == dls.valid.y.cpu()).float().mean()))
print("own model", type(gr_learner(dls, nn.Sequential(nn.Flatten(), nn.Linear(256, 10))).model).__name__)
try:
    gr_learner(dls, "cifar_resnet20")
except ImportError as e:
    print("by name:", e)
print("loaded:", sorted(m for m in ("timm", "typer") if m in sys.modules))
from fastgr.cli import main
try:
    main()
except SystemExit as e:
    print("command:", e.code)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert float(lines["accuracy"]) > 0.5  # it learned: two epochs of a small MLP on digits
    assert lines["own"] == "model Sequential"
    assert "needs timm: pip install timm, or 'fastgr[cli]'" in lines["by"]
    assert lines["loaded:"] == "[]"
    assert lines["command:"] == "error: the fastgr command needs typer: pip install 'fastgr[cli]'"


def test_the_package_ships_its_licence_and_types():
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77.0.1"]
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert all((ROOT / f).is_file() for f in PYPROJECT["project"]["license-files"])
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["fastgr"] == ["py.typed"]
    assert (ROOT / "fastgr" / "py.typed").is_file()
    assert {"Homepage", "Documentation", "Repository", "Issues"} <= set(PYPROJECT["project"]["urls"])
    assert "Typing :: Typed" in PYPROJECT["project"]["classifiers"]


def test_readme_links_work_on_a_package_index():
    "A package index shows the README alone: every link and image is absolute, and those into the repo exist."
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert len(links) >= 6
    raw = REPO.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    for link in links:
        assert link.startswith("https://"), f"relative link {link}: broken on a package index"
        for prefix in (f"{REPO}/blob/main/", raw):
            if link.startswith(prefix):
                assert (ROOT / link[len(prefix):].split("#")[0]).is_file(), link


def test_the_docs_name_every_public_name_with_its_parameters():
    sys.path.insert(0, str(ROOT / "tools"))
    import docs_hooks

    import fastgr

    api = docs_hooks.api_markdown()
    headings = re.findall(r"^### (\w+)$", api, re.M)
    assert sorted(headings) == sorted(fastgr.__all__)
    # a parameter's docments comment is its row
    row = "| `lam` |  | emphasis focus parameter: examples near p = lam / (1 + lam) get the largest weight; >= 0 |"
    assert row in api
    assert "gr_gradient(logits: torch.Tensor" in api or "gr_gradient(logits: Tensor" in api
    cli = docs_hooks.cli_markdown()
    assert all(f"## fastgr {c}" in cli for c in ("train", "tune", "issues", "predict", "correct"))


def test_docs_links_follow_the_site_not_the_repository():
    sys.path.insert(0, str(ROOT / "tools"))
    import docs_hooks

    blob = docs_hooks.BLOB
    text = ("[a](docs/design.md#x) [b](BENCHMARKS.md) ![c](docs/weight_curves.png) [d](bench/budget_sweep.py) "
            f"[e]({blob}docs/troubleshooting.md) [f](#here) [g](https://example.org)")
    got = docs_hooks.rewrite_links(text, "README.md", "README.md")  # docs/ is the site's root, README its home
    assert got == (f"[a](design.md#x) [b](BENCHMARKS.md) ![c](weight_curves.png) "
                   f"[d]({blob}bench/budget_sweep.py) [e](troubleshooting.md) [f](#here) [g](https://example.org)")
    # from a page of docs/: its neighbours are neighbours, the repository's root one level up
    got = docs_hooks.rewrite_links("[a](../BENCHMARKS.md) [b](troubleshooting.md) [c](../fastgr/gradient.py)",
                                   "docs/design.md", "design.md")
    assert got == f"[a](BENCHMARKS.md) [b](troubleshooting.md) [c]({blob}fastgr/gradient.py)"
    # a link to nothing is left for mkdocs --strict to fail on
    assert docs_hooks.rewrite_links("[x](nowhere.md)", "docs/design.md", "design.md") == "[x](nowhere.md)"


def test_train_help_is_grouped_and_fits_80_columns():
    from fastgr.cli import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "80", "TERM": "dumb"}, prog_name="fastgr")
    assert r.exit_code == 0
    panels = re.findall(r"^╭─ (.+?) ─", r.output, re.M)
    assert panels == ["Arguments", "Options", "Model", "Data and noise", "GR and baselines", "Tuning and correction",
                      "Training", "Run folder"]
    assert max(len(line) for line in r.output.splitlines()) <= 80
    for flag in ("--arch", "--noise-type", "--lam", "--preset", "--epochs", "--tune", "--correct", "--out"):
        assert re.search(rf"│ {flag}\s", r.output), flag
    top = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80", "TERM": "dumb"}, prog_name="fastgr").output
    assert "--install-completion" in top and "--show-completion" in top


def test_learning_curves_use_the_consoles_names_and_whole_epochs():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from fastgr.plots import plot_learning_curves

    metrics = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0, 1.5, 1.2], "valid_loss": [1.9, 1.6, 1.4],
                            "test_acc": [0.3, 0.5, 0.6], "train_acc_given": [0.2, 0.4, 0.5],
                            "train_acc_true": [0.3, 0.5, 0.55]})
    fig = plot_learning_curves(metrics, title="digits-gr")
    loss, acc = fig.axes
    assert fig._suptitle.get_text() == "digits-gr"
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train loss", "test loss"]
    assert [t.get_text() for t in acc.get_legend().get_texts()] == ["fit given", "fit true", "test acc"]
    fig.canvas.draw()
    ticks = [t for t in loss.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("nb", sorted((ROOT / "nbs").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_valid_for_the_docs_site(nb):
    "mkdocs-jupyter validates each notebook; an executor's timing metadata (a float where a string goes) fails it."
    import nbformat

    nbformat.validate(nbformat.read(nb, as_version=4))
