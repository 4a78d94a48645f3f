"""The fused attentions compute segment-anything's and MobileSAM's functions: outputs and gradients (input, LoRA
weights, rel-pos tables, TinyViT's bias table) equal the original classes' within fp32 tolerance, official
checkpoints load unchanged, the batched decoder equals the per-image loop, and FLOP counts stay pinned."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from segment_anything.modeling import image_encoder as sam_encoder
from segment_anything.modeling import transformer as sam_transformer
from torch import nn

from autosam.sam import attention
from autosam.sam.adapter import attach_adapter
from autosam.sam.attention import (
    FoldedConv2dBN,
    FusedDecoderAttention,
    FusedTinyViTAttention,
    FusedViTAttention,
    FusedViTBlock,
    _flex_attention,
    relative_table,
    tiny_vit_sam,
    use_fused_attention,
)
from autosam.sam.costs import forward_flops, meta_network
from autosam.sam.model import build_network
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup

ATOL = 2e-5


def _randomised(module: nn.Module) -> nn.Module:
    """Non-zero rel-pos tables and biases (they start at zero), so the position terms are really tested."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "rel_pos" in name or "attention_biases" in name or "lora_B" in name or "adapter.up" in name:
                p.normal_(0, 0.5)
    return module


def _original_and_fused(original: nn.Module, lora_target: str | None = "qkv") -> tuple[nn.Module, nn.Module]:
    if lora_target:
        config = LoraConfig(r=2, lora_alpha=2, target_modules=[lora_target], lora_dropout=0.0)
        inject_adapter_in_model(config, original)
    for name, p in original.named_parameters():  # peft froze them; their gradients are checked too
        p.requires_grad_(
            p.requires_grad
            or any(part in name for part in ("rel_pos", "attention_biases", "qkv.base_layer.bias", "adapter"))
        )
    _randomised(original)
    fused = use_fused_attention(copy.deepcopy(original))
    return original, fused


def _check_same(original: nn.Module, fused: nn.Module, *inputs: torch.Tensor) -> None:
    """Same outputs; same gradients of every input and every trainable parameter."""
    grads = []
    for model in (original, fused):
        xs = [x.clone().requires_grad_() for x in inputs]
        out = model(*xs)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        params = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        grads.append((out, [x.grad for x in xs], params))
    (out_a, xg_a, pg_a), (out_b, xg_b, pg_b) = grads
    torch.testing.assert_close(out_b, out_a, atol=ATOL, rtol=1e-4)
    for a, b in zip(xg_a, xg_b):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-4)
    assert pg_a.keys() == pg_b.keys() and pg_a
    for name in pg_a:
        torch.testing.assert_close(pg_b[name], pg_a[name], atol=ATOL, rtol=1e-4, msg=name)


@pytest.mark.parametrize("explicit_on_cpu", [True, False])  # the CPU training path and SDPA's (CUDA's) path
@pytest.mark.parametrize(
    ("window", "input_size", "grid"),
    [
        (0, 6, 6),  # global block
        (4, 6, 6),  # windowed block, grid padded from 6 to 8 (only the real tokens are projected)
        (4, 4, 5),  # windowed block, padded from 5 to 8 in both directions
        (0, 4, 6),
    ],  # global block whose rel-pos tables were made for 4 tokens: interpolated to 11 entries
)
def test_vit_block_matches_segment_anything(
    window: int, input_size: int, grid: int, explicit_on_cpu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs and gradients of input, LoRA, rel-pos tables, the qkv bias (which padded tokens reach) and an
    adapter on the attention's output."""
    monkeypatch.setattr(attention, "EXPLICIT_CPU_TRAINING", explicit_on_cpu)
    block = sam_encoder.Block(
        dim=32, num_heads=2, use_rel_pos=True, window_size=window, input_size=(input_size, input_size)
    )
    attach_adapter(block, "adapter", block.attn, 32)
    original, fused = _original_and_fused(block)
    assert type(fused) is FusedViTBlock and type(fused.attn) is FusedViTAttention
    assert type(original) is sam_encoder.Block and type(original.attn) is sam_encoder.Attention
    assert {
        "attn.rel_pos_h",
        "attn.rel_pos_w",
        "attn.qkv.lora_A.default.weight",
        "attn.qkv.base_layer.bias",
        "adapter.up.weight",
    } <= {n for n, p in fused.named_parameters() if p.requires_grad}
    _check_same(original, fused, torch.randn(2, grid, grid, 32))


def test_tiny_vit_attention_matches_mobile_sam_in_training_and_evaluation() -> None:
    original, fused = _original_and_fused(tiny_vit_sam.Attention(16, key_dim=8, num_heads=2, resolution=(4, 4)))
    assert type(fused) is FusedTinyViTAttention
    x = torch.randn(3, 16, 16)
    original.train(), fused.train()  # MobileSAM's train() returns None
    _check_same(original, fused, x)
    original.eval(), fused.eval()  # evaluation reads the bias gathered once (``ab``)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), original(x), atol=ATOL, rtol=1e-4)


def _conv_bn(seed: int) -> nn.Module:
    """A frozen MobileSAM convolution + batch norm in eval mode, with non-trivial statistics and affine terms."""
    torch.manual_seed(seed)
    pair = tiny_vit_sam.Conv2d_BN(4, 6, ks=3, pad=1)
    with torch.no_grad():
        pair.c.weight.normal_()
        pair.bn.running_mean.normal_()
        pair.bn.running_var.uniform_(0.5, 2.0)
        pair.bn.weight.normal_()
        pair.bn.bias.normal_()
    pair.requires_grad_(False).eval()
    return pair


def test_frozen_conv_bn_runs_folded_and_follows_a_load_and_training_falls_back_to_the_pair() -> None:
    original = _conv_bn(0)
    folded = use_fused_attention(copy.deepcopy(original))
    assert type(folded) is FoldedConv2dBN and folded.state_dict().keys() == original.state_dict().keys()
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():  # folded tensors first made under inference mode still serve a training forward
        folded(x)
    outputs, grads = [], []
    for model in (original, folded):
        xs = x.clone().requires_grad_()
        out = model(xs)
        out.pow(2).sum().backward()
        outputs.append(out)
        grads.append(xs.grad)
    torch.testing.assert_close(outputs[1], outputs[0], atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=ATOL, rtol=1e-4)
    other = _conv_bn(1)
    folded.load_state_dict(other.state_dict())  # in place: the fold is made again
    with torch.no_grad():
        torch.testing.assert_close(folded(x), other(x), atol=ATOL, rtol=1e-4)
    folded.train(), other.train()  # batch statistics: the pair itself, running statistics updated
    with torch.no_grad():
        torch.testing.assert_close(folded(x), other(x), atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(folded.bn.running_mean, other.bn.running_mean)
    folded.eval(), other.eval()
    folded.c.weight.requires_grad_(True)  # a trained convolution: the pair, its weight gets its gradient
    folded(x).sum().backward()
    assert folded.c.weight.grad is not None


def test_a_training_tiny_vit_network_runs_its_frozen_batch_norms_folded() -> None:
    network = build_network(Setup.parse("test_tiny_vit_encdec_lora"), 64, 3, 1).train()
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    ran = []
    for norm in norms:
        norm.register_forward_hook(lambda *_: ran.append(1))
    assert norms and all(isinstance(m, FoldedConv2dBN) for m in network.modules() if hasattr(m, "bn"))
    network(torch.randn(2, 1, 64, 64)).sum().backward()
    assert not ran  # every frozen norm folded into its convolution; none ran as a layer


def test_tiny_vit_convolutions_run_channels_last_with_the_contiguous_layouts_numbers() -> None:
    torch.manual_seed(0)
    network = build_network(Setup.parse("test_tiny_vit_encdec_lora"), 64, 3, 1).train()
    encoder = network.sam.image_encoder
    convs = [m.weight for m in encoder.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    contiguous = copy.deepcopy(network)
    contiguous.sam.image_encoder.channels_last = False
    contiguous.sam.image_encoder.to(memory_format=torch.contiguous_format)
    seen = []
    encoder.patch_embed.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.randn(2, 1, 64, 64)
    outputs = []
    for model in (contiguous, network):
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(outputs[1], outputs[0], atol=ATOL, rtol=1e-4)
    trained = [(n, p.grad) for n, p in contiguous.named_parameters() if p.requires_grad]
    grads = {n: p.grad for n, p in network.named_parameters() if p.requires_grad}
    for name, expected in trained:  # the layout changes only the order of the sums: equal to fp32 rounding
        assert (grads[name] - expected).abs().max() <= 1e-5 * expected.abs().max(), name


@pytest.mark.parametrize("query_batch", [1, 3])  # prompt tokens of batch 1 broadcast to the image batch
def test_decoder_attention_matches_segment_anything(query_batch: int) -> None:
    original, fused = _original_and_fused(sam_transformer.Attention(32, 2, downsample_rate=2), "q_proj")
    assert type(fused) is FusedDecoderAttention
    _check_same(original, fused, torch.randn(query_batch, 5, 32), torch.randn(3, 16, 32), torch.randn(3, 16, 32))


def test_flex_attention_score_mod_matches_the_bias_mask() -> None:
    """The compiled-GPU path's arithmetic, run eagerly on the CPU (FlexAttention has no CPU backward: its
    gradients are exercised where it runs, on CUDA, by benchmarks/gpu_throughput.py)."""
    torch.manual_seed(0)
    batch, heads, height, width, dim = 2, 2, 4, 5, 16
    q, k, v = (torch.randn(batch, heads, height * width, dim) for _ in range(3))
    rel_h = torch.randn(batch, heads, height * width, height)
    rel_w = torch.randn(batch, heads, height * width, width)
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(batch, heads, height * width, -1)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(_flex_attention(q, k, v, rel_h, rel_w, width), expected, atol=ATOL, rtol=1e-4)


def test_relative_indices_are_made_on_the_table_device_once() -> None:
    table = torch.randn(7, 4, device="meta")
    assert relative_table(4, 4, table).device.type == "meta"
    from autosam.sam.attention import _relative_indices

    _relative_indices.cache_clear()
    relative_table(4, 4, torch.randn(7, 4))
    relative_table(4, 4, torch.randn(7, 4))
    assert _relative_indices.cache_info().hits == 1


@pytest.mark.parametrize("backbone", ["test_vit", "test_tiny_vit"])
def test_official_layout_checkpoint_loads_unchanged(backbone: str) -> None:
    """The fused model has the original's keys and shapes; an original model's weights load strictly into it and
    give the original's embeddings."""
    torch.manual_seed(0)
    fused = build_sam(backbone, 64, 3)
    original = use_fused_attention(copy.deepcopy(fused), fused=False)
    original.image_encoder.to(memory_format=torch.contiguous_format)  # as an official file holds it
    _randomised(original)
    with torch.no_grad():  # TinyViT's batch norms with statistics and affine terms that the fold must carry
        for norm in (m for m in original.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2.0), norm.weight.normal_(), norm.bias.normal_()
    assert {k: v.shape for k, v in fused.state_dict().items()} == {k: v.shape for k, v in original.state_dict().items()}
    fused.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused.image_encoder(x), original.image_encoder(x), atol=ATOL, rtol=1e-4)
        fused.eval(), original.eval()  # TinyViT's frozen pairs folded, against MobileSAM's own
        fused.requires_grad_(False)
        torch.testing.assert_close(fused.image_encoder(x), original.image_encoder(x), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("name", ["test_vit_encdec_lora", "test_tiny_vit_dec_adapter"])
def test_one_decoder_call_per_batch_equals_the_per_image_loop_of_the_original(name: str) -> None:
    torch.manual_seed(0)
    network = build_network(Setup.parse(name), 64, 3, 1)
    _randomised(network)
    embeddings = torch.randn(3, 32, 4, 4, requires_grad=True)
    batched = network.decode((embeddings,))
    original = use_fused_attention(copy.deepcopy(network), fused=False)
    loop = torch.cat([original.decode((e[None],)) for e in embeddings])
    torch.testing.assert_close(batched, loop, atol=ATOL, rtol=1e-4)
    (grad_batched,) = torch.autograd.grad(batched.sum(), embeddings)
    (grad_loop,) = torch.autograd.grad(loop.sum(), embeddings)
    torch.testing.assert_close(grad_batched, grad_loop, atol=ATOL, rtol=1e-4)


# Forward FLOPs at batch 1 (2 per multiply-add): (fused, explicit). The fused attentions count what the explicit
# ones count, except that a windowed block projects only its real tokens (ViT-B at 256 px pads 16 to 28).
PINNED_FLOPS = {
    ("test_vit_encdec_lora", 64): (2_521_536, 2_521_536),
    ("test_tiny_vit_encdec_lora", 64): (84_410_304, 84_410_304),
    ("vit_b_encdec_lora", 256): (49_449_866_752, 69_456_500_224),
}


@pytest.mark.parametrize(("name", "size"), list(PINNED_FLOPS))
def test_flop_counts_are_pinned_for_the_fused_and_the_explicit_attention_graph(name: str, size: int) -> None:
    network = meta_network(Setup.parse(name), size, 3)
    fused, explicit = PINNED_FLOPS[name, size]
    assert forward_flops(network) == fused
    assert forward_flops(use_fused_attention(network, fused=False)) == explicit


@pytest.mark.parametrize("window", [4, 0])  # a windowed block (6 x 6 tokens padded to 8 x 8), a global block
def test_no_graph_breaks_in_a_lora_block_with_an_adapter(window: int) -> None:
    """torch.compile sees one graph through peft's LoRA, the adapter's hook and the fused attention."""
    block = sam_encoder.Block(
        dim=32, num_heads=2, use_rel_pos=True, window_size=window, input_size=(window, window) if window else (6, 6)
    )
    use_fused_attention(block)
    attach_adapter(block, "adapter", block.attn, 32)  # as add_encoder_adapters attaches it
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=2, target_modules=["qkv"]), block)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(block)(torch.randn(2, 6, 6, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
