"""Shared fixtures: small real SAM models and checkpoints written in the official key layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autosam.sam.registry import build_sam

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def base_checkpoint(tmp_path: Path):
    """Write an official-layout checkpoint of a randomly initialised SAM; returns (path, sam)."""

    def write(backbone: str = "test_vit", image_size: int = 64, num_classes: int = 4, name: str = "base.pth"):
        sam = build_sam(backbone, image_size, num_classes)
        path = tmp_path / name
        torch.save(sam.state_dict(), path)
        return path, sam

    return write
