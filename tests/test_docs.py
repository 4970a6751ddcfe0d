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


def test_benchmarks_results_table_is_the_raw_results():
    "Every figure of BENCHMARKS.md's results table that bench/results/budget_sweep.json holds is the one it holds."
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("budget_sweep", ROOT / "bench" / "budget_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    raw = json.loads((ROOT / "bench" / "results" / "budget_sweep.json").read_text())["rows"]
    generated = _table(sweep.table(raw))
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
