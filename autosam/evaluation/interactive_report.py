"""The report's interactive section: Dice after 1, 3 and 5 interactions per start, from each fold's
``interactive.json`` (``autosam.evaluation.interactive``), with the report's CIs, a curve and the per-case values."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from autosam.evaluation.interactive import REPORTED, evaluate_folds
from autosam.evaluation.stats import unit_values
from autosam.evaluation.study_stats import bounded_mean
from autosam.files import atomic_save_figure
from autosam.inference.trained_models import Model
from autosam.paths import Dataset

CAVEAT = (
    "interactive Dice places every prompt with the reference (its tight box, a box jittered outward by up to "
    "10% per side, or a click at the object's deepest point; then RITM's clicks: the deepest point of the "
    "deeper error region, misses against false positives, never a pixel already clicked), decides a prompted "
    "class by its own logit > 0, on the whole preprocessed slice and in the preprocessed geometry: it "
    "measures how well the model follows corrections and is not comparable to the automatic (promptless) "
    "numbers above"
)


def summarise(fold_files: dict[int, Path], labels: dict[str, str], groups: dict[str, str] | None) -> dict:
    """``labels``: class id -> name. Per start and class, each interaction's Dice over units (patients when
    ``groups`` are known, else cases) with its CI, clipped to [0, 1]; the per-case values are kept."""
    cases, interactions, starts, mode = [], 0, [], None
    for fold, path in sorted(fold_files.items()):
        result = json.loads(Path(path).read_text())
        interactions, starts, mode = result["interactions"], result["starts"], result["prompt_mode"]
        cases += [{"fold": fold, **case} for case in result["cases"]]
    rows = []
    for start in starts:
        for k, name in labels.items():
            scored = [c for c in cases if k in c["starts"].get(start, {})]
            if not scored:
                continue
            curve = [
                bounded_mean(
                    list(
                        unit_values(
                            [c["case"] for c in scored], [c["starts"][start][k]["dice"][i] for c in scored], groups
                        ).values()
                    )
                )
                for i in range(interactions)
            ]
            rows.append({"start": start, "label": name, "class": int(k), "n_cases": len(scored), "dice": curve})
    return {
        "prompt_mode": mode,
        "interactions": interactions,
        "unit": "patient" if groups else "case",
        "rows": rows,
        "cases": cases,
        "caveat": CAVEAT,
    }


def _cell(d: dict) -> str:
    low, high = d["ci95"]
    return f"{d['mean']:.3f} [{low:.3f}, {high:.3f}]" if d["n"] > 1 else f"{d['mean']:.3f}"


def markdown_lines(summary: dict) -> list[str]:
    shown = [i for i in REPORTED if i <= summary["interactions"]]
    lines = [
        (
            f"SAM trained with prompts ({summary['prompt_mode']}), validated per fold with a start prompt and "
            f"simulated clicks; mean Dice [95% CI] per {summary['unit']}. Note: {summary['caveat']}."
        ),
        "",
        "| start | label | n | " + " | ".join(f"{i} interaction{'s' if i > 1 else ''}" for i in shown) + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['start']} | {row['label']} | {row['dice'][0]['n']} | "
            + " | ".join(_cell(row["dice"][i - 1]) for i in shown)
            + " |"
        )
    return lines + ["", "Per-case Dice after every interaction: `comparison.json`, key `interactive.cases`."]


def curve(summary: dict, path: Path) -> None:
    """Dice against interactions, one line per start and label, the CI as a band."""
    with plt.style.context("default"):  # whatever style nnU-Net's progress plots set globally
        _draw_curve(summary, path)


def _draw_curve(summary: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = list(range(1, summary["interactions"] + 1))
    for row in summary["rows"]:
        means = [d["mean"] for d in row["dice"]]
        (line,) = ax.plot(steps, means, marker="o", label=f"from {row['start']}: {row['label']}")
        lows, highs = zip(*(d["ci95"] for d in row["dice"]))
        if row["dice"][0]["n"] > 1:
            ax.fill_between(steps, lows, highs, color=line.get_color(), alpha=0.15)
    ax.set(
        xlabel="interactions (start prompt + corrective clicks)",
        ylabel="Dice",
        xticks=steps,
        ylim=(-0.02, 1.02),
        title="Interactive SAM: Dice against interactions (prompts from the reference)",
    )
    ax.legend()
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=120)
    plt.close(fig)


def interactive_section(dataset: Dataset, folds: list[int], device, groups: dict[str, str] | None) -> dict:
    """``autosam run`` with a prompted plan: the click loop on each fold's validation cases, summarised."""
    labels = json.loads((Model.for_setup(None).folder(dataset) / "dataset.json").read_text())["labels"]
    classes = {str(v): name for name, v in labels.items() if isinstance(v, int) and v > 0 and name != "ignore"}
    return summarise(dict(zip(folds, evaluate_folds(dataset, folds, device))), classes, groups)


def headline_lines(summary: dict) -> list[str]:
    """The console's lines after the automatic headline."""
    shown = [i for i in REPORTED if i <= summary["interactions"]]
    return [
        f"interactive SAM from {row['start']} ({row['label']}), Dice after "
        f"{'/'.join(map(str, shown))} interactions: "
        + " / ".join(f"{row['dice'][i - 1]['mean']:.3f}" for i in shown)
        + f" (n = {row['dice'][0]['n']} {summary['unit']}s; prompts placed with the reference, not comparable to "
        "the automatic Dice)"
        for row in summary["rows"]
    ]
