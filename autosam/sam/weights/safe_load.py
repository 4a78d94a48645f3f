"""Fold checkpoints (and nnU-Net's post-processing choice) are read without running code from them: ``torch.load(weights_only=True)`` only, with
the numpy scalar types nnU-Net's own training logs hold allowed by name.

nnU-Net's predictor and its ``load_checkpoint`` call ``torch.load(weights_only=False)``; autosam opens every
fold checkpoint it hands to them here first, so one that needs pickled code is refused before nnU-Net
touches it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from autosam.errors import CheckpointError

_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
NUMPY_LOG_TYPES = [_NUMPY_CORE.multiarray.scalar, np.dtype, type(np.dtype("float64")), type(np.dtype("float32")),
                   type(np.dtype("int64"))]


class _PostprocessingUnpickler(pickle.Unpickler):
    """nnU-Net's ``postprocessing.pkl`` names functions of its own post-processing module and their keyword
    arguments; anything else would be code from elsewhere."""

    def find_class(self, module: str, name: str):
        if module == "nnunetv2.postprocessing.remove_connected_components" or (
                module.startswith("numpy") and name in ("scalar", "dtype", "_reconstruct", "ndarray")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not one of nnU-Net's post-processing functions")


def load_postprocessing(path: str | Path) -> tuple[list, list]:
    """``(functions, keyword arguments)`` of nnU-Net's post-processing file, or a one-line error."""
    try:
        with open(path, "rb") as f:
            functions, kwargs = _PostprocessingUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a post-processing file written by nnU-Net ({e}); run 'autosam run' again "
                              "to choose the configuration, or pick a model with --setup") from None
    return functions, kwargs


def load_fold_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A fold checkpoint (nnU-Net's or autosam's), or a one-line error naming the file."""
    try:
        with torch.serialization.safe_globals(NUMPY_LOG_TYPES):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        reason = f"it pickles {found.group(1)}" if found else "it holds pickled objects"
        raise CheckpointError(
            f"checkpoint {path}: needs code to be read ({reason}); autosam never runs code from a "
            "checkpoint: use one written by nnU-Net or autosam, or train the fold again") from None
    except Exception as e:  # noqa: BLE001 - every other unreadable file gets the same one-line answer
        raise CheckpointError(f"checkpoint {path}: cannot be read ({type(e).__name__}); it is truncated or corrupt: "
                              "delete it to train the fold again, or restore it from a backup") from None
