"""Compute per training iteration and image, from forward FLOPs counted on the meta device.

A simple and stated model: a part that trains every weight costs its forward and a backward of about twice
the forward (3x); a part with frozen base weights and adapters or LoRA costs its forward and the input
gradients (2x); a frozen encoder under no_grad costs one forward; with the embedding cache a decoder-only
set-up costs no encoder at all per iteration, only once per slice when the cache is built.
"""

from __future__ import annotations

from functools import cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from autosam.planners.rules import cite, set_by_user
from autosam.sam.costs import meta_network
from autosam.sam.setups import Setup


@cache
def forward_gflops(backbone: str, image_size: int, num_classes: int) -> tuple[float, float]:
    """(image encoder, mask decoder with its prompt-free inputs) forward GFLOPs for one image."""
    network = meta_network(Setup(backbone, "dec", "vanilla"), image_size, num_classes, 3)
    x = torch.empty(1, 3, image_size, image_size, device="meta")
    with FlopCounterMode(display=False) as encoder, torch.no_grad():
        embeddings = network.encode(x)
    with FlopCounterMode(display=False) as decoder, torch.no_grad():
        network.decode(embeddings)
    return encoder.get_total_flops() / 1e9, decoder.get_total_flops() / 1e9


def iteration_gflops(setup: Setup, image_size: int, num_classes: int, embedding_cache: bool) -> float:
    """Training GFLOPs per image and iteration of ``setup`` (the model in this module's docstring)."""
    encoder, decoder = forward_gflops(setup.backbone, image_size, num_classes)
    factor = 3.0 if setup.method == "vanilla" else 2.0
    if setup.trains_encoder:
        return factor * (encoder + decoder)
    return factor * decoder + (0.0 if embedding_cache else encoder)


def embedding_cache_reason(setup: Setup, image_size: int, num_classes: int, enabled: bool) -> str:
    """The plan's reason for ``embedding_cache``, with the compute it saves for ``setup``."""
    if not enabled:
        return f"decoder-only set-ups encode every augmented patch in every iteration, {set_by_user('--no-embedding-cache')}"
    encoder, _ = forward_gflops(setup.backbone, image_size, num_classes)
    without = iteration_gflops(setup, image_size, num_classes, False)
    cached = iteration_gflops(setup, image_size, num_classes, True)
    saving = (f"{setup.name}: {cached:.2f} instead of {without:.2f} GFLOPs per image and iteration, plus "
              f"{encoder:.2f} GFLOPs once per slice to build the cache" if not setup.trains_encoder else
              f"{setup.name} trains the encoder, so it does not use the cache")
    return ("decoder-only set-ups train the mask decoder on image embeddings encoded once per preprocessed slice "
            f"({cite('R22')}); validation and prediction run the whole network ({saving}; --no-embedding-cache "
            "keeps the normal path)")


def nnunet_forward_gflops(configuration: dict, input_channels: int, num_classes: int) -> float:
    """Forward GFLOPs of nnU-Net's planned network (a configuration of its plans, resolved) for one patch, counted
    on the meta device like SAM's: the same model of cost for the baselines."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    with torch.device("meta"):
        network = get_network_from_plans(configuration["architecture"]["network_class_name"],
                                         configuration["architecture"]["arch_kwargs"],
                                         configuration["architecture"]["_kw_requires_import"], input_channels,
                                         num_classes, allow_init=False, deep_supervision=True)
        x = torch.empty(1, input_channels, *configuration["patch_size"])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        network(x)
    return counter.get_total_flops() / 1e9


@cache
def measured_gflops_per_second(device: str = "cpu", seconds: float = 0.3) -> float:
    """This machine's float32 matrix-multiply rate on ``device``, timed for about ``seconds``: what bounds the
    step timing's cost, and its stand-in for a network too large to time (``step_timing.py``)."""
    import time

    n = 512
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        done += 1
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return 2 * n**3 * done / (time.perf_counter() - started) / 1e9

