"""Each CPU speed option of SAM's training step, on against off, measured side by side in one run.

For each set-up, autosam's network is built as the trainer runs it on this machine, and once more per option
with that option switched; the steps (nnU-Net's Dice + CE loss, backward, gradient clipping, AdamW; random
weights) are timed interleaved over --rounds rounds, every other round in reverse order. Printed per option:
the median step time off and on, and `off/on` = the median of the rounds' paired ratios (> 1: the option
pays), and whether autosam uses it there.
  bf16 autocast   bf16 autocast with the frozen linear/convolution weights stored in bf16, against fp32 (the
                  planner's precision rule: bf16 on CPUs with AVX512-BF16 or AMX)
  Conv+BN fold    TinyViT: its frozen convolution + batch-norm pairs run as one convolution (FoldedConv2dBN)
  channels-last   the image encoder's convolutions (weights and input) in channels-last memory layout: autosam
                  uses it for TinyViT (TinyViTAnySize), not for the ViTs, which have three convolutions
  bf16, cached    decoder-only set-ups: bf16 autocast on the step the trainer runs on cached image embeddings
                  (the decoder alone; trainers/cached.py), the embeddings encoded in the step's precision

    python benchmarks/cpu_step_options.py
    python benchmarks/cpu_step_options.py --setups vit_t_encdec_lora --image-size 512 --rounds 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from mobile_sam.modeling import tiny_vit_sam

from autosam.sam.attention import FoldedConv2dBN
from autosam.sam.frozen import store_frozen_weights
from autosam.sam.memory import nnunet_loss
from autosam.sam.model import build_network
from autosam.sam.network import bf16_hardware, cpu_bf16_native
from autosam.sam.registry import get_backbone
from autosam.sam.setups import Setup

NUM_CLASSES = 2
OPTIONS = ("bf16 autocast", "Conv+BN fold", "channels-last")


def autosam_options(setup: Setup) -> dict[str, bool]:
    """What autosam's trainer runs on this machine, per option (None: the option does not apply)."""
    tiny = get_backbone(setup.backbone).is_tiny_vit
    return {"bf16 autocast": cpu_bf16_native(), "Conv+BN fold": True if tiny else None, "channels-last": tiny}


def step_of(setup: Setup, size: int, batch: int, options: dict[str, bool], cached: bool = False):
    """One training step of autosam's network with ``options`` on or off (``cached``: on cached embeddings)."""
    torch.manual_seed(0)
    network = build_network(setup, size, NUM_CLASSES, 1).train()
    encoder = network.sam.image_encoder
    if options["Conv+BN fold"] is False:
        for module in network.modules():
            if type(module) is FoldedConv2dBN:
                module.__class__ = tiny_vit_sam.Conv2d_BN
    layout = torch.channels_last if options["channels-last"] else torch.contiguous_format
    encoder.to(memory_format=layout)
    if get_backbone(setup.backbone).is_tiny_vit:
        encoder.channels_last = options["channels-last"]
    elif options["channels-last"]:
        encoder.register_forward_pre_hook(lambda _, args: (args[0].contiguous(memory_format=layout),))
    if options["bf16 autocast"]:
        network.compute_dtype = torch.bfloat16
        store_frozen_weights(network, torch.bfloat16)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.1)
    loss = nnunet_loss()
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, NUM_CLASSES, (batch, 1, size, size)).float()
    if cached:
        with torch.no_grad(), network._autocast(x.device):
            embeddings = network.encode(x)

    def logits() -> torch.Tensor:
        if not cached:
            return network(x)
        with network._autocast(x.device):  # one decoder call for the batch, as trainers/cached.py has it
            return network.decode(embeddings, (size, size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss(logits(), y).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 12)
        optimizer.step()

    return step


def _seconds(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", nargs="+", default=["vit_t_encdec_lora", "vit_t_dec_lora", "vit_b_encdec_lora"])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads ({bf16_hardware(torch.device('cpu'))}), {args.image_size} px, "
          f"batch {args.batch}, {args.rounds} rounds, interleaved", flush=True)
    print(f"{'set-up':20} {'option':14} {'off ms':>8} {'on ms':>8} {'off/on':>7}  autosam", flush=True)
    for name in args.setups:
        setup = Setup.parse(name)
        ours = autosam_options(setup)
        variants = {"autosam": step_of(setup, args.image_size, args.batch, ours)}
        pairs = {}  # label -> (option, autosam's variant, the switched one)
        for option in OPTIONS:
            if ours[option] is not None:
                variants[option] = step_of(setup, args.image_size, args.batch, {**ours, option: not ours[option]})
                pairs[option] = (option, "autosam", option)
        if not setup.trains_encoder:
            variants["autosam, cached"] = step_of(setup, args.image_size, args.batch, ours, cached=True)
            variants["bf16, cached"] = step_of(setup, args.image_size, args.batch,
                                               {**ours, "bf16 autocast": not ours["bf16 autocast"]}, cached=True)
            pairs["bf16, cached"] = ("bf16 autocast", "autosam, cached", "bf16, cached")
        for step in variants.values():  # warm-up
            step()
            step()
        times: dict[str, list[float]] = {key: [] for key in variants}
        for round_ in range(args.rounds):
            for key in list(variants)[:: -1 if round_ % 2 else 1]:
                times[key].append(_seconds(variants[key]))
        for label, (option, ours_key, switched) in pairs.items():
            on, off = (times[ours_key], times[switched]) if ours[option] else (times[switched], times[ours_key])
            ratio = statistics.median(a / b for a, b in zip(off, on))
            print(f"{name:20} {label:14} {1000 * statistics.median(off):>8.0f} {1000 * statistics.median(on):>8.0f} "
                  f"{ratio:>6.2f}x  {'on' if ours[option] else 'off'}", flush=True)


if __name__ == "__main__":
    main()
