"""'autosam pretrain --prompted': prompts from autosam.sam.prompts, the loss falls, the checkpoint is catalogued."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from autosam.paths import CHECKPOINT_DIR_ENV, Dataset
from autosam.planners.sam_planner import base_checkpoint_for
from autosam.pretraining.images import dataset_images, read_labelled_slices
from autosam.pretraining.mae import OFFICIAL_CLASSES
from autosam.pretraining.prompted import PromptedOptions, Slice, prompted_pretrain, slice_prompts
from autosam.sam.model import build_network
from autosam.sam.prompts import bounding_box
from autosam.sam.registry import build_sam
from autosam.sam.setups import METHODS, SCOPES, Setup
from autosam.sam.weights.catalogue import USER_CATALOGUE, sha256_of
from autosam.trainers.seeding import seed_everything


def test_prompts_come_from_autosam_prompts_and_hold_each_object(two_labelled_datasets) -> None:
    volumes = dataset_images(Dataset.resolve("991"), labelled=True)
    pairs = read_labelled_slices([volumes], 64)
    assert len(pairs) == 48  # every slice of the 6 volumes, each with its own label slice
    objects = [(image, label) for image, label in pairs if label.any()]
    assert len(objects) == 24 and all(tuple(label.shape) == (64, 64) for _, label in objects)
    assert [i % 8 for i, (_, label) in enumerate(pairs) if label.any()] == [2, 3, 4, 5] * 6  # the organ's slices
    # the organ (rows and columns 4..11 of 16) at 64 px: rows and columns 16..47
    assert bounding_box(objects[0][1].numpy() == 1) == (16, 16, 47, 47)
    busi = dataset_images(Dataset.resolve("992"), labelled=True)
    for image, label in read_labelled_slices([busi], 64) + objects:
        for mode in ("box", "point", "box+point"):
            prompts = slice_prompts(Slice(image, label, None), mode, np.random.default_rng(0))
            assert set(prompts) == set(torch.unique(label[label > 0]).tolist())
            for k, prompt in prompts.items():
                mask = label.numpy() == k
                x0, y0, x1, y1 = bounding_box(mask)
                if prompt.box is not None:
                    bx0, by0, bx1, by1 = prompt.box
                    assert bx0 <= x0 and by0 <= y0 and bx1 >= x1 and by1 >= y1, (mode, prompt.box, (x0, y0, x1, y1))
                for (x, y), positive in zip(prompt.points, prompt.labels):
                    assert mask[int(y), int(x)] == bool(positive)


def test_prompted_pretraining_lowers_the_loss_and_writes_a_catalogued_base(two_labelled_datasets, tmp_path: Path,
                                                                          monkeypatch) -> None:
    output = tmp_path / "weights" / "prompted_t.pth"
    result = prompted_pretrain(output, PromptedOptions(backbone="test_vit", image_size=64, prompts="box+point",
                                                       epochs=6, batch_size=4, learning_rate=3e-3, device="cpu"),
                               two_labelled_datasets)
    print(f"Dice + BCE {result.loss_before:.4f} -> {result.loss_after:.4f}, per epoch {result.losses}")
    assert result.objects == 3 + 24  # one object per BUSI image, the organ in 24 CT slices
    assert result.loss_after < 0.85 * result.loss_before
    entry = json.loads((output.parent / USER_CATALOGUE).read_text())["checkpoints"]["prompted_t"]
    assert entry["sha256"] == sha256_of(output) and entry["modality"] == "mixed"
    assert entry["started_from"] == "random weights"
    assert entry["datasets"] == ["Dataset992_Busi", "Dataset991_Volumes"]
    assert entry["labels_used"] is True and [len(entry["seen_images"][d]) for d in entry["datasets"]] == [3, 6]
    assert "prompted pretraining" in entry["source"] and "Dataset992_Busi, Dataset991_Volumes" in entry["source"]
    written = torch.load(output, weights_only=True)
    assert written["image_encoder.pos_embed"].shape[1] == 64  # the official 1024 px layout
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(output.parent))
    for scope in SCOPES:
        for method in METHODS:
            setup = Setup("test_vit", scope, method)
            base, warnings = base_checkpoint_for(setup, "prompted_t")  # what --checkpoint prompted_t plans
            assert not warnings and base.sha256 == entry["sha256"]
            network = build_network(setup, 64, 2, 1, base=base)
            assert network.ensure_base_loaded().name == "prompted_t", setup.name
            torch.testing.assert_close(network.sam.image_encoder.patch_embed.proj.weight,
                                       written["image_encoder.patch_embed.proj.weight"])
            torch.testing.assert_close(network.sam.mask_decoder.output_upscaling[0].weight,
                                       written["mask_decoder.output_upscaling.0.weight"])


def test_prompted_pretraining_of_sam2_trains_its_decoder_and_writes_a_release_layout(two_labelled_datasets,
                                                                                     tmp_path: Path) -> None:
    """SAM 2.1's encoder and mask decoder train on prompts (its prompt encoder stays as it started), and the file
    is what SAM 2.1 releases: the official builder loads it strictly, at the released 1024 px."""
    from autosam_test_backbones import TEST_HIERA_OVERRIDES
    from sam2.build_sam import build_sam2

    output = tmp_path / "weights" / "prompted_hiera.pt"
    prompted_pretrain(output, PromptedOptions(backbone="test_hiera", image_size=64, prompts="box", epochs=1,
                                              batch_size=4, learning_rate=3e-3, device="cpu"), two_labelled_datasets)
    seed_everything(0)  # the random start the run drew (its seed, then the same model built)
    start = build_sam("test_hiera", 64, OFFICIAL_CLASSES).state_dict()
    official = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", str(output), device="cpu",
                          hydra_overrides_extra=[*TEST_HIERA_OVERRIDES, "++model.image_size=1024"],
                          apply_postprocessing=False).state_dict()
    changed = {k for k, v in official.items() if not torch.equal(v, start[k])}
    assert any(k.startswith("sam_mask_decoder.transformer.") for k in changed)
    assert any(k.startswith("image_encoder.trunk.") for k in changed)
    assert not any(k.startswith(("sam_prompt_encoder.", "memory_attention.")) for k in changed)
