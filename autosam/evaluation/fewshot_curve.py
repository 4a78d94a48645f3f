"""The few-shot curve: Dice against the number of labelled training patients (cases when the patients are not
known), per method, with the spread over repeats, and SAM paired with the baseline declared before training, as
a table (``fewshot.md``, ``fewshot.json``) and a figure (``fewshot.png``). One unit on the x-axis: K and the
full-data point both count the patients of a fold's training part."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autosam.evaluation import figures
from autosam.evaluation.study_stats import (
    DICE_RANGE,
    DIFFERENCE_RANGE,
    mean_over_repeats,
    paired_family,
    repeat_interval,
)
from autosam.files import atomic_write_json, atomic_write_text

FIGURE = "fewshot.png"
FULL = "all"  # the K of the full-data run
SAM = "SAM"
Units = dict[str, float]  # unit (patient or case) -> cross-validation Dice


def _spread(values: list[float]) -> float | None:
    """The standard deviation over repeats (n - 1); None for a single repeat."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(
    units: dict[tuple[str, int], dict[int, Units]], full: dict[str, float], baseline: str, info: dict
) -> dict:
    """``units``: (method, K) -> repeat -> unit -> cross-validation Dice; ``full``: method -> Dice of the
    full-data run; ``baseline``: the method SAM is paired with, declared before training; ``info``: what the run
    did (folds, seed, repeats, unit, ``full_training_units``: each fold's training patients ...)."""
    methods = list(full)
    rows = []
    for k in sorted({k for _, k in units}):
        for method in methods:
            repeats = units.get((method, k), {})
            values = [float(np.mean(list(repeats[r].values()))) for r in sorted(repeats)]
            if values:
                rows.append(
                    {
                        "k": k,
                        "method": method,
                        "mean": float(np.mean(values)),
                        "spread": _spread(values),
                        "ci95": repeat_interval(values, DICE_RANGE),
                        "per_repeat": values,
                    }
                )
    n_full = float(np.mean(info["full_training_units"]))
    rows += [
        {
            "k": FULL,
            "training_units": n_full,
            "method": m,
            "mean": full[m],
            "spread": None,
            "ci95": None,
            "per_repeat": [full[m]],
        }
        for m in methods
    ]
    return {
        **info,
        "methods": methods,
        "rows": rows,
        "baseline": baseline,
        "sam_minus_baseline": paired_gaps(units, baseline),
    }


def paired_gaps(units: dict[tuple[str, int], dict[int, Units]], baseline: str) -> list[dict]:
    """Per K, SAM minus ``baseline`` paired within each repeat (same cases drawn, same training seed): the
    per-repeat mean differences over the units both scored, their mean, SD and 95% CI over repeats (clipped to
    [-1, 1]); and ``per_unit``: ``stats.paired_comparison`` of each unit's Dice averaged over the repeats,
    Holm-adjusted over the Ks."""
    ks = sorted(k for method, k in units if method == SAM and (baseline, k) in units)
    per_repeat, pairs = {}, {}
    for k in ks:
        sam, base = units[SAM, k], units[baseline, k]
        repeats = sorted(set(sam) & set(base))
        per_repeat[k] = [
            float(np.mean([sam[r][u] - base[r][u] for u in sorted(set(sam[r]) & set(base[r]))])) for r in repeats
        ]
        pairs[k] = (mean_over_repeats([base[r] for r in repeats]), mean_over_repeats([sam[r] for r in repeats]))
    tests = paired_family(pairs)
    return [
        {
            "k": k,
            "baseline": baseline,
            "difference": float(np.mean(per_repeat[k])),
            "per_repeat": per_repeat[k],
            "spread": _spread(per_repeat[k]),
            "ci95": repeat_interval(per_repeat[k], DIFFERENCE_RANGE),
            "per_unit": tests[k],
        }
        for k in ks
    ]


def _k_text(row: dict) -> str:
    return f"all ({row['training_units']:g})" if row["k"] == FULL else str(row["k"])


def _interval(ci: list[float] | None, signed: bool = False) -> str:
    if ci is None:
        return ""
    return f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def _gap_line(gap: dict, unit: str) -> str:
    test = gap["per_unit"]
    spread = "" if gap["spread"] is None else f", SD {gap['spread']:.3f}"
    tested = (
        f"p = {test['p_value']:.3g}, Holm over the Ks p = {test['p_holm']:.3g}"
        if np.isfinite(test["p_value"])
        else "not tested"
    )
    return (
        f"- K = {gap['k']}: {gap['difference']:+.3f}{_interval(gap['ci95'], True)} over repeats (per repeat "
        + ", ".join(f"{d:+.3f}" for d in gap["per_repeat"])
        + f"{spread}); per {unit} averaged over the repeats "
        f"{test['mean_difference']:+.3f}{_interval(test['ci95'], True)}, {tested} (n = {test['n']})"
    )


def summary_lines(summary: dict) -> list[str]:
    """The table and SAM's paired gap per K (the console prints these)."""
    unit = summary["unit"]
    lines = [
        f"| K ({unit}s) | method | mean Dice [95% CI over repeats] | SD over repeats | per repeat |",
        "|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        spread = "—" if row["spread"] is None else f"{row['spread']:.3f}"
        per = "full-data run" if row["k"] == FULL else ", ".join(f"{v:.3f}" for v in row["per_repeat"])
        lines.append(
            f"| {_k_text(row)} | {row['method']} | {row['mean']:.3f}{_interval(row['ci95'])} | {spread} | {per} |"
        )
    gaps = summary["sam_minus_baseline"]
    lines += [
        "",
        f"SAM minus {summary['baseline']} (the baseline declared before training), paired within each repeat:"
        if gaps
        else f"SAM minus {summary['baseline']}: not available (that baseline has no few-shot result).",
    ]
    return lines + [_gap_line(g, unit) for g in gaps]


def markdown_lines(summary: dict) -> list[str]:
    """The table, the paired gaps, how they were made and the figure, for ``fewshot.md`` and the report."""
    unit = summary["unit"]
    return summary_lines(summary) + [
        "",
        f"Each method trained on K labelled {unit}s of each fold's training part (folds "
        f"{', '.join(map(str, summary['folds']))}; the full-data run: all "
        f"{'/'.join(map(str, summary['full_training_units']))} {unit}s) and was validated on the fold's whole "
        f"validation part. The cases were drawn with seed {summary['seed']} and the repeat index "
        f"({summary['repeats']} repeat(s)), the same for every method within a repeat, "
        + ("one slice or volume per patient, " if unit == "patient" else "")
        + "each holding foreground in its reference, the smaller sets of a repeat inside the larger ones "
        "(fewshot.json lists them). Each repeat trained with its own seed (training seeds "
        f"{', '.join(map(str, summary['training_seeds']))}), the same for every method of the repeat. Every method "
        "kept the run's budget whatever K. Dice: the foreground mean per " + unit + ", averaged over the "
        "validation cases of the folds, as in the comparison; the spread is the standard deviation over repeats "
        "(— for one), the CI over repeats Student's t clipped to Dice's range. The baseline SAM is paired with "
        "was fixed before training (nnU-Net 2d when trained), not chosen per K; the per-" + unit + " test "
        "describes these validation " + unit + "s, the spread over repeats the draw of training cases and seed.",
        "",
        f"![Dice against the number of labelled training {unit}s]({FIGURE})",
    ]


def write_fewshot(summary: dict, out: Path) -> None:
    """``fewshot.json``, ``fewshot.md`` and ``fewshot.png`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    figures.fewshot_curve(summary["rows"], summary["methods"], out / FIGURE, summary["unit"])
    atomic_write_json(summary, out / "fewshot.json")
    atomic_write_text(
        "# Few labelled cases: Dice against K\n\n" + "\n".join(markdown_lines(summary)) + "\n", out / "fewshot.md"
    )
