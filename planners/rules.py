"""The planner's rules as data: what each decides, what the study found, and what autosam adds.

``study`` states what the study (Gu et al., MELBA 2025: its abstract's four findings, its README, or the
finetune-SAM code) found or did, or that it gives no number; ``autosam`` states the threshold or engineering
choice autosam adds on top. A rule's ``source`` is its weakest part: "autosam" as soon as autosam adds
anything, else "study", or "maintainer" where the evidence is the study's authors on its issue tracker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    id: str
    condition: str
    choice: str
    study: str
    autosam: str = ""
    study_source: str = "study"  # "maintainer": an author's comment on finetune-SAM's issue tracker

    @property
    def source(self) -> str:
        return "autosam" if self.autosam else self.study_source

    @property
    def label(self) -> str:
        return f"{self.id} ({self.source})"

    @property
    def evidence(self) -> str:
        return f"{self.study}; autosam's own: {self.autosam}" if self.autosam else self.study


RULES = {
    r.id: r
    for r in (
        Rule("R1", "any labelled dataset", "parameter-efficient tuning of image encoder + mask decoder",
             "parameter-efficient tuning (adapter or LoRA) of encoder and decoder beats the other strategies "
             "(finding 2)"),
        Rule("R2", "choosing the method", "LoRA first, Adapter second, vanilla last",
             "adapter or LoRA on encoder and decoder beats vanilla tuning (finding 2); the study does not rank "
             "LoRA above adapters, and its best model is self-supervised pretraining + parameter-efficient tuning "
             "of encoder and decoder (README)",
             "LoRA before Adapter, because LoRA merges back into plain SAM weights"),
        Rule("R3", "choosing the backbone", "ViT-B",
             "the architecture has a small impact on performance (finding 3); ViT-B is finetune-SAM's default "
             "backbone"),
        Rule("R4", "at least 1,000 labelled foreground slices and ViT-H fits with batch >= 2", "ViT-H",
             "the architecture has a small impact on performance (finding 3); the study gives no data threshold "
             "for ViT-H",
             "the 1,000-slice threshold, a bet that the largest encoder can use plenty of data"),
        Rule("R5", "planning for a CPU, or ViT-B does not fit", "ViT-T (MobileSAM)",
             "the architecture has a small impact on performance (finding 3); ViT-T (MobileSAM's TinyViT, "
             "~6M encoder weights against ViT-B's ~90M) is one of the study's backbones",
             "falling back to ViT-T on a CPU or when ViT-B does not fit"),
        Rule("R6", "no encoder update fits, even with LoRA and gradient checkpointing", "mask decoder only, "
             "with a warning",
             "parameter-efficient tuning of encoder and decoder beats the other strategies (finding 2); an author: "
             "decoder-only is almost always worse and needs ~100+ cases (finetune-SAM issue #8)",
             study_source="maintainer"),
        Rule("R7", "fewer than 500 labelled foreground slices", "no vanilla encoder update",
             "parameter-efficient tuning of encoder and decoder beats vanilla tuning (finding 2); the study gives "
             "no data threshold",
             "the 500-slice threshold below which full encoder updates are ruled out"),
        Rule("R8", "MR data and the study's self-supervised MRI weights present", "start from them (ViT-B)",
             "further self-supervised training improves performance (finding 4); the released MRI weights beat "
             "the original SAM (abstract); the README's best model starts from self-supervised weights"),
        Rule("R9", "the base weights", "MedSAM: per-image [0, 1] input; SAM, MobileSAM, SSL: ImageNet statistics",
             "finetune-SAM's README: per-image min-max for MedSAM weights, ImageNet mean/std otherwise"),
        Rule("R10", "choosing the image size", "the median slice's longer side, rounded up to a multiple of 64, "
             "within 256-1024; 256 on a CPU",
             "finetune-SAM resizes every slice to 1024 x 1024",
             "smaller sizes from the median slice, the rounding and the CPU cap"),
        Rule("R11", "choosing the batch size", "the largest that fits, from 2 up to 8",
             "finetune-SAM's default batch is 4; the study gives no rule for choosing it",
             "the largest that fits in 2-8, 8 capping the step cost"),
        Rule("R12", "the set-up fits batch 2 only with gradient checkpointing", "gradient checkpointing on",
             "the study uses none (its authors split the image encoder across two GPUs, finetune-SAM issue #5)",
             "recomputing encoder blocks in backward trades ~35% time for most of their activations"),
        Rule("R13", "the learning rate", "AdamW 1e-3, weight decay 0.1; 1e-4 when every encoder weight trains",
             "finetune-SAM's defaults are AdamW, learning rate 1e-3 and weight decay 0.1 for every set-up; the "
             "study gives no per-set-up rate",
             "1e-4 when every encoder weight trains"),
        Rule("R14", "the schedule", "200 warm-up iterations (at most 10% of the budget), then poly decay 0.9",
             "finetune-SAM's warm-up option: 200 iterations, then poly decay 0.9",
             "the warm-up is capped at 10% of a short budget"),
        Rule("R15", "the training budget", "200 passes over the labelled slices, 2,500-50,000 iterations, "
             "in nnU-Net epochs of 250 iterations",
             "finetune-SAM trains up to 200 epochs with early stopping",
             "the 2,500-50,000 clamp and nnU-Net's 250-iteration epochs"),
        Rule("R16", "always", "nnU-Net stays a candidate: 'autosam run' trains it on the same folds",
             "fine-tuned SAM is only slightly better than previous segmentation methods (finding 1)"),
        Rule("R17", "deciding whether a set-up fits", "predicted peak <= 90% of the memory",
             "the study gives no memory rule",
             "10% headroom for the data loader and other processes"),
        Rule("R18", "training from scratch (no pretrained weights)", "vanilla image encoder + mask decoder",
             "the study always starts from pretrained weights",
             "adapters and LoRA freeze the base weights, and a frozen random encoder extracts no useful features"),
        Rule("R19", "a checkpoint 'autosam pretrain' trained on images of the dataset's modality is in the "
             "checkpoint folder", "start from it, its backbone first",
             "further self-supervised training improves performance (finding 4); the README's best model is "
             "self-supervised pretraining of the image encoder on unlabelled in-domain images, then "
             "parameter-efficient tuning of encoder and decoder; the released self-supervised weights are "
             "MRI-specific (abstract)",
             "matching any modality by the one the checkpoint records, and preferring it to the official and the "
             "study's MRI weights"),
        Rule("R20", "fewer than 50 labelled training cases (the few-shot regime)",
             "no vanilla encoder update, whatever the slice count; measure where SAM stops helping with "
             "'autosam run --train-cases'",
             "the study extends its experiments to few-shot settings (abstract), and its code's 5-shot demo trains "
             "on 5 labelled slices from 5 patients; its few-shot numbers could not be read here, and it gives no "
             "case count that ends the few-shot regime",
             "the 50-case threshold, ruling out full encoder updates by case count (R7 counts slices), and the "
             "Dice-against-K comparison with nnU-Net on the same folds"),
    )
}


def cite(*ids: str) -> str:
    return "; ".join(f"{RULES[i].label}: {RULES[i].evidence}" for i in ids)
