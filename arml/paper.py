"""The numbers the ARML paper reports (Feng et al., MICCAI 2024), Tables 1–4, as data.

Transcribed from the paper (Feng et al., MICCAI 2024, Tables 1–4): every score is ``(mean, std)`` in
percent over the authors' repeated runs (their number is not stated). Bold face is dropped; the dagger
(† = significantly better than the best earlier method, p < 0.05, two-tailed t-test) is kept per row as the
tuple ``significant`` of column names. The first row of Table 2 prints "~" in the Baseline column of the
text extraction where the PDF has a check mark; it is the plain-CAM baseline without ARS, SWV or SRM.

* :data:`TABLE1` — comparison with earlier WSSS methods, per dataset (``"bcss"``, ``"luad"``): rows with
  ``method``, ``ref`` (the paper's citation number, None for ARML), ``backbone``, ``iou`` (per class, in the
  dataset's class order), ``miou``, ``dice``, ``acc`` and ``significant``.
* :data:`TABLE2` — the ablation on BCSS, keyed like notebook 06 (``baseline``, ``ars``, ``ars_swv``,
  ``ars_srm``, ``full``); each row names its components and carries per-class IoU, mIoU, Dice and ACC.
* :data:`TABLE3` — ω of SWV on BCSS, keyed like notebook 04 (``"N/A"``, ``"1"``, ``"2"``, ``"3"``, ``"5"``,
  ``"inf"``): ``miou`` and ``dice``. N/A (no SWV) repeats Table 2's "+ARS" row; ω = 2 repeats the full method.
* :data:`TABLE4` — relation-mining losses on BCSS, keyed like notebook 05 (``"CE"``, ``"KL"``, ``"CRL"``,
  ``"L_pt"``, ``"L_st"``): ``miou`` and ``dice``. CE repeats "+ARS"; L_st repeats the full method.

The ablations (Tables 2–4) are on BCSS only (paper §3.4). Dice is computed per class from the dataset-level
confusion matrix and then averaged (docs/paper_vs_code.md §5), so ``dice_c = 2·iou_c / (1 + iou_c)`` holds per
class, and the mean of those reproduces the reported Dice to about 0.1 point (:func:`dice_from_iou`), and
the reported mIoU is the plain mean of the four class IoUs. Three Table 1 rows break this as printed (the
numbers are kept as printed, see :data:`INCONSISTENT_ROWS`): HistoSegNet's Dice on both datasets (0.7 and
3.3 points above what its IoUs give; its Dice was probably computed another way), and LUAD AMR, whose mIoU
(71.45) and Dice (83.59) are both about 1 point above the mean of its class IoUs (70.40) and the Dice they
give (82.59). Tables 3–4 print no class IoUs; for them ``Dice ≤ 2·mIoU / (1 + mIoU)`` holds (the map is
concave, so the mean of per-class Dice cannot exceed it) with a gap of 0.2–0.3 point.

Beside the tables, the experiment grids that re-run them (stage-2 overrides of
:class:`~arml.stage2.SegConfig` per row, keyed like the tables): :data:`ABLATION` and :data:`OFFICIAL_RECIPE`
(Table 2, notebook 06), :data:`OMEGA_SWEEP` and :data:`SWV_PIXELS` (Table 3, notebook 04),
:data:`RELATION_SWEEP` and :data:`SWV_ONLY` (Table 4, notebook 05).

Helpers put our numbers beside the paper's: :func:`summarize_seeds` reduces per-seed stage-2 metrics to the
paper's mean ± std (as fractions, like every ``results/*.json``), :func:`format_comparison` prints both.

**Units.** The constants ``TABLE1``–``TABLE4`` keep the paper's print: ``(mean, std)`` tuples in percent. A
results file holds one convention for every entry, ours and the paper's: a fraction under ``miou`` and its std
under ``miou_std`` (likewise ``mdice``, ``acc`` and the per-class ``iou`` lists). :func:`as_results` converts a
table to it before it is saved (``paper_table3=as_results(TABLE3)``).

>>> TABLE2["full"]["miou"]
(70.56, 0.19)
>>> round(dice_from_iou(TABLE1["bcss"][-1]["iou"]), 2)
82.54
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from arml.datasets import CLASS_NAMES as CLASSES

Score = tuple[float, float]  # (mean, std) in percent

# (table, dataset, method, backbone, what): rows whose printed numbers disagree with their own class IoUs.
INCONSISTENT_ROWS = (
    ("TABLE1", "bcss", "HistoSegNet", "VGG16", "dice"),
    ("TABLE1", "luad", "HistoSegNet", "VGG16", "dice"),
    ("TABLE1", "luad", "AMR", "ResNet50", "miou"),
    ("TABLE1", "luad", "AMR", "ResNet50", "dice"),
)


# One line per row, in the paper's column order: method | ref | backbone | 4 class IoUs | mIoU | Dice | ACC.
# A trailing † marks a cell the paper flags as significant.
_TABLE1_TEXT = {
    "bcss": """
HistoSegNet | 2  | VGG16          | 33.14 ± 1.61  | 46.46 ± 1.37  | 29.05 ± 2.93  | 28.83 ± 3.42  | 34.37 ± 0.96  | 50.04 ± 0.78  | 56.41 ± 0.77
ReCAM       | 5  | ResNet50       | 74.34 ± 0.61  | 68.37 ± 0.89  | 47.17 ± 2.07  | 56.91 ± 3.35  | 61.70 ± 0.42  | 75.76 ± 0.29  | 81.15 ± 0.45
GradCAM++   | 3  | ResNet38       | 74.12 ± 0.59  | 67.61 ± 0.81  | 54.68 ± 1.43  | 57.18 ± 1.94  | 63.39 ± 0.35  | 77.31 ± 0.24  | 81.30 ± 0.66
AME-CAM     | 4  | ResNet50       | 77.29 ± 0.55  | 72.20 ± 0.31  | 56.98 ± 1.33  | 60.44 ± 0.71  | 66.73 ± 0.51  | 79.75 ± 0.38  | 83.90 ± 0.30
AMR         | 13 | ResNet50       | 78.75 ± 0.34  | 72.12 ± 0.15  | 59.31 ± 0.84  | 57.80 ± 1.30  | 66.99 ± 0.44  | 79.91 ± 0.29  | 84.44 ± 0.18
OEEM        | 11 | ResNet38       | 79.11 ± 0.37  | 72.88 ± 0.79  | 54.34 ± 1.61  | 63.07 ± 2.43  | 67.35 ± 0.58  | 80.11 ± 0.42  | 84.41 ± 0.24
MLPS        | 6  | ResNet101      | 78.53 ± 0.60  | 71.74 ± 0.69  | 60.71 ± 0.52  | 60.51 ± 1.11  | 67.87 ± 0.45  | 80.62 ± 0.31  | 84.26 ± 0.38
TPRO        | 19 | MixTransformer | 80.10 ± 0.59  | 73.34 ± 0.21  | 56.26 ± 1.06  | 64.26 ± 1.39  | 68.49 ± 0.24  | 80.95 ± 0.19  | 85.03 ± 0.16
ARML        |    | MixTransformer | 79.97 ± 0.41  | 73.09 ± 0.38  | 57.72 ± 0.95  | 65.02 ± 0.33† | 68.95 ± 0.39† | 81.33 ± 0.22† | 85.08 ± 0.44
ARML        |    | ResNet38       | 78.87 ± 0.55  | 73.18 ± 0.73  | 58.85 ± 1.04  | 66.55 ± 0.36† | 69.36 ± 0.41† | 81.68 ± 0.25† | 84.88 ± 0.67
ARML        |    | ResNeSt101     | 79.20 ± 0.30  | 73.83 ± 0.17† | 60.25 ± 0.14  | 68.96 ± 0.44† | 70.56 ± 0.19† | 82.48 ± 0.10† | 85.63 ± 0.17†
""",
    "luad": """
HistoSegNet | 2  | VGG16          | 45.59 ± 0.83  | 46.30 ± 1.43  | 58.28 ± 1.95  | 50.82 ± 0.87  | 50.25 ± 0.66  | 63.43 ± 0.51  | 66.82 ± 0.46
ReCAM       | 5  | ResNet50       | 73.81 ± 0.46  | 58.72 ± 0.77  | 67.24 ± 1.61  | 66.77 ± 1.04  | 66.63 ± 0.53  | 79.85 ± 0.36  | 81.80 ± 0.57
GradCAM++   | 3  | ResNet38       | 73.48 ± 0.41  | 60.02 ± 0.68  | 68.97 ± 0.92  | 66.53 ± 1.13  | 67.25 ± 0.48  | 80.32 ± 0.35  | 81.83 ± 0.62
AME-CAM     | 4  | ResNet50       | 74.64 ± 0.32  | 67.58 ± 0.53  | 69.77 ± 1.18  | 68.47 ± 0.97  | 70.11 ± 0.66  | 82.40 ± 0.54  | 83.07 ± 0.23
AMR         | 13 | ResNet50       | 74.89 ± 0.18  | 67.47 ± 0.37  | 70.55 ± 0.75  | 68.67 ± 0.81  | 71.45 ± 0.39  | 83.59 ± 0.28  | 83.29 ± 0.41
OEEM        | 11 | ResNet38       | 76.96 ± 0.27  | 74.71 ± 0.37  | 72.30 ± 2.20  | 71.30 ± 1.52  | 73.92 ± 0.44  | 84.99 ± 0.30  | 85.13 ± 0.89
MLPS        | 6  | ResNet101      | 77.68 ± 0.51  | 76.95 ± 0.58  | 72.40 ± 0.84  | 71.81 ± 0.77  | 74.71 ± 0.41  | 85.50 ± 0.30  | 85.45 ± 0.81
TPRO        | 19 | MixTransformer | 75.85 ± 0.47  | 81.94 ± 0.95  | 74.66 ± 1.25  | 71.27 ± 0.46  | 75.90 ± 0.44  | 86.16 ± 0.28  | 85.56 ± 0.19
ARML        |    | MixTransformer | 77.23 ± 0.43  | 80.40 ± 0.72  | 75.43 ± 1.53† | 71.43 ± 0.66  | 76.13 ± 0.47  | 86.38 ± 0.29  | 85.62 ± 0.37
ARML        |    | ResNet38       | 77.87 ± 0.41  | 81.89 ± 0.62  | 75.21 ± 0.42† | 72.31 ± 0.13† | 76.82 ± 0.37† | 86.84 ± 0.22† | 86.13 ± 0.28†
ARML        |    | ResNeSt101     | 78.54 ± 0.28† | 80.34 ± 0.27  | 75.29 ± 0.45† | 74.29 ± 0.48† | 77.11 ± 0.33† | 87.01 ± 0.22† | 86.42 ± 0.24†
""",
}

# key | ARS SWV SRM (1 = used) | TUM | STR | LYM | NEC | mIoU | Dice | ACC  (BCSS, paper §3.4)
_TABLE2_TEXT = """
baseline | 0 0 0 | 76.76 ± 0.94 | 72.17 ± 0.49 | 58.18 ± 2.04 | 62.24 ± 1.60 | 67.33 ± 0.29 | 80.24 ± 0.20 | 83.80 ± 0.38
ars      | 1 0 0 | 78.17 ± 0.57 | 72.83 ± 0.57 | 58.53 ± 0.47 | 62.35 ± 1.61 | 67.97 ± 0.28 | 80.67 ± 0.22 | 84.46 ± 0.33
ars_swv  | 1 1 0 | 78.45 ± 0.61 | 73.10 ± 0.48 | 58.75 ± 1.76 | 66.34 ± 0.17 | 69.16 ± 0.27 | 81.54 ± 0.17 | 84.75 ± 0.39
ars_srm  | 1 0 1 | 79.45 ± 0.28 | 71.89 ± 0.28 | 59.96 ± 0.66 | 63.73 ± 0.41 | 68.76 ± 0.55 | 81.25 ± 0.33 | 84.62 ± 0.10
full     | 1 1 1 | 79.20 ± 0.30 | 73.83 ± 0.17 | 60.25 ± 0.14 | 68.96 ± 0.44 | 70.56 ± 0.19 | 82.48 ± 0.10 | 85.63 ± 0.17
"""

# key | mIoU | Dice
_TABLE3_TEXT = """
N/A | 67.97 ± 0.28 | 80.67 ± 0.22
1   | 69.22 ± 0.22 | 81.54 ± 0.15
2   | 70.56 ± 0.19 | 82.48 ± 0.10
3   | 70.00 ± 0.24 | 82.13 ± 0.14
5   | 69.52 ± 0.29 | 81.78 ± 0.20
inf | 69.69 ± 0.33 | 81.90 ± 0.19
"""

_TABLE4_TEXT = """
CE   | 67.97 ± 0.28 | 80.67 ± 0.22
KL   | 68.22 ± 0.84 | 80.92 ± 0.57
CRL  | 68.68 ± 0.58 | 81.20 ± 0.41
L_pt | 69.83 ± 0.33 | 82.00 ± 0.17
L_st | 70.56 ± 0.19 | 82.48 ± 0.10
"""

_SUMMARY = ("mIoU", "Dice", "ACC")


def _score(cell: str) -> Score:
    mean, std = cell.rstrip("†").split("±")
    return float(mean), float(std)


def _cells(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")] for line in text.strip().splitlines()]


def _parse_table1(text: str, classes: tuple[str, ...]) -> list[dict]:
    rows = []
    for method, ref, backbone, *scores in _cells(text):
        names = (*classes, *_SUMMARY)
        iou, (miou, dice, acc) = [_score(c) for c in scores[:4]], [_score(c) for c in scores[4:]]
        rows.append(
            {
                "method": method,
                "ref": int(ref) if ref else None,
                "backbone": backbone,
                "iou": tuple(iou),
                "miou": miou,
                "dice": dice,
                "acc": acc,
                "significant": tuple(n for n, c in zip(names, scores, strict=True) if c.endswith("†")),
            }
        )
    return rows


def _parse_table2(text: str) -> dict[str, dict]:
    rows = {}
    for key, flags, *scores in _cells(text):
        ars, swv, srm = (f == "1" for f in flags.split())
        iou, (miou, dice, acc) = [_score(c) for c in scores[:4]], [_score(c) for c in scores[4:]]
        rows[key] = {
            "ars": ars,
            "swv": swv,
            "srm": srm,
            "iou": tuple(iou),
            "miou": miou,
            "dice": dice,
            "acc": acc,
        }
    return rows


def _parse_two_columns(text: str) -> dict[str, dict[str, Score]]:
    return {key: {"miou": _score(miou), "dice": _score(dice)} for key, miou, dice in _cells(text)}


TABLE1: dict[str, list[dict]] = {
    name: _parse_table1(text, CLASSES[name]) for name, text in _TABLE1_TEXT.items()
}
TABLE2: dict[str, dict] = _parse_table2(_TABLE2_TEXT)
TABLE3: dict[str, dict[str, Score]] = _parse_two_columns(_TABLE3_TEXT)
TABLE4: dict[str, dict[str, Score]] = _parse_two_columns(_TABLE4_TEXT)


def dice_from_iou(iou: Sequence[Score | float]) -> float:
    """Mean over classes of ``2·IoU_c / (1 + IoU_c)``, in percent, from per-class IoUs in percent.

    Entries may be ``(mean, std)`` pairs (the mean is used) or plain numbers.
    """
    means = [v[0] if isinstance(v, tuple) else float(v) for v in iou]
    if not means:
        raise ValueError("dice_from_iou needs at least one class IoU")
    return sum(200 * (m / 100) / (1 + m / 100) for m in means) / len(means)


def table1_row(dataset: str, method: str, backbone: str | None = None) -> dict:
    """The Table 1 row of ``method`` (and ``backbone``, needed for ARML's three rows) on ``dataset``."""
    if dataset not in TABLE1:
        raise ValueError(f"dataset must be one of {list(TABLE1)}, got {dataset!r}")
    rows = [
        r
        for r in TABLE1[dataset]
        if r["method"] == method and (backbone is None or r["backbone"] == backbone)
    ]
    if len(rows) != 1:
        choices = sorted({f"{r['method']} ({r['backbone']})" for r in TABLE1[dataset]})
        raise ValueError(f"{len(rows)} rows match {method!r}/{backbone!r} on {dataset}; rows: {choices}")
    return rows[0]


#: Where a paper column goes in a results entry: the keys of :func:`summarize_seeds` (the paper's "Dice" is the
#: mean Dice over classes, our ``mdice``; a plain ``dice`` there is the per-class list).
RESULT_KEYS = {"miou": "miou", "dice": "mdice", "acc": "acc", "iou": "iou"}


def as_results(table: dict[str, dict]) -> dict[str, dict]:
    """A paper table (:data:`TABLE2`, :data:`TABLE3`, :data:`TABLE4`) in the units of every results entry.

    Each ``(mean, std)`` in percent becomes a fraction under the :data:`RESULT_KEYS` name and its std under
    ``<name>_std``, as :func:`summarize_seeds` writes ours; per-class IoUs become the lists ``iou`` and
    ``iou_std``; other fields (Table 2's ``ars``/``swv``/``srm`` flags) are kept. Values are rounded to 6
    decimals, so ``67.97`` stays ``0.6797``.

    >>> as_results(TABLE3)["N/A"]
    {'miou': 0.6797, 'miou_std': 0.0028, 'mdice': 0.8067, 'mdice_std': 0.0022}
    """
    out = {}
    for key, row in table.items():
        entry = {}
        for column, value in row.items():
            if column not in RESULT_KEYS:
                entry[column] = value
            elif column == "iou":
                entry["iou"] = [round(m / 100, 6) for m, _ in value]
                entry["iou_std"] = [round(s / 100, 6) for _, s in value]
            else:
                name = RESULT_KEYS[column]
                entry[name], entry[f"{name}_std"] = round(value[0] / 100, 6), round(value[1] / 100, 6)
        out[key] = entry
    return out


def format_score(score: Score) -> str:
    """``(70.56, 0.19)`` → ``"70.56 ± 0.19"``."""
    return f"{score[0]:.2f} ± {score[1]:.2f}"


def summarize_seeds(runs: Sequence[dict], model: str = "F_a") -> dict:
    """Mean ± std over seeds of one model's stage-2 test metrics, as fractions (the paper's way of reporting).

    Args:
        runs: one :func:`arml.stage2.train_segmenter` result per seed (``{"F_a": {"miou": …, …}, …}``).
        model: ``"F_a"`` (the paper's model), ``"F_b"``, ``"F_c"`` or ``"ensemble"``.

    Returns:
        ``miou``, ``mdice``, ``acc``, ``fwiou`` (means) with ``*_std`` (sample std, 0 for one seed);
        ``iou``/``dice`` per-class means with ``iou_std``/``dice_std``; ``per_seed`` (the mIoUs) and
        ``n_seeds``. Missing values (None) are skipped.
    """
    from arml.stats import mean_std

    if not runs:
        raise ValueError("summarize_seeds needs at least one run")
    missing = [i for i, r in enumerate(runs) if model not in r]
    if missing:
        raise ValueError(
            f"runs {missing} have no model {model!r}; models: {sorted(k for k in runs[0] if k[0] in 'Fe')}"
        )
    scores = [r[model] for r in runs]
    out: dict = {}
    for key in ("miou", "mdice", "acc", "fwiou"):
        stats = mean_std(s[key] for s in scores)
        out[key], out[f"{key}_std"] = stats["mean"], stats["std"]
    for key in ("iou", "dice"):
        per_class = [mean_std(s[key][c] for s in scores) for c in range(len(scores[0][key]))]
        out[key], out[f"{key}_std"] = [p["mean"] for p in per_class], [p["std"] for p in per_class]
    out["per_seed"] = [s["miou"] for s in scores]
    out["n_seeds"] = len(scores)
    return out


def format_comparison(
    ours: dict[str, dict],
    paper: dict[str, dict],
    metrics: Sequence[tuple[str, str, str]] = (("miou", "miou", "mIoU"), ("mdice", "dice", "Dice")),
    ours_label: str = "ours",
    paper_label: str = "paper",
) -> str:
    """A plain-text table of our rows (fractions, from :func:`summarize_seeds`) beside the paper's (percent).

    Args:
        ours: row key → summary with ``<key>`` and ``<key>_std`` as fractions in [0, 1].
        paper: row key → ``{paper_key: (mean, std)}`` in percent (e.g. :data:`TABLE3`); rows missing on
            either side print "–".
        metrics: ``(our key, paper key, column title)`` triples.
        ours_label, paper_label: headings of the two column groups (say "synthetic" where it applies).

    Returns:
        The table, every number in percent as ``mean ± std``.
    """
    keys = list(ours) + [k for k in paper if k not in ours]
    width = max(8, *(len(str(k)) for k in keys))
    cell = 15

    def fmt(row: dict | None, key: str, scale: float, std_key: str | None) -> str:
        if row is None or row.get(key) is None:
            return f"{'–':>{cell}}"
        mean, std = row[key] if std_key is None else (row[key], row.get(std_key) or 0.0)
        if mean is None or mean != mean:  # a missing or NaN score (e.g. a class absent from the split)
            return f"{'–':>{cell}}"
        if std_key is not None and row.get("n_seeds") == 1:  # one run has no spread: never print "± 0.00"
            return f"{f'{scale * mean:.2f}':>{cell}}"
        return f"{format_score((scale * mean, scale * std)):>{cell}}"

    group = cell * len(metrics) + len(metrics) - 1
    lines = [
        f"{'':<{width}} | {ours_label:^{group}} | {paper_label:^{group}}",
        f"{'row':<{width}} | "
        + " ".join(f"{t:>{cell}}" for _, _, t in metrics)
        + " | "
        + " ".join(f"{t:>{cell}}" for _, _, t in metrics),
    ]
    for k in keys:
        mine = " ".join(fmt(ours.get(k), o, 100, f"{o}_std") for o, _, _ in metrics)
        theirs = " ".join(fmt(paper.get(k), p, 1, None) for _, p, _ in metrics)
        lines.append(f"{k!s:<{width}} | {mine} | {theirs}")
    if any((ours.get(k) or {}).get("n_seeds") == 1 for k in ours):
        lines.append("(our numbers without ± are single runs: one seed has no spread)")
    return "\n".join(lines)


def format_summaries(
    rows: dict[str, dict],
    class_names: Sequence[str] | None = None,
    metrics: Sequence[tuple[str, str]] = (
        ("miou", "mIoU"),
        ("mdice", "Dice"),
        ("acc", "ACC"),
        ("fwiou", "FwIoU"),
    ),
    p_key: str | None = None,
) -> str:
    """Our rows (from :func:`summarize_seeds`) as a percent table: per-class IoU, the summary metrics, a p-value.

    Args:
        rows: row name → summary (fractions, with ``*_std``); per-class ``iou``/``iou_std`` when
            ``class_names`` is given.
        class_names: class columns, or None for none.
        metrics: ``(key, column title)`` pairs.
        p_key: a key of each row holding a p-value to print (None or missing prints "–").
    """
    cell = 14
    width = max(8, *(len(k) for k in rows))
    head = [*(class_names or ()), *(t for _, t in metrics)]
    lines = [f"{'row':<{width}} " + " ".join(f"{h:>{cell}}" for h in head) + (f" {'p':>8}" if p_key else "")]
    for name, row in rows.items():
        cells = []
        if class_names:
            stds = row.get("iou_std") or [0.0] * len(row["iou"])
            cells += [(m, s) for m, s in zip(row["iou"], stds, strict=True)]
        cells += [(row.get(k), row.get(f"{k}_std")) for k, _ in metrics]
        single = row.get("n_seeds") == 1  # one run has no spread: never print "± 0.00"
        text = [
            f"{'–':>{cell}}"
            if m is None or m != m
            else f"{f'{100 * m:.2f}':>{cell}}"
            if single
            else f"{format_score((100 * m, 100 * (s or 0.0))):>{cell}}"
            for m, s in cells
        ]
        line = f"{name:<{width}} " + " ".join(text)
        if p_key:
            p = row.get(p_key)
            line += f" {'–' if p is None or p != p else f'{p:.3g}':>8}"
        lines.append(line)
    if any(row.get("n_seeds") == 1 for row in rows.values()):
        lines.append("(rows without ± are single runs: one seed has no spread)")
    return "\n".join(lines)


def format_table1(dataset: str, ours: dict | None = None, ours_label: str = "ours") -> str:
    """Table 1 of the paper for ``dataset`` (percent, mean ± std, † as printed), optionally with our row below.

    Args:
        dataset: ``"bcss"`` or ``"luad"``.
        ours: a :func:`summarize_seeds` summary (fractions) to append, or None.
        ours_label: its method name.
    """
    if dataset not in TABLE1:
        raise ValueError(f"dataset must be one of {list(TABLE1)}, got {dataset!r}")
    cell = 15
    names = (*CLASSES[dataset], *_SUMMARY)
    lines = [f"{'method':<13} {'backbone':<15} " + " ".join(f"{n:>{cell}}" for n in names)]
    for r in TABLE1[dataset]:
        scores = (*r["iou"], r["miou"], r["dice"], r["acc"])
        cells = [
            format_score(s) + ("†" if n in r["significant"] else "")
            for s, n in zip(scores, names, strict=True)
        ]
        lines.append(f"{r['method']:<13} {r['backbone']:<15} " + " ".join(f"{c:>{cell}}" for c in cells))
    if ours is not None:
        stds = ours.get("iou_std") or [0.0] * len(ours["iou"])
        pairs = [*zip(ours["iou"], stds, strict=True)]
        pairs += [(ours[k], ours.get(f"{k}_std")) for k in ("miou", "mdice", "acc")]
        cells = ["–" if m is None or m != m else format_score((100 * m, 100 * (s or 0.0))) for m, s in pairs]
        lines.append(f"{ours_label:<29} " + " ".join(f"{c:>{cell}}" for c in cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- experiment grids
# Stage-2 overrides per table row. "N/A" / "CE" / "baseline" / "ars" are one network with plain CE
# (peers=1): Table 2's rows without SWV and SRM.
_CE = {"omega": None, "relation": None, "peers": 1}

#: Table 2 (notebook 06): row → (pseudo masks from the classifier "noars" or "ars", stage-2 overrides).
ABLATION: dict[str, tuple[str, dict]] = {
    "baseline": ("noars", _CE),
    "ars": ("ars", _CE),
    "ars_swv": ("ars", {"omega": 2.0, "relation": None, "lam": 0.2}),
    "ars_srm": ("ars", {"omega": None, "relation": "st", "lam": 0.2}),
    "full": ("ars", {"omega": 2.0, "relation": "st", "lam": 0.2}),
}
ABLATION_LABELS = {
    "baseline": "baseline",
    "ars": "+ARS",
    "ars_swv": "+ARS+SWV",
    "ars_srm": "+ARS+SRM",
    "full": "ARML (full)",
}
#: Reference rows of notebook 06 (not in the paper): ``key → (mask source, stage-2 overrides, epoch factor)``.
#: "fully_supervised" is the single CE network on the true training masks (synthetic data only), trained 3×
#: longer so that the upper bound is converged; "ars_2x" is the +ARS row trained twice as long: if stage 2
#: has reached its plateau, it scores the same as "+ARS".
REFERENCE_ROWS: dict[str, tuple[str, dict, int]] = {
    "fully_supervised": ("train_gt", _CE, 3),
    "ars_2x": ("ars", _CE, 2),
}
REFERENCE_LABELS = {"fully_supervised": "fully supervised", "ars_2x": "+ARS, 2× epochs"}
#: The methods of the noise laboratory (notebook 07): each stage-2 loss alone and together, and the released
#: recipe, all on the same corrupted masks.
NOISE_METHODS: dict[str, dict] = {
    "CE": _CE,
    "SWV": {"omega": 2.0, "relation": None, "lam": 0.2},
    "SRM": {"omega": None, "relation": "st", "lam": 0.2},
    "SWV+SRM": {"omega": 2.0, "relation": "st", "lam": 0.2},
    "official": {"omega": 2.0, "relation": "st", "lam": 0.2, "recipe": "official"},
}
#: The full method under the released code's recipe (one network run three times per batch).
OFFICIAL_RECIPE = {"omega": 2.0, "relation": "st", "lam": 0.2, "recipe": "official"}

#: Table 3 (notebook 04): ω of SWV with L_st. ω = 1 weighs every pixel alike, i.e. plain CE + L_st.
OMEGA_SWEEP: dict[str, dict] = {
    "N/A": _CE,
    "1": {"omega": None, "relation": "st", "lam": 0.2},
    "2": {"omega": 2.0, "relation": "st", "lam": 0.2},
    "3": {"omega": 3.0, "relation": "st", "lam": 0.2},
    "5": {"omega": 5.0, "relation": "st", "lam": 0.2},
    "inf": {"omega": math.inf, "relation": "st", "lam": 0.2},
}
#: The full method with the released code's normalisation of Eq. (4) (by pixels, not by weights).
SWV_PIXELS = {"omega": 2.0, "relation": "st", "lam": 0.2, "normalize": "pixels"}

#: Table 4 (notebook 05): the relation-mining loss beside SWV ω = 2.
RELATION_SWEEP: dict[str, dict] = {
    "CE": _CE,
    "KL": {"omega": 2.0, "relation": "kl", "lam": 0.2},
    "CRL": {"omega": 2.0, "relation": "crl", "lam": 0.2},
    "L_pt": {"omega": 2.0, "relation": "pt", "lam": 0.2},
    "L_st": {"omega": 2.0, "relation": "st", "lam": 0.2},
}
#: Table 2's "+ARS+SWV": SWV without a relation term.
SWV_ONLY = {"omega": 2.0, "relation": None, "lam": 0.2}

#: Table 1 of notebook 02 (the ARS ablation of stage 1): variant → ``ClsConfig`` overrides.
ARS_VARIANTS: dict[str, dict] = {
    "none": {"ars": None},
    "cca": {"ars": "cca"},
    "reactivation": {"ars": "reactivation"},
    "both": {"ars": "both"},
    "both, Eq. (3)": {"ars": "both", "reactivation_variant": "eq3"},
    "official": {"ars": "both", "recipe": "official"},
}
