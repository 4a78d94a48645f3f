"""The 18 fixed set-ups as trainers, ``nnUNetTrainerSAM_<backbone>_<scope>_<method>``, for ablations."""

from __future__ import annotations

from autosam.sam.setups import all_setups
from trainers.sam_trainer import nnUNetTrainerSAM


def _variant(setup_name: str) -> type[nnUNetTrainerSAM]:
    name = f"nnUNetTrainerSAM_{setup_name}"
    return type(name, (nnUNetTrainerSAM,), {"setup_override": setup_name, "__module__": __name__,
                                             "__doc__": f"nnUNetTrainerSAM fixed to the set-up {setup_name}."})


VARIANTS = {cls.__name__: cls for cls in (_variant(s.name) for s in all_setups())}
globals().update(VARIANTS)
__all__ = list(VARIANTS)
