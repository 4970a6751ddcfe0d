"""fastgr: gradient rescaling (GR) for fastai — train classifiers that stay accurate when labels are wrong.

`import fastgr` is instant; each name loads its module (torch, fastai, timm...) on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("fastgr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# public name -> the module that holds it
_EXPORTS = {
    "gradient": ["REFERENCE_EPS", "GRTerms", "check_settings", "emphasis_weights", "gr_gradient", "gr_terms",
                 "ce_gradient"],
    "emphasis": ["effective_sample_size", "emphasis_focus", "emphasis_spread", "weight_variance", "weight_curve"],
    "callback": ["GRCallback"],
    "monitor": ["EmphasisMonitor", "EmphasisCollapseWarning", "collapsed_epochs"],
    "schedule": ["fit_schedule", "TrainingSpan"],
    "telemetry": ["FitMonitor", "batch_indices", "training_table"],
    "noise": ["NoisyLabels", "add_noise", "symmetric_noise", "pairflip_noise", "asymmetric_noise", "save_labels",
              "load_labels", "training_labels"],
    "correction": ["relabel", "correction_report"],
    "issues": ["label_issues", "rank_label_issues", "issue_auroc", "estimated_noise_rate"],
    "dynamics": ["TrainingDynamics", "label_margin"],
    "presets": ["paper_setting", "default_setting"],
    "data": ["ImageData", "load_data"],
    "loader": ["ImageTensors", "TensorDL"],
    "sampling": ["balanced_order"],
    "dataloaders": ["make_dataloaders"],
    "models": ["create_model", "list_backbones"],
    "learner": ["gr_learner", "predict_probs"],
    "config": ["TrainConfig", "RunSettings"],
    "runs": ["RunFolder"],
    "report": ["Reporter"],
    "tuning": ["tune_run"],
    "experiment": ["train_run", "correct_run"],
    "prediction": ["predict_images", "load_run_learner"],
}
_LAZY = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_LAZY)

if TYPE_CHECKING:  # for editors and type checkers; at run time names load lazily
    from .callback import GRCallback  # noqa: F401
    from .gradient import gr_gradient  # noqa: F401
    from .learner import gr_learner  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastgr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
