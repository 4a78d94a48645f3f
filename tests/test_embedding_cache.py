"""Decoder-only training on cached image embeddings: the same gradients as the normal step, a stale cache is
never read, and the real trainer writes a normal fold checkpoint from it that nnU-Net's predictor loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from autosam.trainers import embedding_cache
from autosam.cli import main
from autosam.sam.model import build_network
from autosam.sam.setups import Setup
from autosam.plans import BaseCheckpoint
from autosam.trainers.cached import embedding_loss
from tests.conftest import BUSI, busi_or_demo, case_ids, copy_subset

SETUP = Setup.parse("test_tiny_vit_dec_lora")
GRADIENT_TOLERANCE = 1e-5  # relative to the largest gradient entry; float32 summation order differs


def _loss(batch_dice: bool):
    return DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)


def _decoder_gradients(network) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in network.named_parameters() if p.requires_grad and p.grad is not None}
    network.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("batch_dice", [True, False])
def test_cached_step_gives_the_gradients_of_the_normal_step(batch_dice: bool) -> None:
    network = build_network(SETUP, 64, 3, 1).train()
    x = torch.randn(3, 1, 72, 80)  # whole slices, not the SAM input size: both paths resize the same way
    y = torch.randint(0, 3, (3, 1, 72, 80))
    loss = _loss(batch_dice)

    loss(network(x), y).backward()  # the normal step: the whole network on the un-augmented slices
    normal = _decoder_gradients(network)
    with torch.no_grad():
        embeddings = network.encode(x)  # what the cache stores
    cached_logits = [network.decode(e[None], (72, 80)) for e in embeddings]
    embedding_loss(loss, cached_logits, list(y), batch_dice).backward()
    cached = _decoder_gradients(network)

    assert normal.keys() == cached.keys() and any("lora_" in n for n in normal)
    assert not any(n.startswith("sam.image_encoder.") for n in normal)
    scale = max(g.abs().max() for g in normal.values())
    worst = max((normal[n] - cached[n]).abs().max() for n in normal) / scale
    assert worst <= GRADIENT_TOLERANCE, f"largest relative gradient difference {worst:.2e}"


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


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 rounding: the cache encodes slices in batches of another size than the check."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def _build(network, tmp_path, cases, identifier: str = "nnUNetPlans_2d"):
    configuration = {"data_identifier": identifier, "spacing": [1.0, 1.0], "normalization_schemes": ["ZScore"],
                     "use_mask_for_norm": [False]}
    key = embedding_cache.cache_key(network, configuration, {"transpose_forward": [0, 1, 2]}, torch.device("cpu"))
    folder = embedding_cache.cache_folder(tmp_path / "preprocessed", key)
    dataset = nnUNetDatasetBlosc2(str(tmp_path / "preprocessed" / identifier), cases)
    return embedding_cache.build(network, dataset, cases, folder, torch.device("cpu"), key, 2), dataset


def _encoded(network, dataset, case: str) -> torch.Tensor:
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
    assert _same(entry["embeddings"], _encoded(first, dataset, "a"))
    assert entry["segmentation"].min() == 0 and entry["foreground"][1].unique().tolist() == [1]
    again, _ = _build(first, tmp_path, cases)
    assert (again.folder, again.built, again.reused) == (info.folder, 0, 2)

    second = _network(second_path)  # other base weights: another key, embeddings of these weights
    other, _ = _build(second, tmp_path, cases)
    assert other.folder != info.folder and other.built == 2
    assert _same(embedding_cache.open_case(other.folder, "a")["embeddings"], _encoded(second, dataset, "a"))
    assert not _same(embedding_cache.open_case(other.folder, "a")["embeddings"], entry["embeddings"])

    scratch = [build_network(SETUP, 64, 3, 1) for _ in range(2)]  # no checkpoint: keyed on the weights
    keys = [embedding_cache.cache_key(n, {"data_identifier": "d", "spacing": [1.0], "normalization_schemes": ["Z"],
                                          "use_mask_for_norm": [False]}, {}, torch.device("cpu")) for n in scratch]
    assert keys[0]["base_sha256"].startswith("weights:") and keys[0] != keys[1]

    larger, _ = _build(_network(first_path, 128), tmp_path, cases)  # another SAM input size
    assert larger.folder not in (info.folder, other.folder)
    assert embedding_cache.open_case(larger.folder, "a")["embeddings"].shape[-1] == 2 * entry["embeddings"].shape[-1]

    _write_cases(tmp_path / "preprocessed" / "nnUNetPlans_2d_sam_128px", {"a": (3, 40, 48), "b": (1, 56, 56)})
    renamed, _ = _build(first, tmp_path, cases, "nnUNetPlans_2d_sam_128px")  # another preprocessed data set
    assert renamed.folder != info.folder and renamed.built == 2

    _write_cases(tmp_path / "preprocessed" / "nnUNetPlans_2d", {"a": (3, 40, 48)}, seed=7)  # preprocessed again
    (info.folder / "b.pt").write_bytes(b"cut short")  # an unreadable case file is encoded again, never read
    rebuilt, dataset = _build(first, tmp_path, cases)
    assert (rebuilt.folder, rebuilt.built) == (info.folder, 2)
    assert _same(embedding_cache.open_case(info.folder, "a")["embeddings"], _encoded(first, dataset, "a"))
    assert not _same(embedding_cache.open_case(info.folder, "a")["embeddings"], entry["embeddings"])


def test_decoder_only_training_on_the_cache_writes_a_fold_the_predictor_loads(nnunet_folders, base_checkpoint) -> None:
    source = busi_or_demo()
    cases = case_ids(source)
    copy_subset(source, nnunet_folders["nnUNet_raw"], cases[:6], BUSI)
    checkpoint, _ = base_checkpoint("test_tiny_vit", 64, 4)
    assert main(["plan-and-preprocess", "-d", "501", "--setup", SETUP.name, "--image-size", "64", "--epochs", "1",
                 "--iterations", "2", "--checkpoint", str(checkpoint)]) == 0
    assert main(["train", "-d", "501", "-f", "0", "--device", "cpu"]) == 0

    preprocessed = nnunet_folders["nnUNet_preprocessed"] / BUSI
    plan = json.loads((preprocessed / "autosamPlans.json").read_text())["configurations"]["2d_sam"]["sam"]
    assert plan["embedding_cache"] and "GFLOPs" in plan["reasons"]["embedding_cache"]
    (folder,) = (preprocessed / embedding_cache.FOLDER).iterdir()
    train_cases = json.loads((preprocessed / "splits_final.json").read_text())[0]["train"]
    assert sorted(p.stem for p in folder.glob("*.pt")) == sorted(train_cases)
    assert json.loads((folder / "key.json").read_text())["base_sha256"] != ""

    fold = nnunet_folders["nnUNet_results"] / BUSI / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    assert "Embedding cache" in next(fold.glob("training_log_*.txt")).read_text()
    weights = torch.load(fold / "checkpoint_final.pth", weights_only=True)["network_weights"]
    assert any("lora_" in k for k in weights) and not any(k.startswith("sam.image_encoder.") for k in weights)
    assert (fold / "validation" / "summary.json").is_file()

    unseen = nnunet_folders["nnUNet_raw"].parent / "unseen"
    unseen.mkdir()
    image = source / "imagesTr" / f"{cases[-1]}_0000.png"
    (unseen / image.name).write_bytes(image.read_bytes())
    out = nnunet_folders["nnUNet_raw"].parent / "predicted"
    assert main(["predict", "-d", "501", "-i", str(unseen), "-o", str(out), "-f", "0", "--device", "cpu",
                 "--disable-tta"]) == 0
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{cases[-1]}.png")))
    assert prediction.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape[:2]


def test_the_planner_counts_no_encoder_per_iteration_for_cached_decoder_only_setups() -> None:
    from autosam.planners.hardware import Hardware
    from autosam.planners.choose import choose
    from autosam.planners.sam_planner import SamOptions
    from autosam.planners.step_cost import forward_gflops
    from tests.test_planner import _facts

    def planned(**options):
        choice = choose(_facts(), Hardware("cuda", 80, "a GPU with 80 GB"), 2, 1, (512, 512),
                        SamOptions(setup="vit_b_dec_lora", image_size=256, **options))
        return choice, choice.candidates[0].step_gflops

    cached, with_cache = planned()
    normal, without = planned(embedding_cache=False)
    encoder, decoder = forward_gflops("vit_b", cached.image_size, 2)
    assert with_cache == pytest.approx(2 * decoder, abs=1e-3)  # forward + input gradients, no encoder
    assert without == pytest.approx(encoder + 2 * decoder, abs=1e-3) and encoder > 50 * decoder
    assert "GFLOPs once per slice" in cached.reasons["embedding_cache"] and "embedding_cache" not in cached.overridden
    assert "--no-embedding-cache" in normal.reasons["embedding_cache"] and "embedding_cache" in normal.overridden
