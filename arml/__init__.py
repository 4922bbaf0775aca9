"""ARML (Feng et al., MICCAI 2024) step by step: weakly supervised tissue segmentation with Activation
Relocalization and Mutual Learning.

The handful of calls a notebook or script needs, importable from ``arml`` directly (each loads its module
on first use, so ``import arml`` stays light)::

    import arml

    ex = arml.Experiment("quick")                       # cached runs on the built-in synthetic data
    run = ex.classifier(ars="both")                     # stage 1: classifier with ARS
    pm = ex.pseudo_masks(run, method="gradcam")         # CAMs → pseudo masks (train_PM/<name>/)
    metrics = ex.segmenter(pm["name"], omega=2.0, relation="st")   # stage 2: three peers, SWV + SRM
    print(arml.format_metrics(metrics))

The same stages without the cache: :class:`ClsConfig` + :func:`train_classifier`,
:class:`PseudoMaskConfig` + :func:`generate_pseudo_masks`, :class:`SegConfig` + :func:`train_segmenter`,
then :func:`evaluate`. Figures live in :mod:`arml.viz`; docs/architecture.md maps the package.
"""

from __future__ import annotations

import importlib

_API = {
    "Experiment": "arml.experiments",
    "notebook_setup": "arml.experiments",
    "get_profile": "arml.profiles",
    "PROFILES": "arml.profiles",
    "generate_dataset": "arml.synth",
    "check_layout": "arml.data_check",
    "ClsConfig": "arml.stage1",
    "train_classifier": "arml.stage1",
    "load_classifier": "arml.stage1",
    "PseudoMaskConfig": "arml.pseudo_masks",
    "generate_pseudo_masks": "arml.pseudo_masks",
    "SegConfig": "arml.stage2",
    "train_segmenter": "arml.stage2",
    "evaluate": "arml.evaluation",
    "predict": "arml.evaluation",
    "load_models": "arml.evaluation",
    "format_metrics": "arml.evaluation",
    "seed_everything": "arml.runtime",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'arml' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
