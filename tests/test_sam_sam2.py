"""SAM 2.1 (Hiera) as a backbone family: a small configuration of the sam2 package's own classes, checkpoints in
the official layout written by the official builder, export read back by the official builder and predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from autosam_test_backbones import TEST_HIERA_OVERRIDES
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from autosam.errors import CheckpointError
from autosam.inference.export import export_network
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.setups import Setup, all_setups
from autosam.sam.weights.base import BaseCheckpoint, BaseLoader

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
SIZE = 64


def official_model(image_size: int = SIZE, checkpoint: Path | None = None):
    """SAM 2.1 as the sam2 package builds it, test-sized by the same overrides as the ``test_hiera`` backbone."""
    overrides = [*TEST_HIERA_OVERRIDES, f"++model.image_size={image_size}"]
    return build_sam2(CONFIG, str(checkpoint) if checkpoint else None, device="cpu", hydra_overrides_extra=overrides,
                      apply_postprocessing=False)


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint as SAM 2.1 releases them: ``{"model": state dict}`` of the official ``SAM2Base``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_test.pt"
    torch.save({"model": official_model().state_dict()}, path)
    return path


def _network(name: str, checkpoint: Path, num_classes: int = 4, channels: int = 1) -> SamSegmenter:
    network = build_network(Setup.parse(name), SIZE, num_classes, channels, base=BaseCheckpoint.of_file(checkpoint))
    network.ensure_base_loaded()
    return network


def _count(module: torch.nn.Module, *prefixes: str) -> int:
    """Parameters of ``module`` whose names start with one of ``prefixes`` (all of them without any)."""
    return sum(p.numel() for n, p in module.named_parameters() if not prefixes or n.startswith(prefixes))


def test_parameter_totals_are_the_official_models(official_checkpoint: Path) -> None:
    """Every parameter of the official model is there (video modules included), and the trainable ones are
    exactly the set-up's: the decoder without its unused heads; with the encoder, Hiera, neck, the decoder's
    projections of the fine levels and the no-memory embedding; LoRA adds r x (in + out) per wrapped projection."""
    official = official_model()
    decoder = official.sam_mask_decoder
    # the object-score token takes part in every decoder call and trains; its head, like the IoU head, is unused
    used_decoder = _count(decoder) - _count(decoder, "iou_prediction_head.", "pred_obj_score_head.", "conv_s0.", "conv_s1.")
    image_side = _count(official, "image_encoder.", "sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.",
                        "no_mem_embed")
    expected = {"test_hiera_dec_vanilla": used_decoder, "test_hiera_encdec_vanilla": used_decoder + image_side}
    for name, trainable in expected.items():
        network = _network(name, official_checkpoint)
        assert sum(p.numel() for p in network.parameters()) == sum(p.numel() for p in official.parameters())
        assert sum(p.numel() for p in network.parameters() if p.requires_grad) == trainable

    lora = _network("test_hiera_encdec_lora", official_checkpoint)
    wrapped = [m for n, m in lora.named_modules() if hasattr(m, "lora_A")]
    lora_values = sum(4 * (m.in_features + m.out_features) for m in wrapped)
    head = sum(p.numel() for n, p in decoder.named_parameters()
               if n.startswith(("iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps")))
    # every Hiera block's qkv and two MLP layers; q/k/v of the decoder's 7 attentions (3 per layer + final)
    assert len(wrapped) == 5 * 3 + 7 * 3
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == lora_values + head


@pytest.mark.parametrize("setup", all_setups(("test_hiera",)), ids=lambda s: s.name)
def test_every_setup_trains_its_tensors_and_leaves_the_rest(setup: Setup, official_checkpoint: Path) -> None:
    network = _network(setup.name, official_checkpoint, num_classes=3).train()
    frozen = {n: p.detach().clone() for n, p in network.named_parameters() if not p.requires_grad}
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(trainable, lr=0.1)
    logits = network(torch.randn(2, 1, 48, 56))
    assert logits.shape == (2, 3, 48, 56)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 48, 56))).backward()
    assert all(p.grad is not None for p in trainable)  # (LoRA's A and an adapter's down start with zero gradients)
    assert all(p.grad is None for p in network.parameters() if not p.requires_grad)
    image_side = [p.requires_grad for n, p in network.sam.named_parameters()
                  if n.startswith(("sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.", "no_mem_embed"))]
    assert set(image_side) == {setup.trains_whole_encoder}  # SAM 2.1's image side beyond Hiera
    optimiser.step()
    assert all(torch.equal(p, frozen[n]) for n, p in network.named_parameters() if n in frozen)
    image_side_trains = any(p.requires_grad for n, p in network.named_parameters() if n.startswith("sam.image_encoder."))
    assert image_side_trains == setup.trains_encoder


def test_the_official_checkpoint_loads_unchanged(official_checkpoint: Path) -> None:
    """Every tensor as the file holds it, and the same logits as SAM 2.1's own predictor on the same file."""
    network = _network("test_hiera_dec_vanilla", official_checkpoint, channels=3).eval()
    state = torch.load(official_checkpoint, weights_only=True)["model"]
    own = network.sam.state_dict()
    assert own.keys() == state.keys() and all(torch.equal(own[k], v) for k, v in state.items())
    low_res, image = _official_low_res_logits(official_model(checkpoint=official_checkpoint))
    assert torch.allclose(_autosam_logits(network, image), low_res, atol=1e-4)


@pytest.mark.parametrize("change, phrase", [("key", "missing keys"), ("shape", "other shapes")])
def test_a_changed_key_or_shape_is_refused_in_one_line(change: str, phrase: str, official_checkpoint: Path,
                                                       tmp_path: Path) -> None:
    state = torch.load(official_checkpoint, weights_only=True)["model"]
    key = "image_encoder.trunk.blocks.1.attn.qkv.weight"
    if change == "key":
        state["image_encoder.trunk.blocks.1.attn.qkv_renamed.weight"] = state.pop(key)
    else:
        state[key] = state[key][:, :-1]
    path = tmp_path / "changed.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=phrase) as error:
        _network("test_hiera_dec_vanilla", path)
    assert "\n" not in str(error.value) and str(path) in str(error.value) and "SAM 2.1" in str(error.value)


def test_a_sam_checkpoint_is_named_as_such(base_checkpoint) -> None:
    path, _ = base_checkpoint("test_vit")
    with pytest.raises(CheckpointError, match="holds test_vit .* not a test_hiera model"):
        BaseLoader(BaseCheckpoint.of_file(path), "test_hiera")(build_network(Setup.parse("test_hiera_dec_lora"), SIZE, 4, 1))


def _official_low_res_logits(official) -> tuple[torch.Tensor, np.ndarray]:
    """SAM2ImagePredictor on an image in [0, 1] without prompts: its three multimask logits at S/4."""
    image = np.random.default_rng(1).random((SIZE, SIZE, 3)).astype(np.float32)
    predictor = SAM2ImagePredictor(official)
    predictor._bb_feat_sizes = [(SIZE // s, SIZE // s) for s in (4, 8, 16)]  # it assumes 1024 px; fine-tuners set these
    predictor.set_image(image)
    _, _, low_res = predictor.predict(multimask_output=True, return_logits=True, normalize_coords=False)
    return torch.as_tensor(low_res), image


def _autosam_logits(network: SamSegmenter, image: np.ndarray) -> torch.Tensor:
    """The network's tokens 1..3 at S/4 on the image normalised as the predictor normalises it."""
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(image) - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        return network.decode(network.encode(x))[0, 1:]


def test_export_is_loaded_by_the_official_builder_with_the_same_logits(official_checkpoint: Path, tmp_path: Path) -> None:
    network = _network("test_hiera_encdec_lora", official_checkpoint, channels=3).eval()
    with torch.no_grad():  # a fine-tuned model: LoRA and decoder head away from their start
        for parameter in network.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    exported = export_network(network, tmp_path / "busi_sam2.pt")
    assert "loads unchanged with sam2.build_sam.build_sam2(" in exported.loading

    low_res, image = _official_low_res_logits(official_model(checkpoint=exported.checkpoint))
    ours = _autosam_logits(network, image)
    assert not torch.allclose(ours, _autosam_logits(_network("test_hiera_encdec_lora", official_checkpoint, channels=3)
                                                    .eval(), image), atol=1e-3)  # the fine-tuning is in the export
    assert torch.allclose(ours, low_res, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["sam2_t", "sam2_s", "sam2_bplus", "sam2_l"])
def test_every_official_size_has_the_released_layout(backbone: str, tmp_path: Path) -> None:
    """The full-size models of SAM 2.1's four configuration files, as its builder makes them (what its released
    checkpoints hold), pass autosam's key-and-shape check and load into autosam's model at another size."""
    from autosam.sam.registry import build_sam, get_backbone
    from autosam.sam.weights.base import check_compatible

    config = get_backbone(backbone).encoder.config
    released = build_sam2(config, None, device="cpu", apply_postprocessing=False).state_dict()
    model = build_sam(backbone, 512, 3)
    check_compatible(released, model, backbone, tmp_path / "released.pt")
    own = model.state_dict()
    assert {k for k in released if not k.startswith("sam_mask_decoder.")} == {k for k in own
                                                                              if not k.startswith("sam_mask_decoder.")}


@pytest.mark.parametrize("box, points", [((6.0, 8.0, 40.0, 50.0), None), (None, ((20.0, 30.0), (50.0, 10.0))),
                                         ((6.0, 8.0, 40.0, 50.0), ((20.0, 30.0),))], ids=["box", "points", "both"])
def test_prompts_are_embedded_as_the_official_predictor_embeds_them(box, points, official_checkpoint: Path) -> None:
    """A box enters SAM 2.1's prompt encoder as two corner points (labels 2, 3) ahead of the clicks, as
    SAM2ImagePredictor passes it: the same multimask logits as the predictor's for the same prompt."""
    network = _network("test_hiera_dec_vanilla", official_checkpoint, channels=3).eval()
    predictor = SAM2ImagePredictor(official_model(checkpoint=official_checkpoint))
    predictor._bb_feat_sizes = [(SIZE // s, SIZE // s) for s in (4, 8, 16)]
    image = np.random.default_rng(2).random((SIZE, SIZE, 3)).astype(np.float32)
    predictor.set_image(image)
    labels = [1] * len(points) if points else None
    _, _, expected = predictor.predict(point_coords=np.array(points) if points else None,
                                       point_labels=np.array(labels) if points else None,
                                       box=np.array(box) if box else None, multimask_output=True, return_logits=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = ((torch.from_numpy(image) - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        features = network.encode(x)
        sparse, dense = network.sam.embed_prompts(
            (torch.tensor([points]), torch.tensor([labels])) if points else None,
            torch.tensor([box]) if box else None)
        ours = network.sam.decode_features(features, sparse, dense)[0, 1:]
    assert torch.allclose(ours, torch.as_tensor(expected), atol=1e-4)
