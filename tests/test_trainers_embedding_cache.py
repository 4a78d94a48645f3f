"""Decoder-only training on cached image embeddings: the same gradients as the normal step, a stale cache is
never read, and the real trainer writes a normal fold checkpoint from it that nnU-Net's predictor loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from autosam.sam.model import build_network
from autosam.sam.setups import Setup
from autosam.sam.weights.base import BaseCheckpoint
from autosam.trainers import embedding_cache
from autosam.trainers.cached import decode_slices, embedding_loss

SETUP = Setup.parse("test_tiny_vit_dec_lora")
GRADIENT_TOLERANCE = 1e-5  # relative to the largest gradient entry; float32 summation order differs


def _loss(batch_dice: bool):
    return DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)


def _decoder_gradients(network) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in network.named_parameters() if p.requires_grad and p.grad is not None}
    network.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("setup, batch_dice", [(SETUP, True), (SETUP, False),
                                               (Setup.parse("test_hiera_dec_vanilla"), True)])
def test_cached_step_gives_the_gradients_of_the_normal_step(setup: Setup, batch_dice: bool) -> None:
    """SAM 2.1's decoder also reads the finer feature levels: they travel with the cached embedding."""
    network = build_network(setup, 64, 3, 1).train()
    x = torch.randn(3, 1, 72, 80)  # whole slices, not the SAM input size: both paths resize the same way
    y = torch.randint(0, 3, (3, 1, 72, 80))
    loss = _loss(batch_dice)

    loss(network(x), y).backward()  # the normal step: the whole network on the un-augmented slices
    normal = _decoder_gradients(network)
    with torch.no_grad():
        features = network.encode(x)  # what the cache stores
    cached_logits = decode_slices(network, features, [(72, 80)] * 3)  # one decoder call, as the cached step
    embedding_loss(loss, cached_logits, list(y), batch_dice).backward()
    cached = _decoder_gradients(network)

    assert normal.keys() == cached.keys() and any("lora_" in n for n in normal) == (setup.method == "lora")
    assert not any(n.startswith("sam.image_encoder.") for n in normal)
    scale = max(g.abs().max() for g in normal.values())
    worst = max((normal[n] - cached[n]).abs().max() for n in normal) / scale
    assert worst <= GRADIENT_TOLERANCE, f"largest relative gradient difference {worst:.2e}"


def test_one_decoder_call_for_the_batch_equals_one_per_slice() -> None:
    """The cached step decodes its batch in one call; slices of different sizes get what one call each gives."""
    network = build_network(SETUP, 64, 3, 1).train()
    for p in network.parameters():  # the decoder starts at zero here and there: make every term count
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.2)
    embeddings = torch.randn(3, 32, 4, 4)
    sizes = [(72, 80), (64, 64), (50, 90)]
    batched = decode_slices(network, (embeddings,), sizes)
    sum(x.square().mean() for x in batched).backward()
    batched_grads = _decoder_gradients(network)
    looped = [network.decode((e[None],), size) for e, size in zip(embeddings, sizes)]
    sum(x.square().mean() for x in looped).backward()
    looped_grads = _decoder_gradients(network)
    for a, b in zip(batched, looped):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert batched_grads.keys() == looped_grads.keys() and batched_grads
    for name in batched_grads:
        torch.testing.assert_close(batched_grads[name], looped_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def _write_cases(folder, shapes: dict[str, tuple[int, int, int]], seed: int = 0) -> None:
    """Cases in nnU-Net's own preprocessed storage (blosc2 + properties pickle), foreground in slice 1."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for case, (z, h, w) in shapes.items():
        seg = np.zeros((1, z, h, w), np.int8)
        seg[0, min(1, z - 1), 10:30, 10:30] = 1
        seg[0, 0, :2] = -1  # outside nnU-Net's crop mask
        locations = np.argwhere(seg == 1)
        for old in folder.glob(f"{case}[._]*"):  # preprocessing again writes new files
            old.unlink()
        nnUNetDatasetBlosc2.save_case(rng.normal(size=(1, z, h, w)).astype(np.float32), seg,
                                      {"class_locations": {1: locations}}, str(folder / case))


def _network(base_path, image_size: int = 64):
    network = build_network(SETUP, image_size, 3, 1, base=BaseCheckpoint.of_file(base_path))
    network.ensure_base_loaded()
    return network


def _same(a, b) -> bool:
    """Feature levels equal up to float32 rounding: the cache encodes slices in batches of another size than the
    check."""
    return len(a) == len(b) and all(x.shape == y.shape and torch.allclose(x, y, rtol=1e-5, atol=1e-5)
                                    for x, y in zip(a, b))


def _build(network, tmp_path, cases, identifier: str = "nnUNetPlans_2d"):
    configuration = {"data_identifier": identifier, "spacing": [1.0, 1.0], "normalization_schemes": ["ZScore"],
                     "use_mask_for_norm": [False]}
    key = embedding_cache.cache_key(network, configuration, {"transpose_forward": [0, 1, 2]}, torch.device("cpu"))
    folder = embedding_cache.cache_folder(tmp_path / "preprocessed", key)
    dataset = nnUNetDatasetBlosc2(str(tmp_path / "preprocessed" / identifier), cases)
    return embedding_cache.build(network, dataset, cases, folder, torch.device("cpu"), key, 2), dataset


def _encoded(network, dataset, case: str) -> tuple[torch.Tensor, ...]:
    data = torch.from_numpy(np.asarray(dataset.load_case(case)[0][:]))
    with torch.no_grad():
        return network.eval().encode(data.permute(1, 0, 2, 3))


def test_a_changed_checkpoint_size_or_data_never_reuses_a_stale_cache(tmp_path, base_checkpoint) -> None:
    cases = ["a", "b"]
    _write_cases(tmp_path / "preprocessed" / "nnUNetPlans_2d", {"a": (3, 40, 48), "b": (1, 56, 56)})
    first_path, _ = base_checkpoint("test_tiny_vit", 64, 3, "first.pth")
    torch.manual_seed(1)
    second_path, _ = base_checkpoint("test_tiny_vit", 64, 3, "second.pth")
    first = _network(first_path)

    info, dataset = _build(first, tmp_path, cases)
    assert (info.built, info.reused, info.slices) == (2, 0, 4)
    entry = embedding_cache.open_case(info.folder, "a")
    assert _same(entry["features"], _encoded(first, dataset, "a"))
    assert entry["segmentation"].min() == 0 and entry["foreground"][1].unique().tolist() == [1]
    again, _ = _build(first, tmp_path, cases)
    assert (again.folder, again.built, again.reused) == (info.folder, 0, 2)

    second = _network(second_path)  # other base weights: another key, embeddings of these weights
    other, _ = _build(second, tmp_path, cases)
    assert other.folder != info.folder and other.built == 2
    assert _same(embedding_cache.open_case(other.folder, "a")["features"], _encoded(second, dataset, "a"))
    assert not _same(embedding_cache.open_case(other.folder, "a")["features"], entry["features"])

    scratch = [build_network(SETUP, 64, 3, 1) for _ in range(2)]  # no checkpoint: keyed on the weights
    keys = [embedding_cache.cache_key(n, {"data_identifier": "d", "spacing": [1.0], "normalization_schemes": ["Z"],
                                          "use_mask_for_norm": [False]}, {}, torch.device("cpu")) for n in scratch]
    assert keys[0]["base_sha256"].startswith("weights:") and keys[0] != keys[1]

    larger, _ = _build(_network(first_path, 128), tmp_path, cases)  # another SAM input size
    assert larger.folder not in (info.folder, other.folder)
    assert embedding_cache.open_case(larger.folder, "a")["features"][0].shape[-1] == 2 * entry["features"][0].shape[-1]

    _write_cases(tmp_path / "preprocessed" / "nnUNetPlans_2d_sam_128px", {"a": (3, 40, 48), "b": (1, 56, 56)})
    renamed, _ = _build(first, tmp_path, cases, "nnUNetPlans_2d_sam_128px")  # another preprocessed data set
    assert renamed.folder != info.folder and renamed.built == 2

    _write_cases(tmp_path / "preprocessed" / "nnUNetPlans_2d", {"a": (3, 40, 48)}, seed=7)  # preprocessed again
    (info.folder / "b.pt").write_bytes(b"cut short")  # an unreadable case file is encoded again, never read
    rebuilt, dataset = _build(first, tmp_path, cases)
    assert (rebuilt.folder, rebuilt.built) == (info.folder, 2)
    assert _same(embedding_cache.open_case(info.folder, "a")["features"], _encoded(first, dataset, "a"))
    assert not _same(embedding_cache.open_case(info.folder, "a")["features"], entry["features"])
