"""Frozen base weights stored in the dtype autocast computes them in.

Under bf16 autocast every linear and convolution casts its fp32 weight and bias to bf16 before it runs, in
every forward, and autocast caches only the casts of weights that train: a frozen ViT-H re-reads and re-casts
its 630 M weights each step. Stored in bf16 once, they are read at half the bytes and never cast: the numbers
are those autocast computes anyway (same bf16 values). Only the frozen linears and convolutions are stored so;
everything autocast keeps in fp32 (norms, position tables, embeddings) and every trainable tensor (LoRA,
adapters, the decoder's head) stays fp32, and ``state_dict`` gives the stored ones back in fp32, the official
layout. So do the convolutions of TinyViT's folded convolution + batch-norm pairs (``FoldedConv2dBN``): their
fold is made once from the fp32 values, and autocast casts the folded weight as it would have cast the original.
"""

from __future__ import annotations

import torch
from torch import nn

from autosam.sam.attention import FoldedConv2dBN

LOW_PRECISION_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _frozen(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def store_frozen_weights(network: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Cast, in place, the parameters of every frozen linear and convolution of ``network`` to ``dtype``; their
    state-dict entries stay fp32. Returns the number of tensors cast. The network must then run under an
    autocast of ``dtype``, as SAM's network does in that precision."""
    stored = []
    folded = {id(pair.c) for pair in network.modules() if isinstance(pair, FoldedConv2dBN)}
    for name, module in network.named_modules():
        if isinstance(module, LOW_PRECISION_MODULES) and _frozen(module) and id(module) not in folded:
            module.to(dtype)
            prefix = f"{name}." if name else ""
            stored += [prefix + key for key, _ in module.named_parameters(recurse=False)]
    if stored and not hasattr(network, "_fp32_state_keys"):
        network.register_state_dict_post_hook(_state_in_fp32)
    network._fp32_state_keys = set(getattr(network, "_fp32_state_keys", ())) | set(stored)
    return len(stored)


def _state_in_fp32(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    for key in module._fp32_state_keys:
        if prefix + key in state_dict:
            state_dict[prefix + key] = state_dict[prefix + key].float()
