"""The plan as a person reads it (``autosam plan``) and as a program reads it (``--json``)."""

from __future__ import annotations

import re

from autosam.plans import SamPlan

RULE_TAG = re.compile(r"\b(R\d+) \((study|autosam|maintainer|user)\)")
SHORT_REASON = 110  # characters of a reason shown without --explain


def plan_summary(plan: SamPlan, batch_size: int, facts: dict) -> dict:
    return {
        "dataset": facts["dataset"],
        "hardware": plan.hardware,
        "setup": plan.setup.name,
        "image_size": plan.image_size,
        "batch_size": batch_size,
        "gradient_checkpointing": plan.gradient_checkpointing,
        "predicted_memory_gb": plan.predicted_memory_gb,
        "base_checkpoint": plan.base_checkpoint.name if plan.base_checkpoint else None,
        "learning_rate": plan.learning_rate,
        "num_epochs": plan.num_epochs,
        "iterations_per_epoch": plan.iterations_per_epoch,
        "reasons": plan.reasons,
        "overridden": plan.overridden,
        "warnings": plan.warnings,
        "candidates": plan.candidates,
        "dataset_facts": facts,
    }


def plan_text(summary: dict, explain: bool) -> str:
    facts = summary["dataset_facts"]
    lines = [
        (f"{summary['dataset']}: {facts['num_cases']} cases, {facts['num_foreground_slices']} labelled slices of "
        f"{facts['num_slices']}, median slice {facts['median_slice_shape']}, modality {facts['modality']}, "
        f"{len(facts['labels']) - 1} foreground label(s)"),
        f"planned for {summary['hardware']}",
        "",
        f"  set-up           {summary['setup']}",
        f"  image size       {summary['image_size']} px",
        f"  batch size       {summary['batch_size']}" + ("  (gradient checkpointing)" if
                                                       summary["gradient_checkpointing"] else ""),
        f"  predicted memory {summary['predicted_memory_gb']:.2f} GB",
        f"  base weights     {summary['base_checkpoint'] or 'none (from scratch)'}",
        (f"  learning rate    {summary['learning_rate']:g}, {summary['num_epochs']} epochs x "
        f"{summary['iterations_per_epoch']} iterations"),
        "",
        "why:",
    ]
    lines += [f"  {field}: {reason if explain else short_reason(reason)}"
              for field, reason in summary["reasons"].items()]
    if summary["overridden"]:
        lines.append(f"set by you: {', '.join(summary['overridden'])}")
    lines += [f"warning: {w}" for w in summary["warnings"]]
    if explain:
        lines += ["", (f"all {len(summary['candidates'])} candidates (memory at batch 2, the chosen one at its batch "
                      f"{summary['batch_size']}; +gc: with gradient checkpointing; training GFLOPs per image and "
                      "iteration, decoder-only on cached embeddings unless --no-embedding-cache):")]
        width = max(len(c["name"]) for c in summary["candidates"])
        for c in sorted(summary["candidates"], key=lambda c: c["why_not"] != "chosen"):
            fits = "fits" if c["fits"] else "too big"
            chosen = c["why_not"] == "chosen"
            ckpt = " +gc" if (summary["gradient_checkpointing"] if chosen else c["gradient_checkpointing"]) else ""
            memory = summary["predicted_memory_gb"] if chosen else c["predicted_memory_gb"]
            step = f"{c['step_gflops']:>9.2f} GFLOPs" if c.get("step_gflops") is not None else ""  # older plans: none
            lines.append(f"  {c['name']:<{width}}  {memory:>7.2f} GB{ckpt:<4} {fits:<8} {step} "
                         f"{c['why_not']}")
    return "\n".join(lines)


def short_reason(reason: str) -> str:
    """A reason on one line: its own words up to the first rule's evidence, the rules it cites as tags
    ('[R11 autosam]'); --explain shows the whole text."""
    tags = " ".join(f"[{rule} {source}]" for rule, source in dict.fromkeys(RULE_TAG.findall(reason)))
    head = RULE_TAG.split(reason, maxsplit=1)[0].rstrip(" (;:,") if tags else reason
    if not head:  # the reason is the rule's evidence itself: its first words
        head = RULE_TAG.split(reason.split("): ", 1)[-1], maxsplit=1)[0].rstrip(" (;:,")
    if len(head) > SHORT_REASON:
        head = head[: SHORT_REASON - 1].rstrip() + "…"
    return f"{head} {tags}".strip() if head else tags
