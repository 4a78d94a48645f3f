"""Frozen base weights stored in bf16 under bf16 training: the frozen linears and convolutions are bf16, every
trained tensor and every norm stays fp32, a training step runs and computes what autocast computes with fp32
storage, and fold checkpoints keep the official fp32 layout and round-trip."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from autosam.sam.attention import FoldedConv2dBN
from autosam.sam.frozen import LOW_PRECISION_MODULES, store_frozen_weights
from autosam.sam.model import build_network
from autosam.sam.setups import Setup
from autosam.sam.weights.base import BaseCheckpoint
from autosam.sam.weights.fold_checkpoint import fine_tuned_weights
from tests.conftest import predict, train_a_step


def _bf16_network(name: str, base: Path | None = None) -> nn.Module:
    network = build_network(Setup.parse(name), 64, 3, 1, base=base and BaseCheckpoint.of_file(base))
    network.ensure_base_loaded()
    network.compute_dtype = torch.bfloat16  # bf16 autocast on any device, as the trainer's bf16 precision
    return network


@pytest.mark.parametrize("name", ["test_vit_encdec_lora", "test_tiny_vit_dec_adapter"])
def test_frozen_weights_are_bf16_trained_ones_fp32_and_a_step_computes_what_autocast_computes(name: str) -> None:
    torch.manual_seed(0)
    network = _bf16_network(name)
    fp32_stored = copy.deepcopy(network)
    assert store_frozen_weights(network) > 0
    folded = {f"{n}.c" for n, m in network.named_modules() if isinstance(m, FoldedConv2dBN)}  # fold from fp32
    for module_name, module in network.named_modules():
        for key, p in module.named_parameters(recurse=False):
            low = isinstance(module, LOW_PRECISION_MODULES) and not p.requires_grad and module_name not in folded
            assert p.dtype == (torch.bfloat16 if low else torch.float32), f"{module_name}.{key}"
    assert any(p.dtype == torch.bfloat16 for p in network.sam.image_encoder.parameters())
    assert all(p.dtype == torch.float32 for p in network.parameters() if p.requires_grad)

    x, y = torch.randn(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    for model in (network, fp32_stored):
        model.train()
        nn.functional.cross_entropy(model(x), y).backward()
    trained = [(n, p) for n, p in network.named_parameters() if p.requires_grad]
    others = dict(fp32_stored.named_parameters())
    for key, p in trained:  # the same bf16 values enter every product: the same numbers, exactly
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.equal(p.grad, others[key].grad), key
    torch.optim.AdamW([p for _, p in trained], lr=1e-3).step()


def test_checkpoints_keep_the_official_fp32_layout_and_round_trip(base_checkpoint) -> None:
    path, _ = base_checkpoint("test_vit", 64, 3)
    network = _bf16_network("test_vit_encdec_lora", path)
    official = {k: (v.shape, v.dtype) for k, v in network.state_dict().items()}
    store_frozen_weights(network)
    assert {k: (v.shape, v.dtype) for k, v in network.state_dict().items()} == official
    train_a_step(network)
    weights = fine_tuned_weights(network)
    assert weights and all(v.dtype != torch.bfloat16 for v in weights.values())

    fresh = _bf16_network("test_vit_encdec_lora", path)  # as the predictor does: build, load the fold's tensors
    fresh.load_state_dict(weights)
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(predict(network, x), predict(fresh, x))
    store_frozen_weights(fresh)  # and loading into a network whose frozen weights are already bf16
    fresh.load_state_dict(fine_tuned_weights(network))
    assert torch.equal(predict(network, x), predict(fresh, x))
