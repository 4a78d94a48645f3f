"""The comparison report's figures (PNG): paired per-case Dice, box plots, training curves, overlays."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from autosam.files import atomic_save_figure

BASELINE_COLOURS = ("#4c72b0", "#55a868", "#8172b3")  # nnU-Net configurations
CHALLENGER_COLOUR = "#dd8452"


def colour(method: str, methods: list[str]) -> str:
    """Orange for SAM, blues/greens for the baselines, stable whatever their number."""
    if method.startswith("SAM"):
        return CHALLENGER_COLOUR
    baselines = [m for m in methods if not m.startswith("SAM")]
    return BASELINE_COLOURS[baselines.index(method) % len(BASELINE_COLOURS)] if method in baselines else "grey"


def _own_style(draw):
    """Matplotlib's defaults for our figures, whatever style nnU-Net's progress plots set globally."""
    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items() if k != "backend"}

    @functools.wraps(draw)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(defaults):
            return draw(*args, **kwargs)

    return wrapped


def _save(fig, path: Path, dpi: int = 120) -> None:
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=dpi)
    plt.close(fig)


@_own_style
def paired_plot(a: dict[str, float], b: dict[str, float], methods: list[str], ylabel: str, title: str,
                path: Path) -> None:
    """``a``, ``b``: unit -> value of the two methods; one line per unit both have."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for unit in sorted(set(a) & set(b)):
        ax.plot([0, 1], [a[unit], b[unit]], color="grey", alpha=0.4, lw=0.8)
        ax.scatter([0, 1], [a[unit], b[unit]], c=[colour(m, methods) for m in methods], s=10, zorder=3)
    ax.set_xticks([0, 1], methods)
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _save(fig, path)


@_own_style
def box_plots(rows: dict[str, dict[str, list[float]]], ylabel: str, path: Path) -> None:
    """``rows``: label -> method -> values; one panel per label."""
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows) + 0.5, 4), squeeze=False)
    for ax, (label, data) in zip(axes[0], rows.items()):
        methods = list(data)
        parts = ax.boxplot([data[m] for m in methods], patch_artist=True, widths=0.6)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=15)
        for patch, method in zip(parts["boxes"], methods):
            patch.set_facecolor(colour(method, methods))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(label)
        ax.set_ylabel(ylabel)
    _save(fig, path)


@_own_style
def training_curves(logs: dict[str, list[dict]], path: Path) -> None:
    """``logs``: method -> one nnU-Net logging dict per fold (train_losses, val_losses, ema_fg_dice)."""
    fig, (loss_ax, dice_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    for method, folds in logs.items():
        for k, log in enumerate(folds):
            style = {"color": colour(method, list(logs)), "alpha": 0.8, "label": method if k == 0 else None}
            loss_ax.plot(log["train_losses"], **style)
            loss_ax.plot(log["val_losses"], ls="--", color=style["color"], alpha=0.5)
            dice_ax.plot(log["ema_fg_dice"], **style)
    loss_ax.set(xlabel="epoch", ylabel="loss (solid: train, dashed: validation)", title="Loss")
    dice_ax.set(xlabel="epoch", ylabel="pseudo Dice (EMA)", title="Validation pseudo Dice", ylim=(0, 1))
    loss_ax.legend()
    _save(fig, path)


def _slice(volume: np.ndarray, index: int) -> np.ndarray:
    return volume[index] if volume.ndim == 3 else volume


@_own_style
def overlays(rows: list[dict], path: Path) -> None:
    """``rows``: {title, image, reference, predictions: {method: mask}} with 3D (z, y, x) arrays."""
    methods = list(rows[0]["predictions"])
    fig, axes = plt.subplots(len(rows), 2 + len(methods), figsize=(2.6 * (2 + len(methods)), 2.6 * len(rows)),
                             squeeze=False)
    for row, ax_row in zip(rows, axes):
        reference = row["reference"]
        z = int(np.argmax((reference > 0).reshape(reference.shape[0], -1).sum(1)))  # the slice with most target
        image = _slice(row["image"], z)
        panels = [("image", None), ("reference", reference)] + [(m, row["predictions"][m]) for m in methods]
        for ax, (title, mask) in zip(ax_row, panels):
            ax.imshow(image, cmap="gray")
            if mask is not None:
                ax.imshow(np.ma.masked_equal(_slice(mask, z), 0), cmap="autumn", alpha=0.5, vmin=0)
            ax.set_title(f"{row['title']}\n{title}" if title == "image" else title, fontsize=8)
            ax.axis("off")
    _save(fig, path, dpi=110)


@_own_style
def ablation_heatmap(table: dict[str, dict[str, float]], chosen: str | None, path: Path) -> None:
    """``table``: backbone -> {"<scope>_<method>": CV Dice}; the planner's pick is outlined."""
    rows = sorted(table)
    cols = [f"{s}_{m}" for s in ("dec", "encdec") for m in ("vanilla", "adapter", "lora")]
    values = np.array([[table[r].get(c, np.nan) for c in cols] for r in rows])
    fig, ax = plt.subplots(figsize=(8, 1 + 0.7 * len(rows)))
    image = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values) if np.isfinite(values).any() else 0, vmax=
                      np.nanmax(values) if np.isfinite(values).any() else 1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if not np.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", color="white", fontsize=8)
            if chosen == f"{r}_{c}":
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    fig.colorbar(image, ax=ax, label="CV Dice")
    ax.set_title("Fine-tuning set-ups (red: the planner's pick)")
    _save(fig, path)


@_own_style
def fewshot_curve(rows: list[dict], methods: list[str], path: Path, unit: str = "case") -> None:
    """``rows``: {k, method, mean, spread, per_repeat} per K and method, K "all" (at ``training_units``, in the
    same ``unit`` as K) last:
    the mean over repeats with the standard deviation as error bars, each repeat a dot, the full-data run
    joined by a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        few = [r for r in rows if r["method"] == method and r["k"] != "all"]
        full = [r for r in rows if r["method"] == method and r["k"] == "all"]
        c = colour(method, methods)
        ks = [r["k"] for r in few]
        ax.errorbar(ks, [r["mean"] for r in few], yerr=[r["spread"] or 0 for r in few], color=c, marker="o",
                    capsize=3, label=method)
        for r in few:
            ax.scatter([r["k"]] * len(r["per_repeat"]), r["per_repeat"], color=c, s=10, alpha=0.4)
        if few and full:
            ax.plot([ks[-1], full[0]["training_units"]], [few[-1]["mean"], full[0]["mean"]], color=c, ls="--")
        if full:
            ax.scatter([full[0]["training_units"]], [full[0]["mean"]], color=c, marker="s", s=30, zorder=3)
    ticks = sorted({r["k"] for r in rows if r["k"] != "all"} | {r["training_units"] for r in rows if r["k"] == "all"})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel=f"labelled training {unit}s per fold (square: the full-data run)", ylabel="Dice (cross-validation)",
           ylim=(-0.02, 1.02), title=f"Dice against labelled training {unit}s (mean ± SD over repeats)")
    ax.legend()
    _save(fig, path)
