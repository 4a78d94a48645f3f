# nnU-Net finds trainers outside its package through $nnUNet_extTrainer, which autosam points at this folder.
# This file only re-exports, so nnU-Net's lookup returns the very classes of the installed `autosam.trainers` package.
from autosam.trainers.fewshot import nnUNetTrainerFewShot, nnUNetTrainerSAMFewShot  # noqa: F401
from autosam.trainers.sam_trainer import nnUNetTrainerSAM  # noqa: F401
from autosam.trainers.variants import *  # noqa: F401,F403
