"""Base weights into a network: a checkpoint file read safely, checked key by key and shape by shape against the
backbone, fitted to the image size and class count, and the identity of the base a fold was trained from."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from autosam.errors import CheckpointError
from autosam.sam.registry import BACKBONES, PATCH_SIZE, Backbone, HieraConfig, ViTConfig, get_backbone
from autosam.sam.weights.catalogue import (
    CATALOGUE,
    catalogue_entry,
    catalogue_entry_for,
    find_checkpoint,
    how_to_get,
    recorded_sha256,
    verify_file,
)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line error."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as plain weights ({first_line[:120]}); the file is truncated, "
            "corrupt or not a PyTorch state dict, download it again"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # some releases wrap the state dict
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path}: does not hold a state dict of tensors; pass a SAM weights file")
    return obj


def describe_encoder(state: dict[str, torch.Tensor]) -> str:
    """Human name of the encoder a state dict holds, e.g. 'vit_b (embed dim 768, 12 blocks)'."""
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is not None:
        blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
        dim = patch.shape[0]
        for b in get_all_vit_backbones():
            if b.encoder.embed_dim == dim and b.encoder.depth == len(blocks):
                return f"{b.name} (embed dim {dim}, {len(blocks)} blocks)"
        return f"a ViT (embed dim {dim}, {len(blocks)} blocks)"
    if any(k.startswith("image_encoder.layers.") for k in state):
        return "a TinyViT (vit_t)"
    hiera = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if hiera is not None:
        blocks = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
        dim = hiera.shape[0]
        for b in BACKBONES.values():
            if isinstance(b.encoder, HieraConfig) and (b.encoder.embed_dim, b.encoder.blocks) == (dim, blocks):
                return f"{b.name} (SAM 2.1 Hiera, embed dim {dim}, {blocks} blocks)"
        return f"a SAM 2 Hiera (embed dim {dim}, {blocks} blocks)"
    return "no SAM image encoder"


def get_all_vit_backbones() -> list[Backbone]:
    return [b for b in BACKBONES.values() if isinstance(b.encoder, ViTConfig)]


def _is_size_dependent(key: str, backbone: Backbone) -> bool:
    """pos_embed and the global blocks' rel-pos tables change with the image size (resized on load)."""
    if key == "image_encoder.pos_embed":
        return True
    if isinstance(backbone.encoder, ViTConfig) and key.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")):
        return int(key.split(".")[2]) in backbone.encoder.global_attn_indexes
    return False


def _is_class_dependent(key: str) -> bool:
    """Decoder head tensors whose first dimension is the number of mask tokens (SAM's ``mask_decoder.*``, SAM
    2.1's ``sam_mask_decoder.*``)."""
    key = key.removeprefix("sam_")
    return key in ("mask_decoder.mask_tokens.weight",) or key.startswith(
        ("mask_decoder.iou_prediction_head.layers.2.", "mask_decoder.output_hypernetworks_mlps.")
    )


def _hypernetwork(key: str) -> bool:
    """One class token's MLP: the model has as many as it has classes, a checkpoint as many as it was made with."""
    return key.removeprefix("sam_").startswith("mask_decoder.output_hypernetworks_mlps.")


def official_view(model: nn.Module) -> dict[str, str]:
    """Official key -> the model's own key, for a SAM that may already carry LoRA layers or adapters."""
    view = {}
    for key in model.state_dict():
        parts = key.split(".")
        if not any(p.startswith(("lora_", "adapter")) for p in parts):
            view[".".join(p for p in parts if p != "base_layer")] = key
    return view


def check_compatible(state: dict[str, torch.Tensor], model: nn.Module, backbone: str, path: Path) -> None:
    """Refuse a state dict that is not a checkpoint of this backbone (keys and shapes)."""
    spec = get_backbone(backbone)
    own = model.state_dict()
    expected = {official: own[key] for official, key in official_view(model).items()}
    missing = [k for k in expected if k not in state and not _hypernetwork(k)]
    unexpected = [k for k in state if k not in expected and not _is_class_dependent(k)]
    wrong = [
        k
        for k in state
        if k in expected
        and state[k].shape != expected[k].shape
        and not _is_size_dependent(k, spec)
        and not _is_class_dependent(k)
    ]
    if missing or unexpected or wrong:
        held = describe_encoder(state)
        if not held.startswith(spec.name):
            wanted = spec.checkpoint and CATALOGUE[spec.checkpoint].filename
            raise CheckpointError(
                f"checkpoint {path} holds {held}, not a {spec.name} model: choose the backbone that matches "
                f"the file, or use a {spec.name} checkpoint" + (f" ({wanted})" if wanted else "")
            )
        detail = (
            f"{len(missing)} missing keys (e.g. {missing[0]})" if missing
            else f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected
            else f"{len(wrong)} keys with other shapes (e.g. {wrong[0]})"
        )
        layout = ("an official SAM 2.1 checkpoint (image_encoder.trunk.*, sam_mask_decoder.*, memory_attention.* "
                  "keys, under 'model')" if spec.family == "sam2" else
                  "an official SAM-layout checkpoint (image_encoder.*, prompt_encoder.*, mask_decoder.* keys)")
        raise CheckpointError(f"checkpoint {path}: {detail} for a {spec.name} model; pass {layout}")


def _resize_pos_embed(pos: torch.Tensor, grid: int) -> torch.Tensor:
    # (1, H, W, C) -> (1, grid, grid, C)
    resized = F.interpolate(pos.permute(0, 3, 1, 2).float(), size=(grid, grid), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).to(pos.dtype)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    # (L, head_dim) -> (length, head_dim), linear along L as segment-anything's get_rel_pos does
    resized = F.interpolate(table.float().t()[None], size=length, mode="linear", align_corners=False)
    return resized[0].t().to(table.dtype)


def _fit_to_model(state: dict[str, torch.Tensor], model: nn.Module, backbone: Backbone) -> dict[str, torch.Tensor]:
    """Resize size-dependent tensors, copy as many class heads as both sides have; keys become the model's."""
    own, view = model.state_dict(), official_view(model)
    target = {official: own[key] for official, key in view.items()}
    grid = model.input_size // PATCH_SIZE
    fitted = {}
    for key, value in state.items():
        if key not in target:
            continue  # hypernetwork MLPs of classes the model does not have
        want = target[key]
        if value.shape == want.shape:
            fitted[key] = value
        elif key == "image_encoder.pos_embed":
            fitted[key] = _resize_pos_embed(value, grid)
        elif _is_size_dependent(key, backbone):
            fitted[key] = _resize_rel_pos(value, want.shape[0])
        else:  # class-dependent first dimension: keep the pretrained rows, new classes keep their random init
            rows = min(value.shape[0], want.shape[0])
            merged = want.clone()
            merged[:rows] = value[:rows]
            fitted[key] = merged
    return {view[key]: value for key, value in fitted.items()}


@dataclass(frozen=True)
class BaseIdentity:
    """What a fine-tuned model was started from; recorded in plans and small checkpoints."""

    name: str  # catalogue name, file name, or "from-scratch"
    sha256: str | None

    def to_dict(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}


FROM_SCRATCH = BaseIdentity("from-scratch", None)


def check_base(trained_on: str | None, trained_sha256: str | None, base: BaseIdentity, source: str) -> None:
    """Refuse fine-tuned tensors trained on other base weights than ``base`` (when both hashes are known)."""
    if trained_sha256 and base.sha256 and trained_sha256 != base.sha256:
        raise CheckpointError(
            f"{source}: fine-tuned from {trained_on or 'base weights'} (sha256 {trained_sha256[:12]}...), but the "
            f"base weights given are {base.name} (sha256 {base.sha256[:12]}...); put the original base file back, "
            "or plan again with this one and retrain")


def load_base_checkpoint(
    model: nn.Module, backbone: str, path: Path, expected_sha256: str | None = None, verify: bool = True
) -> BaseIdentity:
    """Verify ``path`` and load it into a SAM of ``backbone`` (plain, or with a set-up already applied)."""
    path = Path(path)
    entry = catalogue_entry_for(path)
    if not path.is_file():
        known = entry is not None and entry.official
        raise CheckpointError(f"checkpoint {path}: no such file" + (f"; {how_to_get(entry, path.parent)}" if known
                                                                     else ""))
    size = entry.size if entry else None
    sha = expected_sha256 or (entry.sha256 if entry else None) or recorded_sha256(path)
    actual_sha = verify_file(path, size, sha, user=bool(entry and not entry.official)) if verify else None
    state = read_state_dict(path)
    check_compatible(state, model, backbone, path)
    model.load_state_dict(_fit_to_model(state, model, get_backbone(backbone)), strict=False)
    return BaseIdentity(entry.name if entry else path.name, actual_sha)


@dataclass
class BaseCheckpoint:
    name: str  # catalogue name or file name
    file: str  # file name looked up in --checkpoint-dir / $AUTOSAM_CHECKPOINT_DIR
    path: str | None  # absolute path when the planner found the file
    sha256: str | None  # published hash, when there is one

    @classmethod
    def of_file(cls, path: str | Path) -> "BaseCheckpoint":
        """A base file outside the catalogue, by path (its sha256 is computed when it loads)."""
        return cls(Path(path).name, Path(path).name, str(path), None)

    def locate(self) -> Path:
        """The file: where the planner found it, else by name in --checkpoint-dir / $AUTOSAM_CHECKPOINT_DIR."""
        if self.path and Path(self.path).is_file():
            return Path(self.path)
        known = self.name != self.file and catalogue_entry(self.name) is not None  # official or user catalogue
        return find_checkpoint(self.name if known else (self.path or self.file))


@dataclass(frozen=True)
class BaseLoader:
    """Loads a plan's base weights into a network on first need (``SamSegmenter.base_loader``); a plain
    object rather than a closure, so the network can be copied and pickled."""

    checkpoint: BaseCheckpoint
    backbone: str

    def __call__(self, network):
        return load_base_checkpoint(network.sam, self.backbone, self.checkpoint.locate(),
                                    expected_sha256=self.checkpoint.sha256)


