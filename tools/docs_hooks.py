"""MkDocs hooks of fastgr's docs site (`mkdocs.yml`): the pages that live outside docs/ and the generated ones.

- README.md is the home page, BENCHMARKS.md the benchmarks page, the notebooks of nbs/ the tutorials: each stays
  where it is in the repository (one source, no copies to drift) and is added to the site here, under its path.
- `api.md` (every public name of `fastgr`: signature, docstring, each parameter's docments comment) and `cli.md`
  (every command's `--help`) are generated from the code at build time.
- Links are rewritten from the repository's layout to the site's: a link to a file that is a page of the site
  points to the page; any other file of the repository (a benchmark script, a raw result) to its copy on GitHub.
  The README's links are absolute (they must work on a package index); those into this repository become pages too.

`mkdocs build --strict` then fails on any link that leads nowhere.
"""

from __future__ import annotations

import inspect
import logging
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("mkdocs.hooks.fastgr")
sys.path.insert(0, str(ROOT))

REPO = "https://github.com/fastgr/fastgr"  # pyproject.toml's Repository
BLOB, RAW = f"{REPO}/blob/main/", "https://raw.githubusercontent.com/fastgr/fastgr/main/"

# the repository's files outside docs/ that are pages of the site, under the same paths (README.md is the home page)
OUTSIDE = ["README.md", "BENCHMARKS.md", *(f"nbs/{p.name}" for p in sorted((ROOT / "nbs").glob("*.ipynb")))]


def site_path(repo_path: str) -> str | None:
    "The site's path of a repository file that the site holds (a page, an image of docs/), else None."
    if repo_path in OUTSIDE:
        return repo_path
    if repo_path.startswith("docs/") and (ROOT / repo_path).is_file():
        return repo_path[len("docs/"):]
    return None


def rewrite_links(markdown: str, repo_path: str, page: str) -> str:
    "The links of `markdown` (the file `repo_path`, shown as the site's `page`) as the site needs them."

    def target(m: re.Match) -> str:
        link = m.group(2)
        anchor = ""
        if "#" in link:
            link, anchor = link.split("#", 1)
            anchor = "#" + anchor
        if link.startswith((BLOB, RAW)):
            repo_file = link.split("/main/", 1)[1]
        elif not link or re.match(r"[a-z]+:", link):
            return m.group(0)  # an anchor of this page, or another site
        else:
            repo_file = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), link))
        local = site_path(repo_file)
        if local is None and not (ROOT / repo_file).exists():  # leads nowhere: --strict fails the build on it
            LOG.warning(f"{repo_path} links to {m.group(2)}, which is not a file of the repository")
            return m.group(0)
        if local is None:  # a file of the repository the site does not hold
            new = BLOB + repo_file
        else:
            new = posixpath.relpath(local, posixpath.dirname(page) or ".")
        return f"{m.group(1)}({new}{anchor})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", target, markdown)


def _signature(obj) -> str:
    "The signature with its annotations as types (`from __future__ import annotations` leaves strings)."
    for eval_str in (True, False):
        try:
            text = str(inspect.signature(obj, eval_str=eval_str))
        except (TypeError, ValueError, NameError):  # no signature, or a name only a type checker sees
            continue
        return re.sub(r"ForwardRef\('([^']+)'\)", r"\1", text)
    return ""


def _docments_table(obj) -> str:
    "A markdown table of the parameters of `obj` with their defaults and docments comments."
    from fastcore.docments import docments

    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
        docs = docments(obj if hasattr(obj, "__dataclass_fields__") else target)
    except (TypeError, ValueError):
        return ""
    rows = []
    for name, p in params.items():
        if name == "self":
            continue
        default = "" if p.default is inspect.Parameter.empty else f"`{p.default!r}`"
        comment = (docs.get(name) or "").replace("|", "\\|").replace("\n", " ")
        star = "*" if p.kind is p.VAR_POSITIONAL else "**" if p.kind is p.VAR_KEYWORD else ""
        rows.append(f"| `{star}{name}` | {default} | {comment} |")
    if not rows or all(r.startswith("| `*") for r in rows):  # nothing named (a NamedTuple's generated __init__)
        return ""
    return "| parameter | default | |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def api_markdown() -> str:
    "The API reference: every name of `fastgr.__all__`, grouped by the module that holds it."
    import importlib

    import fastgr

    out = ["# API reference", "",
           "Every public name of `fastgr` (`from fastgr import ...`), grouped by the module that holds it. "
           "`import fastgr` is instant: each name loads its module on first use. Parameters carry their "
           "documentation as a trailing comment (fastai's docments), shown in the tables.", ""]
    for module_name, names in fastgr._EXPORTS.items():
        module = importlib.import_module(f"fastgr.{module_name}")
        doc = (inspect.getdoc(module) or "").split("\n\n")[0]
        out += [f"## fastgr.{module_name}", "", doc, ""]
        for name in names:
            obj = getattr(fastgr, name)
            kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "constant"
            out += [f"### {name}", ""]
            if kind == "constant":
                out += [f"`{name} = {obj!r}`", ""]
                continue
            sig = _signature(obj)
            out += ["```python", f"{'class ' if kind == 'class' else ''}{name}{sig}", "```", ""]
            out += [inspect.getdoc(obj) or "", ""]
            table = _docments_table(obj)
            if table:
                out += [table, ""]
    return "\n".join(out)


def cli_markdown() -> str:
    "Every command's `--help`, as `fastgr COMMAND --help` prints it 100 columns wide."
    from fastgr.cli import app
    from typer.testing import CliRunner

    runner = CliRunner()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    out = ["# Command line", "", "`fastgr COMMAND --help` prints each of these; `fastgr --install-completion` adds "
           "shell completion.", ""]
    for command in [None, *commands]:
        args = [command, "--help"] if command else ["--help"]
        text = runner.invoke(app, args, prog_name="fastgr", env={"COLUMNS": "100", "NO_COLOR": "1",
                                                                 "TERM": "dumb"}).output
        out += [f"## fastgr {command}" if command else "## fastgr", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


@event_priority(100)  # before mkdocs-jupyter's own on_files, which turns the .ipynb files into pages
def on_files(files, config):
    from mkdocs.structure.files import File

    for repo_file in OUTSIDE:  # read where they are: a file of the site may have its own source folder
        files.append(File(repo_file, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    files.append(File.generated(config, "api.md", content=api_markdown()))
    files.append(File.generated(config, "cli.md", content=cli_markdown()))
    return files


def on_page_markdown(markdown, page, config, files):
    src = page.file.abs_src_path
    repo_path = Path(src).resolve().relative_to(ROOT).as_posix() if src else page.file.src_uri
    return rewrite_links(markdown, repo_path, page.file.src_uri)
