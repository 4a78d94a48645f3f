"""A fine-tuned fold out of autosam: a stock SAM checkpoint, and for LoRA the adapter in peft's own format.

The checkpoint is in the official key layout with LoRA folded into the base weights by peft's
``merge_and_unload``: for SAM a plain state dict (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``)
that segment-anything's own classes load, for SAM 2.1 ``{"model": state dict}`` with every key of ``SAM2Base``
(the video modules as the base checkpoint had them) that the sam2 package's ``build_sam2`` loads with its
configuration file, with nothing of autosam installed. For a LoRA set-up the folder next to it holds what
``PeftModel.save_pretrained`` writes (``adapter_config.json``, ``adapter_model.safetensors``): the LoRA
weights plus the retrained decoder head as peft ``modules_to_save``, to apply on the base checkpoint with
``PeftModel.from_pretrained``. Adapters are extra modules that stock SAM cannot hold, so adapter set-ups
(and models with more than 3 input channels, which carry an input projection) are refused.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from autosam.errors import AutosamError, CheckpointError
from autosam.files import atomic_torch_save, atomic_write_json
from autosam.inference.trained_models import SamFold, resolve_model, trained_model_folder
from autosam.paths import FINAL_CHECKPOINT, Dataset
from autosam.sam.lora import lora_targets
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam, get_backbone
from autosam.sam.setups import DECODER_HEAD
from autosam.sam.weights.base import official_view

STOCK_IMAGE_SIZE, STOCK_MASK_TOKENS = 1024, 4  # what the official builders make (SAM and SAM 2.1 alike)
REGISTRIES = {"vit_b": "segment_anything", "vit_l": "segment_anything", "vit_h": "segment_anything",
              "vit_t": "mobile_sam"}


@dataclass
class Exported:
    checkpoint: Path
    peft_folder: Path | None
    loading: str  # how to load the checkpoint, in one sentence


def _refuse_unexportable(network: SamSegmenter, source: str) -> None:
    if network.setup.method == "adapter":
        raise CheckpointError(f"{source}: set-up {network.setup.name} uses adapters, extra modules stock "
                              "segment-anything cannot hold; export works for vanilla and LoRA set-ups")
    if network.channel_mixer is not None:
        raise CheckpointError(f"{source}: a {network.input_channels}-channel model carries an input projection stock "
                              "segment-anything cannot hold; export works for 1- and 3-channel models")


def _head_modules(network: SamSegmenter) -> list[str]:
    """The decoder modules that train besides LoRA, by name in a stock SAM (``sam_mask_decoder`` in SAM 2.1)."""
    sam = network.sam
    decoder = next(name for name, module in sam.named_children() if module is sam.mask_decoder)
    names = [f"{decoder}.{part}" for part in DECODER_HEAD if part != "output_hypernetworks_mlps"]
    return names + [f"{decoder}.output_hypernetworks_mlps.{i}" for i in range(len(sam.mask_decoder.output_hypernetworks_mlps))]


def _stock_copy(network: SamSegmenter):
    """segment-anything's Sam at the network's size and class count, holding its weights (LoRA not merged)."""
    stock = build_sam(network.setup.backbone, network.image_size, network.num_classes)
    own = network.sam.state_dict()
    stock.load_state_dict({official: own[key] for official, key in official_view(network.sam).items()})
    return stock


def _lora_as_peft(network: SamSegmenter):
    """The network's LoRA and decoder head as a peft model around a stock SAM."""
    setup = network.setup
    config = LoraConfig(r=setup.lora_rank, lora_alpha=setup.lora_alpha, lora_dropout=0.0, bias="none",
                        target_modules=lora_targets(setup.trains_encoder), modules_to_save=_head_modules(network))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that a custom model has no config
        peft_model = get_peft_model(_stock_copy(network), config)
    own = network.state_dict()
    trained = {}
    for name, _ in peft_model.named_parameters():
        if "lora_" in name:  # base_model.model.<official>.lora_A.default.weight -> sam.<official>...
            trained[name] = own["sam." + name.removeprefix("base_model.model.")]
    missing = [n for n, p in peft_model.named_parameters() if p.requires_grad and n not in trained
               and ".modules_to_save." not in n]
    counts = (sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
              sum(p.numel() for p in network.parameters() if p.requires_grad))
    if missing or counts[0] != counts[1]:
        raise AutosamError(f"set-up {setup.name}: the peft model holds {counts[0]:,} trainable values, the fine-tuned "
                           f"network {counts[1]:,}; export cannot represent this set-up")
    peft_model.load_state_dict(trained, strict=False)
    return peft_model


def _sam2_loading(backbone: str, image_size: int, num_classes: int, checkpoint: Path) -> str:
    config = get_backbone(backbone).encoder
    overrides = [*config.overrides] + ([f"++model.image_size={image_size}"] if image_size != STOCK_IMAGE_SIZE else [])
    call = (f"sam2.build_sam.build_sam2('{config.config}', '{checkpoint}', device='cpu'"
            + (f", hydra_overrides_extra={overrides!r}" if overrides else "") + ")")
    if num_classes == STOCK_MASK_TOKENS:
        return f"loads unchanged with {call}"
    if num_classes < STOCK_MASK_TOKENS:
        return (f"loads unchanged with {call}; its mask decoder's tokens 0-{num_classes - 1} are the classes "
                f"(background first), tokens {num_classes}-{STOCK_MASK_TOKENS - 1} untrained placeholders that "
                "SAM2Base's fixed 4 tokens need")
    return (f"holds {num_classes} class tokens where SAM2Base builds {STOCK_MASK_TOKENS} (its mask decoder's "
            f"num_multimask_outputs=3 is fixed): loads into SAM 2.1's own classes with the decoder built with "
            f"num_multimask_outputs={num_classes - 1}, as autosam.sam.registry.build_sam('{backbone}', {image_size}, "
            f"{num_classes}) builds it; the rest is {call}'s model")


def _with_stock_tokens(state: dict, network: SamSegmenter) -> dict:
    """SAM 2.1 with fewer class tokens than SAM2Base's fixed 4: the missing tokens and their heads taken from a
    freshly built 4-token model, so SAM 2.1's own builder loads the file (the classes keep tokens 0..K-1)."""
    stock = build_sam(network.setup.backbone, network.image_size, STOCK_MASK_TOKENS).state_dict()
    padded = {}
    for key, value in stock.items():
        own = state.get(key)
        padded[key] = value if own is None else own if own.shape == value.shape else torch.cat([own, value[len(own):]])
    return padded


def stock_loading(backbone: str, image_size: int, num_classes: int, checkpoint: Path) -> str:
    """How to load an exported checkpoint with the stock libraries."""
    if get_backbone(backbone).family == "sam2":
        return _sam2_loading(backbone, image_size, num_classes, checkpoint)
    registry = REGISTRIES.get(backbone)
    if registry and image_size == STOCK_IMAGE_SIZE and num_classes == STOCK_MASK_TOKENS:
        return f"loads unchanged with {registry}.sam_model_registry['{backbone}'](checkpoint='{checkpoint}')"
    differs = []
    if image_size != STOCK_IMAGE_SIZE:
        differs.append(f"{image_size} px input (the registry builds {STOCK_IMAGE_SIZE}: image encoder "
                       f"img_size={image_size}, prompt encoder embedding {image_size // 16}x{image_size // 16})")
    if num_classes != STOCK_MASK_TOKENS:
        differs.append(f"{num_classes} class tokens (the registry builds {STOCK_MASK_TOKENS}: mask decoder "
                       f"num_multimask_outputs={num_classes - 1})")
    if not registry:
        differs.append(f"backbone {backbone}, which no stock registry builds")
    tiny = (f"; MobileSAM's TinyViT reshapes its tokens to the 1024 px grid, so at {image_size} px the encoder is "
            "autosam.sam.tiny_vit.TinyViTAnySize (the same weights)"
            if get_backbone(backbone).is_tiny_vit and image_size != STOCK_IMAGE_SIZE else "")
    return ("loads into segment-anything's own classes built with " + "; ".join(differs) + tiny
            + f" (autosam.sam.registry.build_sam('{backbone}', {image_size}, {num_classes}) builds exactly that)")


def peft_folder_for(checkpoint: Path) -> Path:
    """Where peft's files go next to an exported checkpoint: ``busi_sam.pth`` -> ``busi_sam_peft/``."""
    return checkpoint.with_name(checkpoint.stem + "_peft")


def export_network(network: SamSegmenter, output: Path, source: str = "model") -> Exported:
    """Write ``network`` (fine-tuned, in eval mode) as a stock checkpoint, plus peft's files for LoRA."""
    _refuse_unexportable(network, source)
    output = Path(output)
    peft_model = _lora_as_peft(network) if network.setup.method == "lora" else None
    peft_folder = peft_folder_for(output) if peft_model else None
    if peft_model:  # written before merging, which folds the LoRA weights away
        peft_model.save_pretrained(str(peft_folder))
    state = peft_model.merge_and_unload().state_dict() if peft_model else _stock_copy(network).state_dict()
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    sam2 = get_backbone(network.setup.backbone).family == "sam2"
    if sam2 and network.num_classes < STOCK_MASK_TOKENS:
        state = _with_stock_tokens(state, network)
    try:
        atomic_torch_save({"model": state} if sam2 else state, output)
    except BaseException:
        if peft_folder:  # all or nothing: a retry must not find half an export in its way
            shutil.rmtree(peft_folder, ignore_errors=True)
        raise
    loading = stock_loading(network.setup.backbone, network.image_size, network.num_classes, output)
    return Exported(output, peft_folder, loading)


def _input_note(network: SamSegmenter) -> str:
    channels = "1 channel repeated to 3" if network.input_channels == 1 else "3 channels"
    scaling = (" min-max scaled to [0, 1] per image," if network.normalisation == "minmax" else "")
    return (f"the case preprocessed by nnU-Net's plans (its intensity normalisation, resampled to 'spacing'), "
            f"patches of 'patch_size' (sliding window, as nnU-Net predicts),{scaling} {channels}, resized bilinearly "
            f"to {network.image_size} x {network.image_size} where a patch differs, fed to image_encoder directly "
            "(not Sam.preprocess, whose pixel statistics the network never saw)")


def _decoding(network: SamSegmenter) -> str:
    steps = ("forward_image(x) -> backbone_fpn's last 3 levels, no_mem_embed added to the coarsest (SAM 2.1's image "
             "mode) -> sam_prompt_encoder(points=None, boxes=None, masks=None) -> sam_mask_decoder.predict_masks(..., "
             "repeat_image=False, high_res_features=[the two finer levels])[0]"
             if get_backbone(network.setup.backbone).family == "sam2" else
             "image_encoder(x) -> prompt_encoder(points=None, boxes=None, masks=None) -> mask_decoder.predict_masks(...)[0]")
    return (steps + ": one logit map per class token at a quarter of the input size, upsampled bilinearly; argmax "
            "over the tokens gives the label map")


def export(dataset: Dataset, fold: str, output: Path, setup: str | None = None,
           checkpoint: str = FINAL_CHECKPOINT) -> Exported:
    """``autosam export``: one trained SAM fold -> ``output`` (never overwriting a file)."""
    choice = resolve_model(dataset, setup)
    model = choice.models[0]
    if len(choice.models) > 1 or not model.is_sam:
        raise AutosamError(f"{choice.name} ({choice.why}): only one SAM model exports to a SAM checkpoint; "
                           "pick it with --setup")
    output = Path(output)
    peft_folder = peft_folder_for(output)
    for taken in (output, output.with_suffix(".json"), peft_folder):
        if taken.exists():
            raise AutosamError(f"{taken}: already exists; choose another -o (autosam never overwrites a file)")
    sam_fold = SamFold(trained_model_folder(dataset, model), model.trainer, model.configuration, str(fold), checkpoint)
    if not sam_fold.path.is_file():
        raise AutosamError(f"{sam_fold.path}: not found; train fold {fold} first ('autosam train -d {dataset.id} -f {fold}')")
    network, fold_checkpoint = sam_fold.network()
    exported = export_network(network, output, str(sam_fold.path))
    saved = fold_checkpoint["autosam"]
    trained_on = sam_fold.configuration_manager()
    dataset_json = json.loads((sam_fold.folder / "dataset.json").read_text())
    atomic_write_json({
        "exported_from": str(sam_fold.path),
        "model": model.name,
        "fold": str(fold),
        "setup": saved["setup"],
        "image_size": network.image_size,
        "class_tokens": network.num_classes,
        "labels": dataset_json.get("labels"),
        "input_channels": network.input_channels,
        "spacing": trained_on.spacing,
        "patch_size": trained_on.patch_size,
        "input": _input_note(network),
        "decoding": _decoding(network),
        "base": saved["base"],
        "peft_folder": str(exported.peft_folder) if exported.peft_folder else None,
        "loading": exported.loading,
    }, output.with_suffix(".json"))
    return exported
