"""The 18 set-ups on small configurations of the real classes: shapes, gradients, parameter counts."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from autosam.errors import AutosamError
from autosam.sam.model import build_network
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import DECODER_HEAD, METHODS, SCOPES, Setup, all_setups

# vit_t is the real MobileSAM encoder (small enough for the CPU at 256 px); the others are test sizes of SAM's,
# MobileSAM's and SAM 2.1's classes.
BACKBONE_SIZES = {"test_vit": 64, "test_tiny_vit": 64, "vit_t": 256, "test_hiera": 64}
SETUPS = all_setups(tuple(BACKBONE_SIZES))


def _network(setup: Setup, channels: int = 1, num_classes: int = 3) -> SamSegmenter:
    return build_network(setup, BACKBONE_SIZES[setup.backbone], num_classes, channels)


def _is_new_module(name: str) -> bool:
    return "lora_" in name or ".adapter" in name or name.startswith("channel_mixer")


@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: s.name)
def test_gradients_reach_exactly_the_trainable_parameters(setup: Setup) -> None:
    net = _network(setup).train()
    x = torch.randn(2, 1, 50, 70)
    out = net(x)
    assert out.shape == (2, 3, 50, 70) and out.dtype == torch.float32
    torch.nn.functional.cross_entropy(out, torch.randint(0, 3, (2, 50, 70))).backward()

    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in net.named_parameters() if p.grad is not None}
    assert trainable and with_grad == trainable
    if setup.scope == "dec":
        assert not any(n.startswith("sam.image_encoder.") for n in with_grad)
    else:
        assert any(n.startswith("sam.image_encoder.") for n in with_grad)
    if setup.method != "vanilla":
        decoder = "sam.sam_mask_decoder" if setup.backbone == "test_hiera" else "sam.mask_decoder"
        head = tuple(f"{decoder}.{part}" for part in DECODER_HEAD)
        base_with_grad = [n for n in with_grad if not _is_new_module(n) and not n.startswith(head)]
        assert base_with_grad == []
        assert any(_is_new_module(n) for n in with_grad)


@pytest.mark.parametrize("backbone", BACKBONE_SIZES)
def test_trainable_counts_are_ordered(backbone: str) -> None:
    counts = {
        (s.scope, s.method): sum(p.numel() for p in _network(s).parameters() if p.requires_grad)
        for s in all_setups((backbone,))
    }
    for method in METHODS:
        assert counts["encdec", method] > counts["dec", method]
    for scope in SCOPES:
        assert counts[scope, "vanilla"] > counts[scope, "adapter"]
        assert counts[scope, "vanilla"] > counts[scope, "lora"]


def test_frozen_batchnorm_keeps_its_statistics() -> None:
    net = _network(Setup("test_tiny_vit", "encdec", "lora")).train()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net(torch.randn(2, 1, 64, 64))
    assert not bn.training and torch.equal(bn.running_mean, before)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_any_channel_count(channels: int) -> None:
    net = _network(Setup("test_vit", "encdec", "lora"), channels=channels)
    assert net(torch.randn(1, channels, 40, 40)).shape == (1, 3, 40, 40)
    assert (net.channel_mixer is not None) == (channels not in (1, 3))


def test_minmax_normalisation_is_scale_invariant() -> None:
    sam = build_sam("test_vit", 64, 2)
    net = SamSegmenter(sam, 1, normalisation="minmax").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), net(x * 7 + 3), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    setup = Setup("test_vit", "encdec", "lora")
    x, y = torch.randn(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        net = _network(setup).train()
        if checkpointing:
            net.enable_gradient_checkpointing()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][k], grads[1][k], atol=1e-6) for k in grads[0])


def test_setup_names_round_trip_and_bad_names_are_refused() -> None:
    assert [s.name for s in all_setups()][:3] == ["vit_t_dec_vanilla", "vit_t_dec_adapter", "vit_t_dec_lora"]
    assert len(all_setups()) == 18
    assert Setup.parse("vit_b_encdec_lora") == Setup("vit_b", "encdec", "lora")
    assert Setup.from_dict(Setup.parse("test_tiny_vit_dec_adapter").to_dict()).name == "test_tiny_vit_dec_adapter"
    for bad in ("vit_b_lora", "vit_x_dec_lora", "vit_b_encoder_lora", "vit_b_dec_prefix"):
        with pytest.raises(AutosamError, match="set-up|backbone"):
            Setup.parse(bad)


@pytest.mark.parametrize("name", ["test_vit_encdec_adapter", "test_tiny_vit_encdec_adapter", "test_vit_encdec_lora",
                                  "test_hiera_encdec_adapter"])
def test_copies_and_pickles_keep_their_own_adapters(name: str) -> None:
    network = build_network(Setup.parse(name), 64, 3, 1, gradient_checkpointing=True)
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 0.3)
    network.eval()
    x = torch.randn(3, 1, 64, 64)
    expected = network(x)
    assert torch.allclose(torch.cat([network(x[i:i + 1]) for i in range(3)]), expected, atol=1e-5)  # batch-safe
    restored = pickle.loads(pickle.dumps(network))
    assert torch.allclose(restored(x), expected, atol=1e-6)
    clone = copy.deepcopy(network)
    with torch.no_grad():
        for parameter in clone.parameters():
            if parameter.requires_grad:
                parameter.zero_()
    assert torch.allclose(network(x), expected)  # the original does not run the clone's weights...
    assert not torch.allclose(clone(x), expected, atol=1e-3)  # ...and the clone runs its own
