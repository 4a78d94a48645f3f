"""The 18 fixed set-up trainers: found by nnU-Net's lookup, each with its own set-up and learning rate."""

from __future__ import annotations

from pathlib import Path

from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from autosam.paths import CHECKPOINT_DIR_ENV, EXT_TRAINER_DIR
from autosam.plans import SamPlan
from autosam.sam.setups import Setup, all_setups
from autosam.sam.weights.base import BaseCheckpoint
from autosam.trainers.sam_trainer import nnUNetTrainerSAM
from autosam.trainers.variants import VARIANTS


def _configuration(setup: str, learning_rate: float, base: BaseCheckpoint | None = None,
                   normalisation: str = "imagenet") -> ConfigurationManager:
    plan = SamPlan(Setup.parse(setup), 512, normalisation, base, learning_rate)
    return ConfigurationManager({"architecture": {}, "sam": plan.to_dict()})


def test_nnunet_finds_every_variant_through_ext_trainer(monkeypatch) -> None:
    monkeypatch.setenv("nnUNet_extTrainer", str(EXT_TRAINER_DIR))

    assert len(VARIANTS) == 18 + 24  # the study's set-ups and SAM 2.1's (four Hiera sizes)
    for setup in all_setups(("vit_t", "vit_b", "vit_h", "sam2_t", "sam2_s", "sam2_bplus", "sam2_l")):
        name = f"nnUNetTrainerSAM_{setup.name}"
        assert recursive_find_trainer_class_by_name(name) is VARIANTS[name]


def test_variant_trains_at_the_learning_rate_of_its_own_setup() -> None:
    vanilla = VARIANTS["nnUNetTrainerSAM_vit_b_encdec_vanilla"].plan_for(_configuration("vit_b_encdec_lora", 1e-3))
    assert vanilla.learning_rate == 1e-4 and "vit_b_encdec_vanilla" in vanilla.reasons["learning_rate"]
    lora = VARIANTS["nnUNetTrainerSAM_vit_t_encdec_lora"].plan_for(_configuration("vit_b_encdec_vanilla", 1e-4))
    assert lora.learning_rate == 1e-3 and "vit_t_encdec_lora" in lora.reasons["learning_rate"]
    assert nnUNetTrainerSAM.plan_for(_configuration("vit_b_encdec_vanilla", 1e-4)).learning_rate == 1e-4


def test_variant_on_another_backbone_takes_its_weights_and_their_normalisation(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    for file in ("medsam_vit_b.pth", "mobile_sam.pt"):
        (tmp_path / file).touch()
    medsam = BaseCheckpoint("medsam_vit_b", "medsam_vit_b.pth", str(tmp_path / "medsam_vit_b.pth"), None)
    planned = _configuration("vit_b_encdec_lora", 1e-3, medsam, "minmax")
    tiny = VARIANTS["nnUNetTrainerSAM_vit_t_encdec_lora"].plan_for(planned)
    assert (tiny.base_checkpoint.name, tiny.normalisation) == ("mobile_sam", "imagenet")
    assert tiny.base_checkpoint.path == str((tmp_path / "mobile_sam.pt").resolve())  # next to the planned weights
    same = VARIANTS["nnUNetTrainerSAM_vit_b_dec_adapter"].plan_for(planned)
    assert (same.base_checkpoint, same.normalisation) == (medsam, "minmax")
    scratch = VARIANTS["nnUNetTrainerSAM_vit_h_encdec_lora"].plan_for(_configuration("vit_b_encdec_lora", 1e-3))
    assert scratch.base_checkpoint is None
