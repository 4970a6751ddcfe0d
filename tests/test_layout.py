"""docs/design.md's "Layout" kept true: the modules it lists are the package's, the dependency sentences hold for the
imports the code really makes (at the top of a module or inside a function), and there is no import circle."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = (ROOT / "docs" / "design.md").read_text()


def modules() -> dict[str, Path]:
    "fastgr's modules by name (`training`), the CLI's as one node `cli`."
    out = {p.stem: p for p in (ROOT / "fastgr").glob("*.py") if p.stem not in ("__init__", "__main__")}
    out.update({f"cli/{p.stem}": p for p in (ROOT / "cli").glob("*.py")})
    return out


def imports() -> dict[str, set[str]]:
    "Every module's imports of fastgr's modules, wherever in its file they are (`cli/*` merged into `cli`)."
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        node_name = "cli" if name.startswith("cli/") else name
        found = graph.setdefault(node_name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if name.startswith("cli/"):  # the CLI imports the library as `fastgr.X` or `from fastgr import name`
                parts = (node.module or "").split(".")
                if node.level == 0 and parts[0] == "fastgr":
                    if len(parts) > 1 and parts[1] != "cli":
                        found.add(parts[1])
                    elif len(parts) == 1:
                        found.add("__init__")
                continue
            if node.level == 1:  # `from .x import y`, or `from . import x`
                targets = [node.module] if node.module else [a.name for a in node.names]
                found.update(t for t in targets if t in mods and t != name)
            elif node.module and node.module.split(".")[0] == "fastgr":
                parts = node.module.split(".")
                found.add("cli" if parts[1:2] == ["cli"] else parts[1] if len(parts) > 1 else "__init__")
    return graph


def reaches(graph: dict[str, set[str]], a: str, b: str) -> bool:
    "Whether `a` imports `b`, directly or through others."
    seen, todo = set(), [a]
    while todo:
        m = todo.pop()
        for n in graph.get(m, ()):
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False


def dependency_paragraph() -> str:
    start = DESIGN.index("Dependencies point one way")
    return " ".join(DESIGN[start: DESIGN.index("\n\n", start)].split())


def test_the_layout_lists_every_module_of_the_package():
    block = DESIGN[DESIGN.index("## Layout"): DESIGN.index("## From `fastgr train`")]
    listed = set(re.findall(r"^  (\w+)\.py ", block, flags=re.M))
    assert listed == {m for m in modules() if "/" not in m}


def test_no_import_circle():
    graph = imports()
    circles = sorted(m for m in graph if m != "cli" and reaches(graph, m, m))
    assert circles == [], f"modules on an import circle: {circles}"


def test_the_documented_directions_are_the_imports():
    graph = imports()
    text = dependency_paragraph()
    chains = re.findall(r"`\w+`(?: -> `\w+`)+", text)
    assert len(chains) >= 6, text  # the sentence this test reads is there
    for chain in chains:
        names = re.findall(r"`(\w+)`", chain)
        for a, b in zip(names, names[1:]):
            assert b in graph.get(a, set()), f"design.md says {a} -> {b}, but {a} does not import {b}"
            assert not reaches(graph, b, a), f"design.md says {a} -> {b}, but {b} reaches {a}"
    assert not any(reaches(graph, m, "cli") for m in graph if m != "cli"), "a library module imports the CLI"
    leaves = re.search(r"((?:`\w+`,? )+and `\w+`) import nothing of fastgr's", text)
    assert leaves is not None, text
    for m in re.findall(r"`(\w+)`", leaves.group(1)):
        assert graph[m] == set(), f"design.md says {m} imports nothing of fastgr's; it imports {graph[m]}"


def test_config_and_ranks_import_neither_torch_nor_fastai():
    code = ("import sys; import fastgr.config, fastgr.ranks; "
            "print(sorted(m for m in ('torch', 'fastai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
