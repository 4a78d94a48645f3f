"""The 18 fixed set-ups as trainers, ``nnUNetTrainerSAM_<backbone>_<scope>_<method>``, for ablations.

Each trains the set-up it names, at that set-up's learning rate, whatever set-up the plan chose.
"""

from __future__ import annotations

from autosam.errors import AutosamError
from autosam.trainers.sam_trainer import nnUNetTrainerSAM


class nnUNetTrainerSAM_vit_t_dec_vanilla(nnUNetTrainerSAM):
    setup_override = "vit_t_dec_vanilla"


class nnUNetTrainerSAM_vit_t_dec_adapter(nnUNetTrainerSAM):
    setup_override = "vit_t_dec_adapter"


class nnUNetTrainerSAM_vit_t_dec_lora(nnUNetTrainerSAM):
    setup_override = "vit_t_dec_lora"


class nnUNetTrainerSAM_vit_t_encdec_vanilla(nnUNetTrainerSAM):
    setup_override = "vit_t_encdec_vanilla"


class nnUNetTrainerSAM_vit_t_encdec_adapter(nnUNetTrainerSAM):
    setup_override = "vit_t_encdec_adapter"


class nnUNetTrainerSAM_vit_t_encdec_lora(nnUNetTrainerSAM):
    setup_override = "vit_t_encdec_lora"


class nnUNetTrainerSAM_vit_b_dec_vanilla(nnUNetTrainerSAM):
    setup_override = "vit_b_dec_vanilla"


class nnUNetTrainerSAM_vit_b_dec_adapter(nnUNetTrainerSAM):
    setup_override = "vit_b_dec_adapter"


class nnUNetTrainerSAM_vit_b_dec_lora(nnUNetTrainerSAM):
    setup_override = "vit_b_dec_lora"


class nnUNetTrainerSAM_vit_b_encdec_vanilla(nnUNetTrainerSAM):
    setup_override = "vit_b_encdec_vanilla"


class nnUNetTrainerSAM_vit_b_encdec_adapter(nnUNetTrainerSAM):
    setup_override = "vit_b_encdec_adapter"


class nnUNetTrainerSAM_vit_b_encdec_lora(nnUNetTrainerSAM):
    setup_override = "vit_b_encdec_lora"


class nnUNetTrainerSAM_vit_h_dec_vanilla(nnUNetTrainerSAM):
    setup_override = "vit_h_dec_vanilla"


class nnUNetTrainerSAM_vit_h_dec_adapter(nnUNetTrainerSAM):
    setup_override = "vit_h_dec_adapter"


class nnUNetTrainerSAM_vit_h_dec_lora(nnUNetTrainerSAM):
    setup_override = "vit_h_dec_lora"


class nnUNetTrainerSAM_vit_h_encdec_vanilla(nnUNetTrainerSAM):
    setup_override = "vit_h_encdec_vanilla"


class nnUNetTrainerSAM_vit_h_encdec_adapter(nnUNetTrainerSAM):
    setup_override = "vit_h_encdec_adapter"


class nnUNetTrainerSAM_vit_h_encdec_lora(nnUNetTrainerSAM):
    setup_override = "vit_h_encdec_lora"


PLANNED = "planned"  # --setup planned: the set-up the plan chose (trainer nnUNetTrainerSAM)
VARIANTS: dict[str, type[nnUNetTrainerSAM]] = {
    cls.__name__: cls for cls in nnUNetTrainerSAM.__subclasses__() if cls.__module__ == __name__
}


def trainer_class(name: str) -> type[nnUNetTrainerSAM]:
    """``nnUNetTrainerSAM`` or one of the 18 variants, by trainer name."""
    if name == nnUNetTrainerSAM.__name__:
        return nnUNetTrainerSAM
    if name not in VARIANTS:
        setup = name.removeprefix(nnUNetTrainerSAM.__name__ + "_")
        raise AutosamError(f"--setup {setup}: not one of the 18 set-ups (list them with 'autosam setups')")
    return VARIANTS[name]


def trainer_name(setup: str | None) -> str:
    """The trainer of a fixed set-up; ``None`` or ``"planned"`` is the planned set-up (``nnUNetTrainerSAM``)."""
    return nnUNetTrainerSAM.__name__ if setup in (None, PLANNED) else f"{nnUNetTrainerSAM.__name__}_{setup}"


def trainer_for_setup(setup: str | None) -> type[nnUNetTrainerSAM]:
    return trainer_class(trainer_name(setup))
