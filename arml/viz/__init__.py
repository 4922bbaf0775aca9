"""Figures for the notebooks (``from arml import viz; viz.cam_grid(...)``), each saved by :func:`savefig`.

The functions only draw; what they show is computed in :mod:`arml.analysis` (stage 1, data) and
:mod:`arml.loss_probes` (stage 2). They are grouped by what they show:

=====================  =====================================================================================
:mod:`~arml.viz.base`  :func:`savefig`, :func:`figures_dir`, the palettes: :func:`mask_to_rgb`,
                       :func:`overlay`, :func:`legend_handles`, :func:`to_uint8_image`
:mod:`~.charts`        numbers: :func:`curves_plot`, :func:`score_plot`, :func:`sweep_plot`,
                       :func:`per_class_bars`, :func:`scatter_plot`
:mod:`~.data`          the data: :func:`patch_grid`, :func:`dataset_grid`, :func:`prediction_grid`,
                       :func:`pipeline_diagram` (paper Fig. 1)
:mod:`~.stage1`        CAMs and ARS (notebooks 01–02): :func:`cam_grid`, :func:`cam_to_rgb`,
                       :func:`attention_figure`, :func:`activation_histograms`, :func:`background_rule_figure`
:mod:`~.pseudo`        pseudo masks (notebook 03): :func:`pseudo_mask_panels`, :func:`pseudo_mask_browser`,
                       :func:`confusion_heatmaps`
:mod:`~.stage2`        SWV and SRM (notebooks 04–05): :func:`swv_panel`, :func:`relation_heatmaps`
:mod:`~.training`      stage-2 training over epochs (notebook 06): :func:`convergence_figure`,
                       :func:`vote_figure`, :func:`noise_plot` (notebook 07)
=====================  =====================================================================================
"""

from arml.viz.base import figures_dir, legend_handles, mask_to_rgb, overlay, savefig, to_uint8_image
from arml.viz.charts import curves_plot, per_class_bars, scatter_plot, score_plot, sweep_plot
from arml.viz.data import dataset_grid, patch_grid, pipeline_diagram, prediction_grid
from arml.viz.pseudo import confusion_heatmaps, pseudo_mask_browser, pseudo_mask_panels
from arml.viz.stage1 import (
    activation_histograms,
    attention_figure,
    background_rule_figure,
    cam_grid,
    cam_to_rgb,
)
from arml.viz.stage2 import relation_heatmaps, swv_panel
from arml.viz.training import convergence_figure, noise_plot, vote_figure

__all__ = [
    "activation_histograms",
    "attention_figure",
    "background_rule_figure",
    "cam_grid",
    "cam_to_rgb",
    "confusion_heatmaps",
    "convergence_figure",
    "curves_plot",
    "dataset_grid",
    "figures_dir",
    "legend_handles",
    "mask_to_rgb",
    "noise_plot",
    "overlay",
    "patch_grid",
    "per_class_bars",
    "pipeline_diagram",
    "prediction_grid",
    "pseudo_mask_browser",
    "pseudo_mask_panels",
    "relation_heatmaps",
    "savefig",
    "scatter_plot",
    "score_plot",
    "sweep_plot",
    "swv_panel",
    "to_uint8_image",
    "vote_figure",
]
