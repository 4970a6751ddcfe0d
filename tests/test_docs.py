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
