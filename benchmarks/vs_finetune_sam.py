"""autosam's SAM training step against the reference implementation's, same set-up, size and batch, in one process.

The reference is mazurowski-lab/finetune-SAM, run from a checkout whose path you give (this script never
downloads it). Its model is built from its own classes (``models/sam/modeling``) at the benchmark's image
size (its registry builders fix ViTs at 1024 px; only the size argument differs), with its own LoRA
(``models/sam_LoRa.LoRA_Sam``, rank 4, every encoder block) and its training step as in
``SingleGPU_train_finetune_noprompt.py``: encoder (with gradients when it trains, else under no_grad), prompt
encoder without prompts, mask decoder with ``multimask_output=True``, MONAI Dice + cross-entropy at the
decoder's S/4 resolution, AdamW. autosam's step is nnU-Net's: the network's forward, nnU-Net's Dice + CE at the
patch resolution, backward, gradient clipping at 12, AdamW. Random weights (step time does not depend on them).

Variants, each warmed up by one step, then timed interleaved over ``--rounds`` rounds, every other round in
reverse order. Printed: the median over rounds of each round's median of ``--steps`` steps, the fastest round,
``reference/variant`` = the median over rounds of the round's reference time over the variant's (the pair
closest in time, robust to a load that drifts on a shared machine) and the ratio of the fastest rounds:
  reference          finetune-SAM's step
  autosam-explicit   autosam with segment-anything's own block and attention classes
  autosam            autosam as it trains (autosam/sam/attention.py: windowed blocks project only their real
                     tokens, contiguous tokens, SDPA or explicit products; one decoder call per batch)
  autosam-cache      decoder-only set-ups: the step on cached image embeddings (trainers/cached.py)
and, with ``--bf16``, autosam under bf16 autocast with its frozen linear and convolution weights stored in
bf16, as the trainer runs bf16 (for CPUs with native bf16: avx512_bf16 / amx).

    python benchmarks/vs_finetune_sam.py /path/to/finetune-SAM
    python benchmarks/vs_finetune_sam.py /path/to/finetune-SAM --setups vit_b_encdec_lora --image-size 256 --batch 2
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
from torch import nn

from autosam.sam.attention import use_fused_attention
from autosam.sam.frozen import store_frozen_weights
from autosam.sam.memory import nnunet_loss
from autosam.sam.model import build_network
from autosam.sam.registry import get_backbone
from autosam.sam.setups import Setup

NUM_CLASSES = 2  # background + one class, the reference's default num_cls
LORA_RANK = 4  # the reference hard-codes rank 4


def reference_args(device: torch.device, setup: Setup) -> SimpleNamespace:
    """The fields of the reference's cfg.py its model code reads, for a single-device 2D no-prompt run."""
    lora = setup.method == "lora"
    return SimpleNamespace(
        devices=[device, device],
        if_split_encoder_gpus=False,
        gpu_fractions=[0.5, 0.5],
        thd=False,
        chunk=96,
        depth=0,
        encoder_depth_layer=[],
        if_encoder_adapter=False,
        encoder_adapter_depths=[],
        if_mask_decoder_adapter=False,
        decoder_adapt_depth=2,
        if_encoder_lora_layer=lora and setup.trains_encoder,
        encoder_lora_layer=[],
        if_decoder_lora_layer=lora,
        image_size=0,
    )


def reference_model(checkout: Path, setup: Setup, size: int, device: torch.device) -> tuple[nn.Module, SimpleNamespace]:
    """The reference's SAM at ``size`` from its own classes, its set-up applied as its training script does."""
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    # models/sam_LoRa.py imports icecream's debugging print and never calls it: stand in for it if absent
    if "icecream" not in sys.modules:
        icecream = importlib.util.find_spec("icecream") and __import__("icecream") or ModuleType("icecream", "absent")
        sys.modules["icecream"] = icecream
    sys.modules["icecream"].__dict__.setdefault("ic", print)
    from models.sam.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    from models.sam_LoRa import LoRA_Sam

    args = reference_args(device, setup)
    args.image_size = size
    enc = get_backbone(setup.backbone).encoder
    grid = size // 16
    sam = Sam(
        args,
        image_encoder=ImageEncoderViT(
            args=args,
            depth=enc.depth,
            embed_dim=enc.embed_dim,
            img_size=size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=enc.num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(enc.global_attn_indexes),
            window_size=enc.window_size,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=NUM_CLASSES,
            transformer=TwoWayTransformer(args=args, depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    if setup.method == "lora":
        sam = LoRA_Sam(args, sam, r=LORA_RANK).sam
    elif not setup.trains_encoder:  # vanilla without encoder update: only the image encoder is frozen
        sam.image_encoder.requires_grad_(False)
    return sam.to(device).train(), args


def reference_step(checkout: Path, setup: Setup, size: int, batch: int, device: torch.device):
    """One call = one of the reference's training iterations on a batch held in memory."""
    import monai

    sam, _ = reference_model(checkout, setup, size, device)
    optimizer = torch.optim.AdamW(sam.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.1)
    dice = monai.losses.DiceLoss(sigmoid=True, squared_pred=True, to_onehot_y=True, reduction="mean")
    ce = nn.CrossEntropyLoss()
    imgs = torch.randn(batch, 3, size, size, device=device)
    msks = torch.randint(0, NUM_CLASSES, (batch, 1, size // 4, size // 4), device=device)

    def step() -> None:
        if setup.trains_encoder:
            emb = sam.image_encoder(imgs)
        else:
            with torch.no_grad():
                emb = sam.image_encoder(imgs)
        sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
        pred, _ = sam.mask_decoder(
            image_embeddings=emb,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        loss = dice(pred, msks.float()) + ce(pred, msks.squeeze(1).long())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def autosam_step(
    setup: Setup,
    size: int,
    batch: int,
    device: torch.device,
    fused: bool = True,
    cache: bool = False,
    dtype: torch.dtype | None = None,
):
    """One call = nnU-Net's training step of autosam's network (or, ``cache``, its step on cached embeddings)."""
    torch.manual_seed(0)
    network = build_network(setup, size, NUM_CLASSES, 1).to(device).train()
    use_fused_attention(network, fused)
    network.compute_dtype = dtype
    if dtype == torch.bfloat16:  # as the trainer does under bf16 autocast
        store_frozen_weights(network, dtype)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")
    loss = nnunet_loss()
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch, 1, size, size), device=device).float()
    if cache:
        with torch.no_grad():
            embeddings = network.encode(x)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with network._autocast(device):
            logits = network.decode(embeddings, (size, size)) if cache else network(x)
        value = loss(logits, y)
        value.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 12)
        optimizer.step()

    return step


def _median_s(step, steps: int, device: torch.device) -> float:
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="a checkout of mazurowski-lab/finetune-SAM")
    parser.add_argument("--setups", nargs="+", default=["vit_b_encdec_lora", "vit_b_dec_lora"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant and round (median)")
    parser.add_argument("--bf16", action="store_true", help="also time autosam under bf16 autocast")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not (args.reference / "models" / "sam_LoRa.py").is_file():
        raise SystemExit(f"{args.reference}: not a finetune-SAM checkout (no models/sam_LoRa.py); give its path")
    device = torch.device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, {args.image_size} px, batch {args.batch}, "
        f"{args.rounds} rounds x {args.steps} steps, interleaved",
        flush=True,
    )
    print(
        f"{'set-up':22} {'variant':18} {'ms/step':>9} {'min ms':>8} {'reference/variant':>16} {'ratio of mins':>14}",
        flush=True,
    )
    for name in args.setups:
        setup = Setup.parse(name, lora_rank=LORA_RANK, lora_alpha=float(LORA_RANK))
        if get_backbone(setup.backbone).is_tiny_vit or setup.method == "adapter":
            print(
                f"{name:22} skipped: the reference's TinyViT keeps a 64 x 64 grid at every size and its adapters "
                "differ in place and number: not the same set-up",
                flush=True,
            )
            continue
        variants = {
            "reference": reference_step(args.reference, setup, args.image_size, args.batch, device),
            "autosam-explicit": autosam_step(setup, args.image_size, args.batch, device, fused=False),
            "autosam": autosam_step(setup, args.image_size, args.batch, device),
        }
        if not setup.trains_encoder:
            variants["autosam-cache"] = autosam_step(setup, args.image_size, args.batch, device, cache=True)
        if args.bf16:
            variants["autosam-bf16"] = autosam_step(setup, args.image_size, args.batch, device, dtype=torch.bfloat16)
        for step in variants.values():  # warm-up, once per variant
            step()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for round_ in range(args.rounds):  # every other round in reverse order: a drifting load favours no one
            for key in list(variants)[:: -1 if round_ % 2 else 1]:
                times[key].append(_median_s(variants[key], args.steps, device))
        for key in variants:
            ratios = [r / t for r, t in zip(times["reference"], times[key])]
            print(
                f"{name:22} {key:18} {1000 * statistics.median(times[key]):>9.0f} {1000 * min(times[key]):>8.0f} "
                f"{statistics.median(ratios):>15.2f}x {min(times['reference']) / min(times[key]):>13.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
