"""The documentation keeps up with the code: docments on the public API, the README's example and commands."""

import inspect
import re
from pathlib import Path

import pytest
from fastcore.docments import docments

import fastgr

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", fastgr.__all__)
def test_public_api_has_docments(name):
    obj = getattr(fastgr, name)
    if not (inspect.isfunction(obj) or inspect.isclass(obj)) or name == "GRTerms":
        return
    assert inspect.getdoc(obj), f"{name} has no docstring"
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = [name for name, p in inspect.signature(target).parameters.items()
              if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if inspect.isclass(obj) and hasattr(obj, "__dataclass_fields__"):
        return  # dataclass fields carry their comments in the class body
    docs = docments(target)
    missing = [p for p in params if not docs.get(p)]
    assert not missing, f"{name}: parameters without a docments comment: {missing}"


def test_readme_python_example_runs(monkeypatch):
    from fastai.learner import Learner

    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    calls = []
    original = Learner.fit_one_cycle

    def short(self, n_epoch, *args, **kwargs):  # the example's schedule, cut to two epochs
        calls.append(n_epoch)
        with self.no_bar(), self.no_logging():
            return original(self, 2, *args, **kwargs)

    monkeypatch.setattr(Learner, "fit_one_cycle", short)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    learn = namespace["learn"]
    assert calls and len(learn.recorder.values) == 2
    assert any(type(cb).__name__ == "GRCallback" for cb in learn.cbs)


def test_readme_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r"uv run [^`\n]*pytest[^`\n]*", README).group(0)
    assert test_cmd in ci
    assert "uv run fastgr train" in README


def _table(text: str) -> dict[tuple[str, str], list[str]]:
    "A markdown table's body rows as {(first cell, second cell): the other cells}."
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return {tuple(r[:2]): r[2:] for r in rows[1:]}


def _sweep_table() -> str:
    "The results table `bench/budget_sweep.py --table` prints from bench/results/budget_sweep.json."
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("budget_sweep", ROOT / "bench" / "budget_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    return sweep.table(json.loads((ROOT / "bench" / "results" / "budget_sweep.json").read_text())["rows"])


def test_benchmarks_results_table_is_the_raw_results():
    "Every figure of BENCHMARKS.md's results table that bench/results/budget_sweep.json holds is the one it holds."
    generated = _table(_sweep_table())
    section = (ROOT / "BENCHMARKS.md").read_text().split("## Results across methods")[1].split("\n## ")[0]
    documented = _table(section[section.index("\n| case |"):].split("\n\n")[0])
    assert documented.keys() == generated.keys()
    checked = 0
    for key, cells in generated.items():
        for shown, cell in zip(documented[key], cells, strict=True):
            if cell == "-" or shown.startswith("="):  # not run, or a pointer to the same run in another column
                continue
            figures = re.match(r"\**(\d\.\d{3})\**\s*\((\d\.\d{3})\)", shown)
            assert figures and " ".join(figures.groups()) == cell.replace("(", "").replace(")", ""), (key, shown, cell)
            checked += 1
    assert checked >= 70  # 72 when written


# The README's results table names its rows in words; these are the rows of BENCHMARKS.md's (and --table's) they copy.
README_ROWS = {
    "digits (sklearn), ResNet-20 at 16x16, 30 epochs": ("digits, 40% symmetric", "30"),
    **{f"CIFAR-10, 5,000-image subset, ResNet-20, {n} epochs": ("CIFAR-5k, 40% symmetric", str(n))
       for n in (10, 20, 30, 40, 120)},
    "CIFAR-10, 5,000-image subset, 30% pairflip, 120 epochs": ("CIFAR-5k, 30% pairflip", "120"),
    "CIFAR-10N random_label1 (17.5% human noise) on the same subset, 120 epochs":
        ("CIFAR-10N random_label1 (17.5% wrong) on CIFAR-5k", "120"),
    "CIFAR-10N aggre_label (9.2% human noise) on the same subset, 120 epochs":
        ("CIFAR-10N aggre_label (9.2% wrong) on CIFAR-5k", "120"),
}


def test_readme_results_table_is_the_raw_results():
    "Each figure of the README's results table that budget_sweep.json holds is its column's final accuracy there."
    generated_text = _sweep_table()
    columns = [c.strip() for c in generated_text.splitlines()[0].strip("|").split("|")][2:]
    generated = {key: dict(zip(columns, (c.split(" ")[0] for c in cells), strict=True))
                 for key, cells in _table(generated_text).items()}
    section = README.split("\n## Results\n")[1].split("\n## ")[0]
    text = section[section.index("\n| data, budget |"):].split("\n\n")[0]
    readme_columns = ["CE", "LS", "GCE", "SCE", "MixUp", "GR defaults", "GR --preset", "GR --tune"]
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.strip().strip("|").split("|")]
                                  for line in text.splitlines()[2:])}
    # The pairflip row's `--preset` cell shows what --preset trains today (the defaults' run); BENCHMARKS.md the old.
    today = {("CIFAR-5k, 30% pairflip", "GR --preset"): "GR defaults"}
    checked = 0
    for name, key in README_ROWS.items():
        assert name in rows, name
        final = generated[key]
        for column, shown in zip(readme_columns, rows[name], strict=True):
            if final[column] == "-":  # not in this results file (the 40-epoch row's GR cells: bench/cifar_budget.py)
                continue
            figures = re.findall(r"\d\.\d{3}", shown)
            assert figures and set(figures) <= set(final.values()), (name, column, shown)  # each one of the row's runs
            if shown[:1].isdigit():
                assert figures[0] == final[today.get((key[0], column), column)], (name, column, shown)
                checked += 1
            else:
                assert shown.startswith("("), (name, column, shown)
    assert checked >= 48  # 51 when written
