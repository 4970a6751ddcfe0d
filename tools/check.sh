#!/usr/bin/env bash
# What CI runs (.ci/run), in one command: the tests, the notebooks, the docs site, the package, then a fast subset of
# the tests against the lowest versions pyproject.toml allows, so that its lower bounds are true. Run from anywhere.
#   bash tools/check.sh            everything
#   bash tools/check.sh --quick    the first three (nothing more to download)
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_MKDOCS_2_WARNING=1  # Material for MkDocs' banner about its successor, not about this site

echo "== tests"
uv run pytest
echo "== notebooks"
uv run nbdev-test nbs --n-workers 0
echo "== docs site (strict: a broken link or page fails)"
uv run mkdocs build --strict --site-dir site
[ "${1:-}" = "--quick" ] && exit 0

echo "== packaging (a wheel and an sdist built with the build backend's lowest allowed version)"
out=$(mktemp -d)
grep -o 'setuptools>=[0-9.]*' pyproject.toml | head -1 | sed 's/>=/==/' > "$out/floor.txt"
uv build -q --build-constraint "$out/floor.txt" -o "$out"
uv run twine check --strict "$out"/*.whl "$out"/*.tar.gz

# The lowest versions allowed of the direct dependencies (the `cli` and `distributed` extras included), in an
# environment of their own (.lowest/, ignored by git); the tests that reach into fastai, timm and typer.
echo "== lowest allowed versions"
uv venv -q --allow-existing .lowest
uv pip install -q --python .lowest/bin/python --resolution lowest-direct -e ".[cli,distributed]" \
  "pytest>=8" "hypothesis>=6.100"
.lowest/bin/python -c "import fastai, timm, torch, typer; print('fastai', fastai.__version__, '| torch', \
torch.__version__, '| timm', timm.__version__, '| typer', typer.__version__)"
.lowest/bin/python -m pytest -q tests/test_gradient.py tests/test_callback.py tests/test_learner.py \
  tests/test_losses.py tests/test_optim.py tests/test_handover.py tests/test_loader.py tests/test_finetune.py \
  tests/test_predict.py tests/test_fastai_api.py tests/test_data.py tests/test_decoding.py
