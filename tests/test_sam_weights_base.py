"""Base checkpoints in the official key layout: locating, verifying, refusing, resizing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autosam.errors import CheckpointError
from autosam.paths import CHECKPOINT_DIR_ENV
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam, build_sam_on_meta
from autosam.sam.weights.base import load_base_checkpoint
from autosam.sam.weights.catalogue import CATALOGUE, find_checkpoint, sha256_of


def _one_line(error: pytest.ExceptionInfo, path: Path | str) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def _forward(sam, x):
    with torch.no_grad():
        return SamSegmenter(sam, 1).eval()(x)


def test_official_layout_round_trip(base_checkpoint) -> None:
    path, original = base_checkpoint("test_vit", 64, 4)
    assert {k.split(".")[0] for k in torch.load(path, weights_only=True)} == {
        "image_encoder", "prompt_encoder", "mask_decoder"}
    fresh = build_sam("test_vit", 64, 4)
    identity = load_base_checkpoint(fresh, "test_vit", path, expected_sha256=sha256_of(path))
    assert identity.sha256 == sha256_of(path)
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(_forward(original, x), _forward(fresh, x))


def test_sha256_mismatch_is_refused(base_checkpoint) -> None:
    path, _ = base_checkpoint()
    with pytest.raises(CheckpointError) as err:
        load_base_checkpoint(build_sam("test_vit", 64, 4), "test_vit", path, expected_sha256="0" * 64)
    assert "sha256" in _one_line(err, path)


def test_truncated_file_is_refused(base_checkpoint) -> None:
    path, _ = base_checkpoint()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load_base_checkpoint(build_sam("test_vit", 64, 4), "test_vit", path)
    assert "truncated" in _one_line(err, path)


def test_catalogued_file_with_wrong_size_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mobile_sam.pt").write_bytes(b"not the published file")
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    path = find_checkpoint("mobile_sam")
    with pytest.raises(CheckpointError) as err:
        load_base_checkpoint(build_sam("vit_t", 256, 4), "vit_t", path)
    assert "download it again" in _one_line(err, path)


def test_missing_catalogued_file_says_what_to_download(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        find_checkpoint("sam_vit_b")
    message = _one_line(err, "sam_vit_b_01ec64.pth")
    assert CATALOGUE["sam_vit_b"].source in message and str(tmp_path) in message


def test_vit_b_checkpoint_for_a_vit_h_model_is_refused(tmp_path: Path) -> None:
    # Real ViT-B shapes, written as stride-0 views so the file stays a few kilobytes.
    shapes = {k: v.shape for k, v in build_sam_on_meta("vit_b", 1024, 4).state_dict().items()}
    path = tmp_path / "vit_b_weights.pth"
    torch.save({k: torch.zeros(1).expand(s) for k, s in shapes.items()}, path)
    with pytest.raises(CheckpointError) as err:
        load_base_checkpoint(build_sam_on_meta("vit_h", 1024, 4), "vit_h", path)
    message = _one_line(err, path)
    assert "vit_b" in message and "vit_h" in message


def test_unexpected_keys_are_refused(base_checkpoint) -> None:
    path, sam = base_checkpoint()
    torch.save({**sam.state_dict(), "image_encoder.extra.weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as err:
        load_base_checkpoint(build_sam("test_vit", 64, 4), "test_vit", path)
    assert "unexpected" in _one_line(err, path)


def test_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError) as err:
        load_base_checkpoint(build_sam("test_vit", 64, 4), "test_vit", path)
    _one_line(err, path)


def test_1024_checkpoint_loads_at_256(base_checkpoint) -> None:
    path, _ = base_checkpoint("test_vit", 1024, 4)
    sam = build_sam("test_vit", 256, 4)
    load_base_checkpoint(sam, "test_vit", path)
    encoder = sam.image_encoder
    assert encoder.pos_embed.shape[1:3] == (16, 16)
    assert encoder.blocks[1].attn.rel_pos_h.shape[0] == 2 * 16 - 1  # the global block's table
    out = _forward(sam, torch.randn(2, 1, 256, 256))
    assert out.shape == (2, 4, 256, 256) and torch.isfinite(out).all()


def test_class_heads_keep_pretrained_rows(base_checkpoint) -> None:
    path, original = base_checkpoint("test_vit", 64, 4)
    sam = build_sam("test_vit", 64, 2)
    load_base_checkpoint(sam, "test_vit", path)
    assert torch.equal(sam.mask_decoder.mask_tokens.weight, original.mask_decoder.mask_tokens.weight[:2])
    many = build_sam("test_vit", 64, 6)
    load_base_checkpoint(many, "test_vit", path)
    assert torch.equal(many.mask_decoder.mask_tokens.weight[:4], original.mask_decoder.mask_tokens.weight)
