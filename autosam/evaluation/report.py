"""The comparison report: SAM vs nnU-Net per case on identical folds, as JSON, Markdown and one HTML file."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from autosam.evaluation import fewshot_curve, figures, interactive_report
from autosam.evaluation.collect import reader_for, training_log
from autosam.evaluation.comparison import Method
from autosam.evaluation.conventions import ALPHA, METRICS
from autosam.evaluation.seeds import seed_lines
from autosam.files import atomic_write_json, atomic_write_text


def _clean(value):
    """JSON has no NaN: write null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value




def _overlay_rows(comparison: dict, methods: list[Method], raw_images: Path, gt_folder: Path) -> list[dict]:
    reader_class, dataset_json = reader_for(methods[0].model_folder)
    reader, ending = reader_class(), dataset_json["file_ending"]
    label, challenger = comparison["labels"][0], comparison["challenger"]
    scored = sorted((c for c in comparison["cases"] if c["metrics"][challenger][label]["empty"] != "both"),
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


def _ci(d: dict, signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"[{format(d['ci95'][0], f)}, {format(d['ci95'][1], f)}]"


def _p(value: float) -> str:
    return "not tested" if not math.isfinite(value) else f"{value:.3g}"


def verdict(test: dict, challenger: str, baseline: str, what: str) -> str:
    """One effect in words, with its interval and its own test: the direction is stated only when the test
    of that effect rejects at ``ALPHA`` (Holm-adjusted within its family)."""
    effect, ci = test["mean_difference"], _ci(test, True)
    tested = f"p = {_p(test['p_value'])}" + (f", Holm p = {_p(test['p_holm'])}" if test["p_holm"] != test["p_value"]
                                             and math.isfinite(test["p_holm"]) else "")
    if not test["tested"]:
        return (f"{what}: not tested (fewer than two {'non-zero ' if test['n'] else ''}differences); mean difference "
                f"{challenger} − {baseline} {effect:+.3f} {ci}")
    if test["p_holm"] < ALPHA:
        direction = "higher" if effect > 0 else "lower"
        return (f"{what}: {challenger} {direction} than {baseline} by {abs(effect):.3f}: mean difference "
                f"{effect:+.3f} {ci} (sign-flip permutation test of the mean, {tested}, n = {test['n']})")
    return (f"{what}: no detectable difference between {challenger} and {baseline}: mean difference "
            f"{effect:+.3f} {ci} (sign-flip permutation test of the mean, {tested}, n = {test['n']})")


def secondary(test: dict, unit: str) -> str:
    """The pseudo-median's estimate, interval and test: a different question than the mean's, said as such."""
    second = test["secondary"]
    low, high = second["ci95"]
    interval = f"[{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else "[too few units for a 95% interval]"
    line = (f"secondary (the typical {unit}, not the mean): Hodges–Lehmann estimate {second['hodges_lehmann']:+.3f} "
            f"{interval}, Wilcoxon signed-rank p = {_p(second['p_value'])}")
    opposite = (math.isfinite(second["p_value"]) and second["p_value"] < ALPHA
                and np.sign(second["hodges_lehmann"]) != np.sign(test["mean_difference"]))
    return line + (f"; it points the other way than the mean: a few {unit}s with large differences carry the mean"
                   if opposite else "")


def detection(comparison: dict, names: list[str]) -> list[str]:
    """Detection apart from overlap, per label: false positives on empty references, found objects."""
    lines = []
    for label, c in comparison["counts"].items():
        empty, filled = c["empty_reference"], c["cases"] - c["empty_reference"]
        parts = [f"{n}: " + ", ".join(
            ([f"false positives on {c['false_positive_on_empty_reference'][n]}/{empty} empty references"] if empty
             else []) + ([f"found {filled - c['missed_object'][n]}/{filled} objects"] if filled else []))
            for n in names]
        lines.append(f"detection of {label} per case: " + "; ".join(parts))
    return lines


def headline(comparison: dict) -> list[str]:
    """The verdict: what was compared and under which conditions first, then the primary endpoint in words with
    its own test, the secondary estimate, the other rows and detection."""
    challenger, baseline = comparison["challenger"], comparison["strongest_baseline"]
    others = [b for b in comparison["baselines"] if b != baseline]
    unit, primary = comparison["unit"], comparison["primary_row"]
    lines = [f"{challenger} vs {baseline}" + (f" (the strongest baseline on the primary endpoint; also trained: "
                                              f"{', '.join(others)})" if others else "")
             + f"; unit of analysis: {unit} (n = {comparison['n_units']} {unit}s"
             + (f", {comparison['n_cases']} cases)" if unit != "case" else ")")]
    lines += comparison.get("conditions", []) + budget_lines(comparison["training"], comparison.get("budget_policy"),
                                                             comparison.get("requested_budgets"))
    test = comparison["paired"][baseline][primary]["dice"]
    smallest = comparison["smallest_attainable_p"]
    if math.isfinite(smallest["holm"]) and smallest["holm"] > ALPHA:
        lines.append(f"with {test['nonzero']} non-zero differences the smallest p the tests can give is "
                     f"{smallest['raw']:.3g} ({smallest['holm']:.3g} after Holm over the baselines): no difference "
                     "can be declared here whatever the data; read the confidence intervals")
    a, b = comparison["summary"][baseline][primary]["dice"], comparison["summary"][challenger][primary]["dice"]
    lines.append(f"primary endpoint ({primary}, Dice pooled over each {unit}'s voxels): {baseline} {a['mean']:.3f} "
                 f"{_ci(a)}, {challenger} {b['mean']:.3f} {_ci(b)}")
    lines.append(verdict(test, challenger, baseline, "verdict"))
    lines.append(secondary(test, unit))
    for row in comparison["rows"]:
        if row != primary:
            lines.append(verdict(comparison["paired"][baseline][row]["dice"], challenger, baseline,
                                 f"exploratory, {row} Dice"))
    lines += detection(comparison, [baseline, challenger])
    return lines + (seed_lines(comparison["seeds"]) if comparison.get("seeds") else [])


def _per_fold(folds: list[dict], key: str) -> set:
    return {f[key] for f in folds}


def _number(value) -> str:
    return "?" if value is None else f"{value:,}"


BUDGET_KEYS = ("epochs", "iterations_per_epoch", "batch_size", "seed")


def budget_lines(training: dict[str, list[dict]], policy: str | None, requested: dict[str, dict] | None) -> list[str]:
    """What each method trained with, read back from its folds; whether the methods match; and every fold
    whose record differs from what this run asked of it (finished folds are kept, never retrained)."""
    verdict = []
    for key, what in (("optimizer_steps", "optimiser steps"), ("images_seen", "training patches")):
        values = [_per_fold(folds, key) for folds in training.values()]
        if any(None in v for v in values):
            verdict.append(f"{what} unknown for folds trained outside autosam")
        elif all(v == values[0] and len(v) == 1 for v in values):
            verdict.append(f"every method the same {_number(next(iter(values[0])))} {what} per fold")
        else:
            verdict.append(f"{what} differ between methods")
    lines = ["budgets: " + "; ".join(verdict) + (f" (requested: {policy})" if policy else "")]
    for name, folds in training.items():
        want = (requested or {}).get(name, {})
        off = [f for f in folds if any(f[k] is not None and k in want and f[k] != want[k] for k in BUDGET_KEYS)]
        if off:
            got = ", ".join(f"{k} {off[0][k]}" for k in BUDGET_KEYS
                            if k in want and off[0][k] is not None and off[0][k] != want[k])
            lines.append(f"note: {name}: {len(off)} fold(s) were trained with other settings than this run asks "
                         f"({got}; asked: {', '.join(f'{k} {want[k]}' for k in BUDGET_KEYS if k in want)}); "
                         "finished folds are kept, move them away to train them again")
    return lines + [f"budget of {n}: {_budget_text(t)}" for n, t in training.items()]


def _budget_text(folds: list[dict]) -> str:
    first = folds[0]
    keys = ("epochs", "iterations_per_epoch", "batch_size")
    if all(tuple(f[k] for k in keys) == tuple(first[k] for k in keys) for f in folds):
        text = (f"{first['epochs']} epochs × {_number(first['iterations_per_epoch'])} iterations × batch "
                f"{_number(first['batch_size'])} = {_number(first['optimizer_steps'])} optimiser steps, "
                f"{_number(first['images_seen'])} training patches per fold")
    else:
        text = "per fold: " + "; ".join(f"{f['epochs']} × {_number(f['iterations_per_epoch'])} × batch "
                                         f"{_number(f['batch_size'])}" for f in folds)
    seconds = [f["seconds"] for f in folds]
    seeds = ", ".join("not recorded" if s is None else str(s) for s in sorted(_per_fold(folds, "seed"), key=str))
    devices = ", ".join(str(d) for d in sorted(_per_fold(folds, "device"), key=str))
    return (f"{text}; training {min(seconds):.0f}-{max(seconds):.0f} s per fold ({sum(seconds):.0f} s in all) on "
            f"{devices}; seed {seeds}")


def _markdown(comparison: dict, plan: dict | None, images: dict[str, str]) -> str:
    names = list(comparison["summary"])
    challenger = comparison["challenger"]
    out = [f"# autosam comparison: {challenger} vs {', '.join(comparison['baselines'])}", "",
           f"Folds {comparison['folds']}, {comparison['n_cases']} validation cases "
           f"({comparison['n_units']} {comparison['unit']}s), identical for every method.", "",
           "## Headline", ""] + [f"- {line}" for line in headline(comparison)]
    out += ["", "## How the numbers are made", ""] + [f"- {line}" for line in comparison["conventions"]]
    out += ["", "## Per label", "", "| label | metric | " + " | ".join(f"{n} mean ± std [95% CI]" for n in names)
            + " | " + " | ".join(f"{challenger} − {b}: mean [95% CI], p (mean), Holm p; Hodges–Lehmann, Wilcoxon p"
                                 for b in comparison["baselines"])
            + " |", "|---|---|" + "---|" * (len(names) + len(comparison["baselines"]))]
    for row in comparison["rows"]:
        for metric in METRICS:
            cells = [f"{comparison['summary'][n][row][metric]['mean']:.3f} ± {comparison['summary'][n][row][metric]['std']:.3f} "
                     f"{_ci(comparison['summary'][n][row][metric])}" for n in names]
            for b in comparison["baselines"]:
                p = comparison["paired"][b][row][metric]
                cells.append(f"{p['mean_difference']:+.3f} {_ci(p, True)}, {_p(p['p_value'])}, {_p(p['p_holm'])}; "
                             f"{p['secondary']['hodges_lehmann']:+.3f}, {_p(p['secondary']['p_value'])}")
            out.append(f"| {row} | {metric} | " + " | ".join(cells) + " |")
    out += ["", "## Detection: empty references and misses (per case)", "", "| label | cases | empty reference | "
            + " | ".join(f"{n}: false positives on empty / missed objects" for n in names) + " |",
            "|---|---|---|" + "---|" * len(names)]
    for label, c in comparison["counts"].items():
        out.append(f"| {label} | {c['cases']} | {c['empty_reference']} | "
                   + " | ".join(f"{c['false_positive_on_empty_reference'][n]} / {c['missed_object'][n]}"
                                for n in names) + " |")
    if plan:
        out += ["", "## The SAM plan", "", f"`{plan['setup']}` at {plan['image_size']} px, batch "
                f"{plan['batch_size']}, predicted {plan['predicted_memory_gb']} GB on {plan['hardware']}. The "
                "budgets above are what the folds trained with: a run's --epochs, --iterations or --equal-budget "
                "replace the plan's epochs and iterations.", ""]
        out += [f"- **{k}**: {v}" for k, v in plan["reasons"].items()]
        out += [f"- warning: {w}" for w in plan.get("warnings", [])]
    if comparison.get("fewshot"):  # autosam run --train-cases; also written alone as fewshot.md
        out += ["", "## Few labelled cases: Dice against K", ""] + fewshot_curve.markdown_lines(comparison["fewshot"])
    if comparison.get("interactive"):  # a prompted plan: Dice after simulated clicks (autosam.evaluation.interactive)
        out += ["", "## Interactive: Dice after 1, 3 and 5 interactions", ""] + \
            interactive_report.markdown_lines(comparison["interactive"])
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
    units = comparison["unit_values"]
    baseline, challenger, primary = comparison["strongest_baseline"], comparison["challenger"], comparison["primary_row"]
    images = {}
    figures.paired_plot(units[baseline][primary]["dice"], units[challenger][primary]["dice"], [baseline, challenger],
                        f"Dice ({primary})", f"Per {comparison['unit']}, same folds", out / "paired_dice.png")
    images[f"Dice per {comparison['unit']}, paired ({challenger} vs {baseline})"] = "paired_dice.png"
    figures.box_plots({row: {n: list(units[n][row]["dice"].values()) for n in names} for row in comparison["rows"]},
                      f"Dice per {comparison['unit']}", out / "dice_boxplots.png")
    images["Dice per label"] = "dice_boxplots.png"
    logs = {m.name: [training_log(m.model_folder, f) for f in comparison["folds"]] for m in methods}
    figures.training_curves(logs, out / "training_curves.png")
    images["Training curves (all folds)"] = "training_curves.png"
    rows = _overlay_rows(comparison, methods, raw_images, gt_folder)
    if rows:
        figures.overlays(rows, out / "overlays.png")
        images["Best, median and worst cases"] = "overlays.png"
    if comparison.get("interactive"):
        interactive_report.curve(comparison["interactive"], out / "interactive_dice.png")
        images["Interactive SAM: Dice against interactions (prompts from the reference)"] = "interactive_dice.png"
    comparison = {**comparison, "plan": plan}
    atomic_write_json(_clean(comparison), out / "comparison.json")
    markdown = _markdown(comparison, plan, images)
    atomic_write_text(markdown, out / "report.md")
    atomic_write_text(_html(markdown, out), out / "report.html")
    return out / "report.html"
