"""The few-shot curve: Dice against the number of labelled training cases, per method, with the spread over
repeats, as a table (``fewshot.md``, ``fewshot.json``) and a figure (``fewshot.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autosam.evaluation import figures
from autosam.files import atomic_write_json, atomic_write_text

FIGURE = "fewshot.png"
FULL = "all"  # the K of the full-data run


def _spread(values: list[float]) -> float | None:
    """The standard deviation over repeats (n - 1); None for a single repeat."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def summarise(dice: dict[tuple[str, int], dict[int, float]], full: dict[str, float], info: dict) -> dict:
    """``dice``: (method, K) -> repeat -> cross-validation Dice; ``full``: method -> Dice of the full-data run;
    ``info``: what the run did (folds, seed, repeats, unit, the cases each fold's training part held ...)."""
    methods = list(full)
    rows = []
    for k in sorted({k for _, k in dice}):
        for method in methods:
            values = [dice[method, k][r] for r in sorted(dice.get((method, k), {}))]
            if values:
                rows.append({"k": k, "method": method, "mean": float(np.mean(values)), "spread": _spread(values),
                             "per_repeat": values})
    n_full = float(np.mean(info["full_training_cases"]))
    rows += [{"k": FULL, "training_cases": n_full, "method": m, "mean": full[m], "spread": None, "per_repeat": [full[m]]}
             for m in methods]
    return {**info, "methods": methods, "rows": rows, "sam_minus_best_baseline": _gaps(rows, methods)}


def _gaps(rows: list[dict], methods: list[str]) -> list[dict]:
    """Per K, SAM's mean Dice minus the best baseline's (means over repeats; no test)."""
    gaps = []
    for k in dict.fromkeys(r["k"] for r in rows):
        means = {r["method"]: r["mean"] for r in rows if r["k"] == k}
        baselines = [m for m in methods if m != "SAM" and m in means]
        if "SAM" in means and baselines:
            best = max(baselines, key=lambda m: means[m])
            gaps.append({"k": k, "baseline": best, "difference": means["SAM"] - means[best]})
    return gaps


def _k_text(row: dict) -> str:
    return f"all ({row['training_cases']:g})" if row["k"] == FULL else str(row["k"])


def markdown_lines(summary: dict) -> list[str]:
    """The table, how it was made and the figure, for ``fewshot.md`` and the report's section."""
    unit = summary["unit"]
    lines = ["| K | method | mean Dice | spread (SD over repeats) | per repeat |", "|---|---|---|---|---|"]
    for row in summary["rows"]:
        spread = "—" if row["spread"] is None else f"{row['spread']:.3f}"
        per = "full-data run" if row["k"] == FULL else ", ".join(f"{v:.3f}" for v in row["per_repeat"])
        lines.append(f"| {_k_text(row)} | {row['method']} | {row['mean']:.3f} | {spread} | {per} |")
    gaps = ", ".join(f"K = {g['k']}: {g['difference']:+.3f} (vs {g['baseline']})"
                     for g in summary["sam_minus_best_baseline"])
    return lines + [
        "",
        f"SAM minus the best nnU-Net configuration, mean Dice over repeats (no test): {gaps}.",
        "",
        f"Each method trained on K labelled cases of each fold's training part (folds "
        f"{', '.join(map(str, summary['folds']))}; the full-data run: all "
        f"{'/'.join(map(str, summary['full_training_cases']))} cases) and was validated on "
        f"the fold's whole validation part. The cases were drawn with seed {summary['seed']} and the repeat index "
        f"({summary['repeats']} repeat(s)), the same for every method within a repeat, "
        + ("one per patient, " if unit == "patient" else "")
        + "the smaller sets of a repeat inside the larger ones (fewshot.json lists them). Every method kept the "
        "run's budget whatever K. Dice: the foreground mean per " + unit + ", averaged over the validation cases of "
        "the folds, as in the comparison; the spread is the standard deviation over repeats (— for one).",
        "",
        f"![Dice against the number of labelled training cases]({FIGURE})",
    ]


def write_fewshot(summary: dict, out: Path) -> None:
    """``fewshot.json``, ``fewshot.md`` and ``fewshot.png`` in ``out``, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    figures.fewshot_curve(summary["rows"], summary["methods"], out / FIGURE)
    atomic_write_json(summary, out / "fewshot.json")
    atomic_write_text("# Few labelled cases: Dice against K\n\n" + "\n".join(markdown_lines(summary)) + "\n",
                      out / "fewshot.md")
