"""SAM's attentions through fused kernels, with the official parameters and state-dict keys.

Each class here subclasses segment-anything's or MobileSAM's own block or attention and replaces only
``forward``: no parameter, buffer or name changes, so official checkpoints load unchanged and peft's LoRA on
``qkv`` or ``q_proj``/``k_proj``/``v_proj`` wraps the same modules. ``use_fused_attention(model)`` switches a
built model's classes in place (``fused=False`` switches them back, for comparisons with the original).

* ViT blocks (global and windowed): ``scaled_dot_product_attention`` with segment-anything's decomposed
  relative-position term as its additive ``attn_mask``. It holds the (B, heads, N, N) bias, but no score,
  softmax or cast copies of it. Inside ``torch.compile`` on CUDA, global blocks use FlexAttention with the
  term added by a ``score_mod`` instead: no N x N tensor at all. On a CPU, when the term needs gradients (the
  encoder trains), explicit products (SDPA's CPU kernels would take their unfused math path there).
  A windowed block projects only its real tokens (segment-anything projects the zero padding too: at 256 px
  ViT-B's 16 x 16 tokens are padded to 28 x 28), and the blocks work on contiguous tokens.
* TinyViT (MobileSAM): the learned per-head bias table gathered once per forward as the ``attn_mask``.
* The mask decoder's attentions: plain SDPA (their token batch of 1 broadcast to the image batch).

The rel-pos gather indices are made on the tensors' device and cached per (q, k, device); segment-anything's
``get_rel_pos`` makes them with a CPU ``arange``, a blocking host-to-device copy twice per block on a GPU.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from segment_anything.modeling import image_encoder as sam_encoder
from segment_anything.modeling import transformer as sam_transformer
from torch import nn

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # mobile_sam imports timm through deprecated paths
    from mobile_sam.modeling import tiny_vit_sam

# Global blocks with at least this many tokens use FlexAttention when compiled on CUDA (a windowed block's
# 196-token bias is small; FlexAttention pays where the N x N bias would be large).
FLEX_MIN_TOKENS = 1024
# On a CPU, when the rel-pos term needs gradients (the encoder trains), ViT attention runs as explicit products
# (SDPA would take its unfused math path there, with its mask handling on top); tests switch it off to check
# the SDPA path's gradients.
EXPLICIT_CPU_TRAINING = True


@functools.lru_cache(maxsize=64)
def _relative_indices(q_size: int, k_size: int, device: torch.device) -> torch.Tensor:
    """segment-anything's relative coordinates (``get_rel_pos``), made once on ``device`` (as a normal tensor
    even under inference mode, so a later training forward may save it for backward)."""
    with torch.inference_mode(False):
        return _coordinates(q_size, k_size, device)


def _coordinates(q_size: int, k_size: int, device: torch.device) -> torch.Tensor:
    q_coords = torch.arange(q_size, device=device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=device)[None, :] * max(q_size / k_size, 1.0)
    return ((q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)).long()


def relative_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """(q_size, k_size, C) embeddings of ``rel_pos`` by relative position, linearly interpolated as
    segment-anything does when the table was made for another size."""
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = (
            F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear")
            .reshape(-1, max_rel_dist)
            .permute(1, 0)
        )
    if torch.compiler.is_compiling():  # made inside the graph, on the device; the cache is for eager runs
        return rel_pos[_coordinates(q_size, k_size, rel_pos.device)]
    return rel_pos[_relative_indices(q_size, k_size, rel_pos.device)]


def _flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, width: int
) -> torch.Tensor:
    """Attention with score += rel_h[q, key row] + rel_w[q, key column], the term read inside the kernel."""
    from torch.nn.attention.flex_attention import flex_attention

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + rel_h[b, h, q_idx, kv_idx // width] + rel_w[b, h, q_idx, kv_idx % width]

    return flex_attention(q, k, v, score_mod=score_mod)


class FusedViTAttention(sam_encoder.Attention):
    """segment-anything's ViT attention (global and windowed blocks) through fused kernels.

    Called by ``FusedViTBlock`` with the block's ``window_size``, it takes the block's unpadded tokens and does
    the window partition itself, after the ``qkv`` projection: segment-anything pads the normalised tokens with
    zeros and projects every padded token, whose projection is that of a zero token; here only the real tokens
    are projected (and, after attention, only they go through ``proj``), the padded positions take the zero
    token's projection. Same function, same gradients (the padding still reaches the ``qkv`` bias and LoRA
    through the zero token's projection); at 256 px a windowed block pads its 16 x 16 tokens to 28 x 28."""

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        batch, height, width, channels = x.shape
        qkv = self.qkv(x)
        if not window_size:
            q, k, v = qkv.reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            out = self._attend(q, k, v, height, width).transpose(1, 2)
            return self.proj(out.reshape(batch, height, width, -1))
        pad_h, pad_w = -height % window_size, -width % window_size
        if pad_h or pad_w:
            zero_token = self.qkv(x.new_zeros(1, 1, 1, channels))
            qkv = torch.cat([qkv, zero_token.expand(batch, height, pad_w, -1)], dim=2)
            qkv = torch.cat([qkv, zero_token.expand(batch, pad_h, width + pad_w, -1)], dim=1)
        rows, cols = (height + pad_h) // window_size, (width + pad_w) // window_size
        # (B, rows, win, cols, win, 3, heads, head_dim) -> (3, B * windows, heads, win * win, head_dim)
        q, k, v = (
            qkv.reshape(batch, rows, window_size, cols, window_size, 3, self.num_heads, -1)
            .permute(5, 0, 1, 3, 6, 2, 4, 7)
            .reshape(3, batch * rows * cols, self.num_heads, window_size * window_size, -1)
            .unbind(0)
        )
        out = self._attend(q, k, v, window_size, window_size)  # (B * windows, heads, win * win, head_dim)
        out = (
            out.reshape(batch, rows, cols, self.num_heads, window_size, window_size, -1)
            .permute(0, 1, 4, 2, 5, 3, 6)
            .reshape(batch, rows * window_size, cols * window_size, -1)
        )
        # contiguous: a linear on the strided crop would run as a batched product with its weight expanded
        return self.proj(out[:, :height, :width].contiguous())

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(B, heads, N, head_dim) queries, keys, values of an ``height`` x ``width`` grid -> attention output."""
        if not self.use_rel_pos:
            return F.scaled_dot_product_attention(q, k, v)
        batch, tokens = q.shape[0], height * width
        # segment-anything's decomposed term, from the unscaled queries (add_decomposed_rel_pos)
        r_q = q.reshape(batch, self.num_heads, height, width, -1)
        table_h = relative_table(height, height, self.rel_pos_h).to(r_q.dtype)
        table_w = relative_table(width, width, self.rel_pos_w).to(r_q.dtype)
        # (B, heads, height, width, height) and (..., width): products batched over the table's own axis
        rel_h = r_q @ table_h.transpose(1, 2)
        rel_w = (r_q.transpose(2, 3) @ table_w.transpose(1, 2)).transpose(2, 3)
        if q.is_cuda and tokens >= FLEX_MIN_TOKENS and torch.compiler.is_compiling():
            shape = (batch, self.num_heads, tokens, -1)
            return _flex_attention(q, k, v, rel_h.reshape(shape), rel_w.reshape(shape), width)
        if EXPLICIT_CPU_TRAINING and q.device.type == "cpu" and torch.is_grad_enabled() and rel_h.requires_grad:
            # CPU SDPA runs its math path when the mask needs gradients: the explicit product is cheaper
            scores = ((q * self.scale) @ k.transpose(-2, -1)).view(batch, self.num_heads, height, width, height, width)
            scores = (scores + rel_h[..., :, None] + rel_w[..., None, :]).view(batch, self.num_heads, tokens, tokens)
            return scores.softmax(dim=-1) @ v
        bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(batch, self.num_heads, tokens, tokens)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


class FusedViTBlock(sam_encoder.Block):
    """segment-anything's block, its window partition left to ``FusedViTAttention`` (after the projection).

    The tokens are made contiguous first: the patch embedding hands them on as a permuted view of its
    convolution's output, and every residual add keeps that layout, so in segment-anything each layer norm
    and linear of every block copies its input (a fifth of a CPU training step). Here only the first block
    copies, once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        x = x + self.attn(self.norm1(x), window_size=self.window_size)
        return x + self.mlp(self.norm2(x))


class FusedTinyViTAttention(tiny_vit_sam.Attention):
    """MobileSAM's TinyViT window attention through SDPA, its learned bias as the additive mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = (
            self.qkv(self.norm(x))
            .view(batch, tokens, self.num_heads, -1)
            .split([self.key_dim, self.key_dim, self.d], dim=3)
        )
        bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias.to(q.dtype), scale=self.scale
        )
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.dh))


class FusedDecoderAttention(sam_transformer.Attention):
    """The two-way transformer's attention through SDPA; a batch-1 side (the prompt tokens, the positional
    encoding) is broadcast to the image batch as the original's matmuls broadcast it."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q_proj(q), self.k_proj(k), self.v_proj(v)
        batch = max(q.shape[0], k.shape[0], v.shape[0])
        q, k, v = (self._separate_heads(t, self.num_heads).expand(batch, -1, -1, -1) for t in (q, k, v))
        return self.out_proj(self._recombine_heads(F.scaled_dot_product_attention(q, k, v)))


class FoldedConv2dBN(tiny_vit_sam.Conv2d_BN):
    """MobileSAM's convolution + batch norm (TinyViT). Frozen, with the norm in eval mode (its pretrained
    statistics, ``SamSegmenter.train``), it runs as one convolution, the norm folded into its weight and bias as
    MobileSAM's own ``fuse`` folds it. The module, its parameters and state-dict keys stay as they are: the
    folded tensors are kept aside, made again whenever a source tensor changes (a state-dict load or another
    in-place update, a cast, a move), and made inside the graph when compiled. Trained, or normalising with
    batch statistics, it runs as the original."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self.c, self.bn
        if norm.training or conv.weight.requires_grad or norm.weight.requires_grad or norm.bias.requires_grad:
            return super().forward(x)
        weight, bias = self._fold() if torch.compiler.is_compiling() else self._folded()
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.bn.weight * (self.bn.running_var + self.bn.eps).rsqrt()
        return self.c.weight * scale[:, None, None, None], self.bn.bias - self.bn.running_mean * scale

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        sources = (self.c.weight, self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var)
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in sources)
        cached = self.__dict__.get("_folded_cache")
        if cached is None or cached[0] != key:
            # a normal tensor even when first made under inference mode, so a training forward may save it
            with torch.no_grad(), torch.inference_mode(False):
                cached = key, self._fold()
            self.__dict__["_folded_cache"] = cached
        return cached[1]


FUSED = {
    sam_encoder.Block: FusedViTBlock,
    sam_encoder.Attention: FusedViTAttention,
    tiny_vit_sam.Attention: FusedTinyViTAttention,
    tiny_vit_sam.Conv2d_BN: FoldedConv2dBN,
    sam_transformer.Attention: FusedDecoderAttention,
}
ORIGINAL = {fused: original for original, fused in FUSED.items()}


def use_fused_attention(model: nn.Module, fused: bool = True) -> nn.Module:
    """Every SAM attention of ``model`` switched, in place, to its fused subclass (or back to the original).
    Only the class changes: parameters, buffers and state-dict keys stay as they are."""
    table = FUSED if fused else ORIGINAL
    for module in model.modules():
        cls = table.get(type(module))
        if cls is not None:
            module.__class__ = cls
    return model
