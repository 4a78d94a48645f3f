"""The planner's rules as data: what each decides, and the evidence it rests on.

``source`` says where a rule comes from: "study" (Gu et al., MELBA 2025: abstract, figures or code),
"maintainer" (the study's authors on its issue tracker), "nnU-Net" (its conventions) or "autosam" (our own
threshold or engineering choice where the study gives none).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    id: str
    condition: str
    choice: str
    evidence: str
    source: str


RULES = {
    r.id: r
    for r in (
        Rule("R1", "any labelled dataset", "parameter-efficient tuning of image encoder + mask decoder",
             "PEFT on both encoder and decoder beats the other strategies (finding 2)", "study"),
        Rule("R2", "choosing the method", "LoRA first, Adapter second, vanilla last",
             "the study's best model used LoRA; LoRA merges back into plain SAM weights; vanilla updates every "
             "weight of the scope", "study"),
        Rule("R3", "choosing the backbone", "ViT-B", "the architecture has a small effect because data are "
             "limited (finding 3); ViT-B is the mid-size default", "study"),
        Rule("R4", "at least 1,000 labelled foreground slices and ViT-H fits with batch >= 2", "ViT-H",
             "ViT-H only pays off with more data; the 1,000-slice threshold is ours", "autosam"),
        Rule("R5", "planning for a CPU, or ViT-B does not fit", "ViT-T (MobileSAM)",
             "backbone size matters little (finding 3); ViT-T is 10x cheaper per image", "study"),
        Rule("R6", "no encoder update fits, even with LoRA and gradient checkpointing", "mask decoder only, "
             "with a warning", "decoder-only is almost always worse and needs ~100+ cases "
             "(finetune-SAM issue #8)", "maintainer"),
        Rule("R7", "fewer than 500 labelled foreground slices", "no vanilla encoder update",
             "updating all ~90M+ encoder weights on little data overfits; threshold ours", "autosam"),
        Rule("R8", "MR data and the study's self-supervised MRI weights present", "start from them (ViT-B)",
             "continued self-supervised pretraining improves results (finding 4)", "study"),
        Rule("R9", "the base weights", "MedSAM: per-image [0, 1] input; SAM, MobileSAM, SSL: ImageNet statistics",
             "each checkpoint's own training input", "study"),
        Rule("R10", "choosing the image size", "the median slice's longer side, rounded up to a multiple of 64, "
             "within 256-1024; 256 on a CPU", "SAM works at its native size or below; rounding and the CPU cap "
             "are ours", "autosam"),
        Rule("R11", "choosing the batch size", "the largest that fits, from 2 up to 8",
             "the study trained with batch 2-4; 8 caps the step cost", "autosam"),
        Rule("R12", "the set-up fits batch 2 only with gradient checkpointing", "gradient checkpointing on",
             "recomputing encoder blocks in backward trades ~35% time for most of their activations", "autosam"),
        Rule("R13", "the learning rate", "AdamW 1e-3, weight decay 0.1; 1e-4 when every encoder weight trains",
             "finetune-SAM's defaults; the lower rate for full encoder updates is ours", "study"),
        Rule("R14", "the schedule", "200 warm-up iterations (at most 10% of the budget), then poly decay 0.9",
             "finetune-SAM's warm-up; poly as in nnU-Net", "study"),
        Rule("R15", "the training budget", "200 passes over the labelled slices, 2,500-50,000 iterations, "
             "in nnU-Net epochs of 250 iterations", "the study trained 200 epochs; the clamp is ours", "autosam"),
        Rule("R16", "always", "nnU-Net stays a candidate: 'autosam run' trains it on the same folds",
             "fine-tuned SAM is only slightly better than earlier methods (finding 1)", "study"),
        Rule("R17", "deciding whether a set-up fits", "predicted peak <= 90% of the memory",
             "headroom for the data loader and other processes; ours", "autosam"),
        Rule("R18", "training from scratch (no pretrained weights)", "vanilla image encoder + mask decoder",
             "adapters and LoRA freeze the base weights, and a frozen random encoder extracts no useful features",
             "autosam"),
    )
}


def cite(*ids: str) -> str:
    return "; ".join(f"{i}: {RULES[i].evidence}" for i in ids)
