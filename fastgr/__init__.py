"""fastgr: gradient rescaling (GR) for fastai — train classifiers that stay accurate when labels are wrong.

`import fastgr` is light (torch only); names that need fastai, timm or scikit-learn load on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from .gradient import (
    GRTerms,
    check_settings,
    effective_sample_size,
    emphasis_focus,
    emphasis_spread,
    emphasis_weights,
    gr_gradient,
    gr_terms,
    weight_curve,
)

try:
    __version__ = version("fastgr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# name -> module; importing fastai costs seconds, so these load when first used
_LAZY = {
    "GRCallback": "callback",
    "GRStat": "callback",
    "batch_indices": "callback",
}

__all__ = [
    "GRTerms",
    "check_settings",
    "effective_sample_size",
    "emphasis_focus",
    "emphasis_spread",
    "emphasis_weights",
    "gr_gradient",
    "gr_terms",
    "weight_curve",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastgr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
