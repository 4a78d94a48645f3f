"""'autosam pretrain': the MAE objective on SAM's encoders, the catalogued checkpoint, the planner's R19."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from autosam.errors import CheckpointError
from autosam.paths import CHECKPOINT_DIR_ENV, Dataset
from autosam.planners.sam_planner import base_checkpoint_for
from autosam.pretraining.mae import PretrainOptions, pretrain
from autosam.pretraining.mae_model import MaskedAutoencoder, random_patch_mask
from autosam.sam.model import build_network
from autosam.sam.registry import build_sam
from autosam.sam.setups import METHODS, SCOPES, Setup
from autosam.sam.weights.catalogue import RANDOM_START, USER_CATALOGUE, sha256_of
from tests.conftest import make_volumes

TEST_BACKBONES = ("test_vit", "test_tiny_vit", "test_hiera")


def _smooth_images(count: int, size: int = 64) -> torch.Tensor:
    """Images with structure a reconstruction can learn: low-frequency noise, upsampled."""
    coarse = torch.randn(count, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).expand(-1, 3, -1, -1)


@pytest.mark.parametrize("backbone", TEST_BACKBONES)
def test_mae_steps_lower_the_reconstruction_loss_and_train_the_encoder(backbone: str) -> None:
    model = MaskedAutoencoder(build_sam(backbone, 64, 4), 0.75)
    images = _smooth_images(8)
    fixed = random_patch_mask(8, 4, 0.75, torch.Generator().manual_seed(2))
    patch_embed = [p.detach().clone() for p in model.patch_embed.parameters()]
    with torch.no_grad():
        before = model(images, fixed)[0].item()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # The 5-block, 8-wide test Hiera learns the random-mask task too slowly for a unit test: it must fit one mask.
    for step in range(20):
        loss = model(images, fixed if backbone == "test_hiera" else None,
                     generator=torch.Generator().manual_seed(10 + step))[0]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = model(images, fixed)[0].item()
    print(f"{backbone}: masked-patch loss {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before
    # the gradient reaches the encoder's first layer, not only the decoder
    assert any(not torch.equal(a, p) for a, p in zip(patch_embed, model.patch_embed.parameters()))


@pytest.mark.parametrize("backbone", TEST_BACKBONES)
def test_masked_pixels_never_reach_the_encoder(backbone: str) -> None:
    model = MaskedAutoencoder(build_sam(backbone, 64, 4), 0.75).eval()
    images = torch.randn(2, 3, 64, 64)
    mask = random_patch_mask(2, 4, 0.75, torch.Generator().manual_seed(3))
    pixels = mask.repeat_interleave(16, 1).repeat_interleave(16, 2)[:, None]
    changed = torch.where(pixels, torch.randn_like(images), images)  # other content under the masked patches
    seen = []
    handle = model.encoder.neck.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        model(images, mask), model(changed, mask)
    handle.remove()
    torch.testing.assert_close(seen[0], seen[1])


@pytest.mark.parametrize("ratio", (0.75, 0.5, 0.25))
def test_masked_fraction_equals_the_ratio_on_both_patch_grids(ratio: float) -> None:
    assert (random_patch_mask(3, 8, ratio).flatten(1).float().mean(1) == ratio).all()
    # ViT: the share of 16-px tokens that enter the first block as the mask token (+ the positional embedding)
    vit = MaskedAutoencoder(build_sam("test_vit", 128, 4), ratio).eval()
    tokens = []
    handle = vit.encoder.blocks[0].register_forward_pre_hook(lambda _m, inputs: tokens.append(inputs[0]))
    with torch.no_grad():
        vit(torch.randn(2, 3, 128, 128))
    handle.remove()
    is_token = torch.isclose(tokens[0] - vit.encoder.pos_embed, vit.mask_token, atol=1e-6).all(-1)
    assert (is_token.flatten(1).float().mean(1) == ratio).all()
    # TinyViT is masked at its 4-px patch-embedding grid: the share of cells holding the mask token
    model = MaskedAutoencoder(build_sam("test_tiny_vit", 128, 4), ratio).eval()
    cells = []  # what the first stage receives: the patch embedding after masking
    handle = model.encoder.layers[0].register_forward_pre_hook(lambda _m, inputs: cells.append(inputs[0]))
    with torch.no_grad():
        _, _, mask = model(torch.randn(2, 3, 128, 128))
    handle.remove()
    grid = cells[0]
    is_token = (grid == model.mask_token[None, :, None, None]).all(1)
    assert grid.shape[-1] == 32 and mask.shape[-1] == 8
    assert (is_token.flatten(1).float().mean(1) == ratio).all()
    # Hiera (SAM 2.1) too: its first block receives the 4-px grid (B, H/4, W/4, C) plus its positional embedding
    hiera = MaskedAutoencoder(build_sam("test_hiera", 128, 4), ratio).eval()
    trunk, cells = hiera.encoder.trunk, []
    handle = trunk.blocks[0].register_forward_pre_hook(lambda _m, inputs: cells.append(inputs[0]))
    with torch.no_grad():
        hiera(torch.randn(2, 3, 128, 128))
    handle.remove()
    is_token = torch.isclose(cells[0] - trunk._get_pos_embed((32, 32)), hiera.mask_token, atol=1e-6).all(-1)
    assert (is_token.flatten(1).float().mean(1) == ratio).all()


def test_pretrained_checkpoint_loads_into_every_setup_through_the_catalogue(nnunet_folders, tmp_path: Path,
                                                                         monkeypatch) -> None:
    make_volumes(nnunet_folders["nnUNet_raw"])  # 6 CT volumes of 8 slices: read as 48 2D slices, CT-normalised
    folder = tmp_path / "weights"
    result = pretrain(folder / "ct_test.pth", PretrainOptions(backbone="test_vit", image_size=64, epochs=1,
                                                              batch_size=16), datasets=[Dataset.resolve("991")])
    assert len(result.losses) == 1 and result.entry.modality == "CT"
    recorded = json.loads((folder / USER_CATALOGUE).read_text())["checkpoints"]["ct_test"]
    assert recorded["sha256"] == sha256_of(result.checkpoint)
    # what it started from and whose images it saw: the planner and the report read them
    assert recorded["started_from"] == RANDOM_START and recorded["datasets"] == [result.entry.datasets[0]]
    assert result.entry.datasets[0].startswith("Dataset991")
    written = torch.load(result.checkpoint, weights_only=True)
    assert written["image_encoder.pos_embed"].shape[1] == 64  # the official 1024 px layout
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(folder))
    for scope in SCOPES:
        for method in METHODS:
            setup = Setup("test_vit", scope, method)
            base, warnings = base_checkpoint_for(setup, "ct_test")  # what --checkpoint ct_test plans
            assert not warnings and base.sha256 == result.entry.sha256
            network = build_network(setup, 64, 2, 1, base=base)
            identity = network.ensure_base_loaded()
            assert identity.name == "ct_test" and identity.sha256 == result.entry.sha256, setup.name
            torch.testing.assert_close(network.sam.image_encoder.patch_embed.proj.weight,
                                       written["image_encoder.patch_embed.proj.weight"])
    # what it saw, by pixel content (a run on this dataset refuses it: tests/test_experiments_seen_base.py)
    assert recorded["labels_used"] is False and len(recorded["seen_images"][result.entry.datasets[0]]) == 6
    data = bytearray(result.checkpoint.read_bytes())
    data[-100] ^= 0xFF  # same size, other content
    result.checkpoint.write_bytes(bytes(data))
    network = build_network(Setup("test_vit", "encdec", "lora"), 64, 2, 1, base=base_checkpoint_for(
        Setup("test_vit", "encdec", "lora"), str(result.checkpoint))[0])  # by path: its folder's catalogue
    with pytest.raises(CheckpointError) as error:
        network.ensure_base_loaded()
    assert "sha256" in str(error.value) and "autosam pretrain" in str(error.value)
