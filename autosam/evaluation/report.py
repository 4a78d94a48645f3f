"""The comparison report: SAM vs nnU-Net per case on identical folds, as JSON, Markdown and one HTML file."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autosam.errors import AutosamError
from autosam.evaluation import figures
from autosam.evaluation.collect import reader_for, validation_metrics
from autosam.evaluation.stats import describe, paired_comparison
from autosam.files import atomic_write_json

METRICS = ("dice", "nsd", "hd95")


@dataclass
class Method:
    name: str  # "nnU-Net", "SAM"
    model_folder: Path


def _clean(value):
    """JSON has no NaN: write null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# nnU-Net's own checkpoints log numpy scalars; allow exactly those types in the weights-only unpickler.
_NUMPY_LOG_TYPES = [np._core.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("float32")),
                    type(np.dtype("int64"))]


def training_log(model_folder: Path, fold: int) -> dict:
    checkpoint = model_folder / f"fold_{fold}" / "checkpoint_final.pth"
    with torch.serialization.safe_globals(_NUMPY_LOG_TYPES):
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["logging"]


def training_seconds(log: dict) -> float:
    return float(sum(e - s for s, e in zip(log["epoch_start_timestamps"], log["epoch_end_timestamps"])))


def compare(methods: list[Method], folds: list[int], gt_folder: Path, groups: dict[str, str] | None = None) -> dict:
    per_method = {m.name: validation_metrics(m.model_folder, folds, gt_folder) for m in methods}
    names = [m.name for m in methods]
    shared = sorted(set.intersection(*(set(v) for v in per_method.values())))
    if not shared:
        raise AutosamError("the methods share no validated case; were they trained on the same folds?")
    _, dataset_json = reader_for(methods[0].model_folder)
    labels = [k for k, v in dataset_json["labels"].items() if isinstance(v, int) and v != 0]
    cases = [{"case": c, "fold": per_method[names[0]][c]["fold"], "group": (groups or {}).get(c),
              "metrics": {n: per_method[n][c]["metrics"] for n in names}} for c in shared]
    summary = {n: {label: {metric: describe([c["metrics"][n][label][metric] for c in cases]) for metric in METRICS}
                   for label in labels} for n in names}
    baseline, challenger = names
    paired = {label: {metric: paired_comparison(shared, [c["metrics"][baseline][label][metric] for c in cases],
                                                [c["metrics"][challenger][label][metric] for c in cases], groups)
                      for metric in METRICS} for label in labels}
    training = {}
    for m in methods:
        logs = [training_log(m.model_folder, f) for f in folds]
        training[m.name] = {"seconds_per_fold": [round(training_seconds(log), 1) for log in logs],
                            "epochs": [len(log["train_losses"]) for log in logs]}
    return {"dataset": dataset_json.get("name", ""), "folds": folds, "labels": labels, "methods":
            {m.name: str(m.model_folder) for m in methods}, "difference": f"{challenger} - {baseline}",
            "cases": cases, "summary": summary, "paired": paired, "training": training}


def _overlay_rows(comparison: dict, methods: list[Method], raw_images: Path, gt_folder: Path) -> list[dict]:
    reader_class, dataset_json = reader_for(methods[0].model_folder)
    reader, ending = reader_class(), dataset_json["file_ending"]
    label, challenger = comparison["labels"][0], methods[-1].name
    scored = sorted((c for c in comparison["cases"] if not math.isnan(c["metrics"][challenger][label]["dice"])),
                    key=lambda c: c["metrics"][challenger][label]["dice"])
    if not scored:
        return []
    picks = {"worst": scored[0], "median": scored[len(scored) // 2], "best": scored[-1]}
    rows = []
    for title, case in picks.items():
        image, _ = reader.read_images([str(raw_images / f"{case['case']}_0000{ending}")])
        reference, _ = reader.read_seg(str(gt_folder / f"{case['case']}{ending}"))
        predictions = {m.name: reader.read_seg(str(m.model_folder / f"fold_{case['fold']}" / "validation"
                                                   / f"{case['case']}{ending}"))[0][0] for m in methods}
        dice = case["metrics"][challenger][label]["dice"]
        rows.append({"title": f"{title}: {case['case']} ({challenger} Dice {dice:.2f})", "image": image[0],
                     "reference": reference[0], "predictions": predictions})
    return rows


def headline(comparison: dict) -> list[str]:
    """One line per label: mean Dice of each method, the paired difference, its CI and p-value."""
    lines = []
    baseline, challenger = list(comparison["summary"])
    for label in comparison["labels"]:
        a, b = comparison["summary"][baseline][label]["dice"], comparison["summary"][challenger][label]["dice"]
        p = comparison["paired"][label]["dice"]
        lines.append(f"{label}: Dice {baseline} {a['mean']:.3f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}] vs "
                     f"{challenger} {b['mean']:.3f} [{b['ci95'][0]:.3f}, {b['ci95'][1]:.3f}]; difference "
                     f"{p['mean_difference']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}], Wilcoxon "
                     f"p = {p['p_value']:.3g} (n = {p['n']} {p['unit']}s)")
    return lines


def _markdown(comparison: dict, plan: dict | None, images: dict[str, str]) -> str:
    names = list(comparison["summary"])
    out = [f"# autosam comparison: {comparison['difference']}", "",
           f"Folds {comparison['folds']}, {len(comparison['cases'])} validation cases, identical for both methods.",
           "", "## Headline", ""] + [f"- {line}" for line in headline(comparison)] + ["", "## Per label", ""]
    out.append("| label | metric | " + " | ".join(f"{n} mean ± std [95% CI]" for n in names)
               + " | difference [95% CI] | p |")
    out.append("|---|---|" + "---|" * (len(names) + 2))
    for label in comparison["labels"]:
        for metric in METRICS:
            cells = []
            for n in names:
                d = comparison["summary"][n][label][metric]
                cells.append(f"{d['mean']:.3f} ± {d['std']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]")
            p = comparison["paired"][label][metric]
            out.append(f"| {label} | {metric} | " + " | ".join(cells) + f" | {p['mean_difference']:+.3f} "
                       f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] | {p['p_value']:.3g} |")
    out += ["", "Dice and NSD (tolerance 2 mm, or 2 px for PNG): higher is better; HD95: lower is better. "
            "Statistics are paired per " + comparison["paired"][comparison["labels"][0]]["dice"]["unit"]
            + "; CIs are percentile bootstrap (10,000 resamples).", "", "## Training", ""]
    for n, t in comparison["training"].items():
        out.append(f"- {n}: {t['epochs']} epochs per fold, {t['seconds_per_fold']} s per fold")
    if plan:
        out += ["", "## The SAM plan", "", f"`{plan['setup']}` at {plan['image_size']} px, batch "
                f"{plan['batch_size']}, predicted {plan['predicted_memory_gb']} GB on {plan['hardware']}", ""]
        out += [f"- **{k}**: {v}" for k, v in plan["reasons"].items()]
        out += [f"- warning: {w}" for w in plan.get("warnings", [])]
    out += ["", "## Figures", ""] + [f"![{title}]({name})" for title, name in images.items()]
    return "\n".join(out) + "\n"


def _html(markdown: str, folder: Path) -> str:
    """A self-contained page: the Markdown's text and tables, with the figures embedded."""
    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set(line) <= set("|-"):
                continue
            tag = "th" if not in_table else "td"
            body.append(("<table>" if not in_table else "") + "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells)
                        + "</tr>")
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            title, name = line[2:].split("](")
            data = base64.b64encode((folder / name.rstrip(")")).read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}'
                        "</figcaption></figure>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:]).replace('**', '')}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>autosam report</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"


def write_report(comparison: dict, methods: list[Method], out: Path, raw_images: Path, gt_folder: Path,
                 plan: dict | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    names = [m.name for m in methods]
    images = {}
    label = comparison["labels"][0]
    figures.paired_plot(comparison["cases"], label, names, out / "paired_dice.png")
    images["Per-case Dice, paired"] = "paired_dice.png"
    figures.box_plots(comparison["cases"], comparison["labels"], names, out / "dice_boxplots.png")
    images["Dice per label"] = "dice_boxplots.png"
    logs = {m.name: [training_log(m.model_folder, f) for f in comparison["folds"]] for m in methods}
    figures.training_curves(logs, out / "training_curves.png")
    images["Training curves (all folds)"] = "training_curves.png"
    rows = _overlay_rows(comparison, methods, raw_images, gt_folder)
    if rows:
        figures.overlays(rows, out / "overlays.png")
        images["Best, median and worst cases"] = "overlays.png"
    comparison = {**comparison, "plan": plan}
    atomic_write_json(_clean(comparison), out / "comparison.json")
    markdown = _markdown(comparison, plan, images)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(_html(markdown, out))
    return out / "report.html"

