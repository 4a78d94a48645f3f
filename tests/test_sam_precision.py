"""Cheaper arithmetic keeps the training: bf16 autocast and gradient checkpointing follow the fp32 step's loss
trajectory on the same batches (bf16 within a stated tolerance, checkpointing exactly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autosam.planners.choose import _estimate
from autosam.planners.hardware import Hardware
from autosam.sam import network as network_module
from autosam.sam.memory import MetaAutocast, estimate_training_memory, nnunet_loss
from autosam.sam.model import build_network
from autosam.sam.setups import Setup

STEPS = 12
BF16_TOLERANCE = 1e-2  # absolute, on a Dice + CE loss near 0.9; measured 3e-4 on test_vit_encdec_lora


def _trajectory(name: str, compute_dtype: torch.dtype | None = None, checkpointing: bool = False) -> list[float]:
    torch.manual_seed(0)
    network = build_network(Setup.parse(name), 64, 3, 1, gradient_checkpointing=checkpointing).train()
    network.compute_dtype = compute_dtype
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-3)
    loss, batches, losses = nnunet_loss(), torch.Generator().manual_seed(1), []
    for _ in range(STEPS):
        x = torch.randn(2, 1, 64, 64, generator=batches)
        y = (torch.rand(2, 1, 64, 64, generator=batches) > 0.5).float()
        optimizer.zero_grad()
        value = loss(network(x), y)
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses


@pytest.mark.parametrize("name", ["test_vit_encdec_lora", "test_tiny_vit_encdec_adapter", "test_vit_dec_vanilla"])
def test_bf16_and_checkpointing_follow_the_fp32_loss_trajectory(name: str) -> None:
    plain = np.array(_trajectory(name))
    assert plain[-1] < plain[0]  # it trains
    assert np.abs(np.array(_trajectory(name, torch.bfloat16)) - plain).max() <= BF16_TOLERANCE
    assert np.abs(np.array(_trajectory(name, checkpointing=True)) - plain).max() <= 1e-6


def test_bf16_runs_the_matrix_products_in_bf16_and_returns_fp32_logits() -> None:
    network = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1)
    network.compute_dtype = torch.bfloat16
    seen = []
    network.sam.image_encoder.blocks[0].mlp.lin1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    logits = network(torch.randn(1, 1, 64, 64))
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in network.parameters())  # master weights stay fp32


def test_meta_autocast_follows_cudas_casting_rules() -> None:
    x, w = torch.empty(2, 8, device="meta"), torch.empty(4, 8, device="meta")
    with MetaAutocast():
        scores = torch.nn.functional.linear(x, w)
        assert scores.dtype == torch.bfloat16  # products in bf16
        assert scores.softmax(-1).dtype == torch.float32  # softmax, norms and losses in fp32
        assert torch.nn.functional.layer_norm(scores, (4,)).dtype == torch.float32
        assert torch.nn.functional.gelu(scores).dtype == torch.bfloat16  # the rest in their input's type


def test_meta_autocast_follows_the_cpus_casting_rules() -> None:
    x, w = torch.empty(2, 8, device="meta"), torch.empty(4, 8, device="meta")
    with MetaAutocast(rules="cpu"):
        scores = torch.nn.functional.linear(x, w)
        assert scores.dtype == torch.bfloat16
        assert scores.softmax(-1).dtype == torch.bfloat16  # a CPU's autocast leaves softmax and norms alone
        assert torch.nn.functional.layer_norm(scores, (4,)).dtype == torch.bfloat16
        assert torch.nn.functional.cross_entropy(scores, torch.zeros(2, dtype=torch.long, device="meta")).dtype \
            == torch.float32  # losses in fp32


def test_this_torch_answers_whether_the_cpu_has_bf16() -> None:
    """The CPU checks are private torch functions: a torch without them would silently train in fp32."""
    assert callable(torch.cpu._is_avx512_bf16_supported) and callable(torch.cpu._is_amx_tile_supported)


@pytest.mark.parametrize("native", [True, False])
def test_a_bf16_plan_autocasts_on_a_cpu_exactly_when_it_computes_bf16_natively(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network_module, "cpu_bf16_native", lambda: native)
    seen = []
    network = build_network(Setup.parse("test_vit_encdec_lora"), 64, 3, 1)
    network.sam.image_encoder.blocks[0].mlp.lin1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    network.precision = "bf16"
    network(torch.randn(1, 1, 64, 64))
    network.precision = "fp32"  # a plan may say fp32: never autocast then
    network(torch.randn(1, 1, 64, 64))
    assert seen == [torch.bfloat16 if native else torch.float32, torch.float32]


@pytest.mark.parametrize("native", [True, False])
def test_the_planner_estimates_memory_in_the_precision_the_trainer_will_run(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(network_module, "cpu_bf16_native", lambda: native)
    setup = Setup.parse("test_vit_encdec_lora")
    shape = {"num_classes": 3, "channels": 1, "patch": (256, 256), "native_patches": False}

    def estimate(device: str, precision: str) -> int:
        return estimate_training_memory(setup, 256, 2, 3, 1, (256, 256), False, device, precision).peak

    assert estimate("cuda", "bf16") != estimate("cuda", "fp32")
    assert _estimate(setup, 256, 2, shape, Hardware("cuda", 24, "test GPU"), False) == estimate("cuda", "bf16")
    cpu = _estimate(setup, 256, 2, shape, Hardware("cpu", 24, "test CPU"), False)
    assert cpu == estimate("cpu", "bf16" if native else "fp32")
    assert estimate("cpu", "bf16") != estimate("cpu", "fp32")
