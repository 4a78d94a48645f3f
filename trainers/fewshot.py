"""Few-shot trainers: nnU-Net's split step keeps the fold's validation part and restricts its training part to
the K cases that the plans' ``autosam_fewshot`` block asks for (``autosam.data.case_selection.select_cases``),
each holding foreground in the preprocessed references (``gt_segmentations``).

``nnUNetTrainerFewShot`` is the stock nnUNetTrainer, ``nnUNetTrainerSAMFewShot`` the planned SAM trainer; both
draw their cases through the same function from the same inputs, so every method of a repeat trains on the same
cases. nnU-Net finds them through ``nnUNet_extTrainer`` like autosam's other trainers.
"""

from __future__ import annotations

from pathlib import Path

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from autosam.data.case_selection import FEWSHOT_KEY, labelled_foreground, select_cases
from autosam.data.splits import load_groups
from autosam.errors import AutosamError
from autosam.trainers.sam_trainer import nnUNetTrainerSAM


class FewShotSplit:
    """Mixin for an nnU-Net trainer: K training cases of the fold, its whole validation part."""

    def do_split(self) -> tuple[list[str], list[str]]:
        train, validation = super().do_split()
        settings = self.plans_manager.plans.get(FEWSHOT_KEY)
        if settings is None:
            raise AutosamError(
                f"plans {self.plans_manager.plans_name}: no '{FEWSHOT_KEY}' block; "
                f"{type(self).__name__} trains on the plans 'autosam run --train-cases' writes"
            )
        if self.fold == "all":
            raise AutosamError(f"{type(self).__name__}: fold 'all' has no validation part; train a numbered fold")
        preprocessed = Path(self.preprocessed_dataset_folder_base)
        groups = load_groups(preprocessed)
        chosen = select_cases(
            train,
            settings["train_cases"],
            settings["seed"],
            settings["repeat"],
            self.fold,
            groups,
            labelled_foreground(preprocessed, "gt_segmentations"),
        )
        self.print_to_log_file(
            f"few-shot: {len(chosen)} of {len(train)} training cases (repeat "
            f"{settings['repeat']}, seed {settings['seed']}"
            f"{', one per patient' if groups else ''}, each with foreground; training seed "
            f"{settings.get('training_seed')}): {', '.join(chosen)}"
        )
        return chosen, validation


class nnUNetTrainerFewShot(FewShotSplit, nnUNetTrainer):
    pass


class nnUNetTrainerSAMFewShot(FewShotSplit, nnUNetTrainerSAM):
    pass
