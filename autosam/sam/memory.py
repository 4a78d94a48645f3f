"""Training-memory estimate of a set-up, from a measured activation probe; no GPU needed.

peak = max(forward/backward, frozen-encoder forward, optimiser step) x allocator overhead + device context:
  forward/backward        = weights 4P + AdamW state 8T + activations A(B) + transients W + inputs
  frozen-encoder forward  = weights 4P + AdamW state 8T + inputs + 3 x B x the encoder's largest tensor
  optimiser step          = weights 4P + gradients 4T + AdamW state 8T + foreach temporaries 4T
P = all parameters (2 bytes for the frozen linear and convolution weights under bf16, which the trainer stores
in bf16), T = trainable ones (fp32). A(B), the bytes autograd saves for backward for a batch, is
measured by running the training forward and nnU-Net's loss on the meta device (no storage, any model size)
and counting every saved tensor once per storage, at batch 2 and 3 (at batch 1 an attention's queries, keys and
values can stay views of one projection, so batch 1 is off the line); it is affine in the batch (the prompt
tensors are shared by the batch), which the tests verify at batch 5. W is what the
forward allocates besides what it saves, from the encoder's largest tensor (also measured on meta).
Precision: with ``precision="bf16"`` (what the trainer runs on hardware with native bf16) the probe runs under
an emulation of the device's autocast rules on the meta device (``MetaAutocast``), which has no autocast of its
own; on a CPU the encoder's largest tensor is counted fp32-sized (a CPU's autocast leaves norms and activations
in fp32): the estimate was 0.93-1.17 of a real CPU step's peak under bf16 autocast (ViT-T and Hiera-T at
256 px, ``benchmarks/memory_estimator.py --quick --precision bf16``). bf16 does
not halve the activations of SAM's attention: softmax runs in fp32 and its bf16 copy for the next product is
saved as well. Against H100 peaks (ViT-B / ViT-H encoder+decoder LoRA, 512 and 1024 px, batch 2,
``benchmarks/gpu_throughput.py``) the fp32 probe under-estimated by up to 16 % at 1024 px, the emulated
probe by 1-3 %. Those figures are of the explicit attention; with the fused attentions (``attention.py``) the
bf16 probe also counts what CUDA's fused kernels keep (``FusedKernelSaves``): queries, keys, values, output and
log-sum-exp, plus the additive mask of windowed blocks, no N x N score or softmax; the global blocks' bias is
not kept (FlexAttention in the compiled blocks). The fp32 probe (CPU) keeps the math path's tensors: a CPU
SDPA with a mask that needs gradients runs the math path. To be re-measured on a GPU (gpu_throughput.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from autosam.sam.attention import FLEX_MIN_TOKENS
from autosam.sam.costs import meta_network
from autosam.sam.frozen import store_frozen_weights
from autosam.sam.registry import get_backbone
from autosam.sam.setups import Setup

GIB = 2**30
ALLOCATOR_OVERHEAD = 1.10  # caching-allocator fragmentation on CUDA (10%, a conservative rule of thumb)
CUDA_CONTEXT_BYTES = int(0.75 * GIB)  # CUDA context + cuDNN/cuBLAS workspaces


# CUDA autocast's lists (torch.amp docs), as far as SAM, nnU-Net's loss and their tensor methods use them
_LOWER_PRECISION = {F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
                    torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.addmm, torch.Tensor.addmm,
                    torch.baddbmm, torch.Tensor.baddbmm, torch.addbmm, torch.mv, torch.einsum,
                    F.scaled_dot_product_attention, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose2d}
_FLOAT32 = {F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax,
            torch.Tensor.log_softmax, F.layer_norm, F.group_norm, torch.pow, torch.Tensor.pow, torch.Tensor.__pow__,
            torch.sum, torch.Tensor.sum, torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.rsqrt,
            torch.Tensor.rsqrt, F.cross_entropy, F.nll_loss, torch.cumsum, torch.Tensor.cumsum, F.normalize}
# CPU autocast's fp32 list holds losses but no softmax, norm or reduction: those run in their input's type
_CPU_FLOAT32 = {F.cross_entropy, F.nll_loss, F.binary_cross_entropy, F.binary_cross_entropy_with_logits, F.mse_loss}


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor) and value.dtype in (torch.float32, torch.float16, torch.bfloat16) \
            and value.dtype != dtype:  # autocast leaves float64 alone
        return value.to(dtype)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


class MetaAutocast(TorchFunctionMode):
    """CUDA's (or, ``rules="cpu"``, the CPU's) autocast casting rules for any device, the meta device included:
    matrix products and convolutions in ``dtype``; on CUDA softmax / norms / reductions / losses in fp32, on a
    CPU only losses; the rest in their inputs' type. The casts go through autograd, so what a product saves for
    backward is its low-precision copy, as under real autocast."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16, rules: str = "cuda") -> None:
        super().__init__()
        self.dtype = dtype
        self.float32 = _CPU_FLOAT32 if rules == "cpu" else _FLOAT32

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self.dtype if func in _LOWER_PRECISION else torch.float32 if func in self.float32 else None
        if target is not None:
            args, kwargs = _cast(args, target), {k: _cast(v, target) for k, v in kwargs.items()}
        return func(*args, **kwargs)


class _KeptByFusedKernels(torch.autograd.Function):
    """Meta stand-in for CUDA's fused attention: an output of the right shape, and saved for backward what the
    fused kernels save (the mask only when it is a windowed block's: global blocks run FlexAttention)."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        kept_mask = (mask,) if mask is not None and mask.shape[-1] < FLEX_MIN_TOKENS else ()
        ctx.save_for_backward(q, k, v, out, lse, *kept_mask)
        return out

    @staticmethod
    def backward(ctx, grad):  # never run: the probe only counts what the forward saves
        q, k, v = ctx.saved_tensors[:3]
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None


class FusedKernelSaves(TorchFunctionMode):
    """``scaled_dot_product_attention`` on the meta device as the fused kernels save for backward: every call
    (CUDA, bf16), or ``unmasked_only`` the calls without a mask (fp32: the CPU's fused kernel takes no mask that
    needs gradients, but runs SAM 2.1's attentions and the decoder's)."""

    def __init__(self, unmasked_only: bool = False) -> None:
        super().__init__()
        self.unmasked_only = unmasked_only

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is F.scaled_dot_product_attention and args[0].is_meta
                and not (self.unmasked_only and kwargs.get("attn_mask") is not None)):
            q, k, v = args[:3]
            return _KeptByFusedKernels.apply(q, k, v, kwargs.get("attn_mask"))
        return func(*args, **kwargs)


def nnunet_loss() -> nn.Module:
    """nnU-Net's Dice + cross-entropy loss as its trainer builds it for label maps (no deep supervision)."""
    return DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)


def saved_activation_bytes(network: nn.Module, batch: int, image_size: int, input_channels: int,
                           patch_size: tuple[int, int] | None = None, with_loss: bool = False) -> int:
    """Bytes saved for backward by one training forward of ``network`` (meta or a real device) on a batch
    of ``patch_size`` patches (default: the SAM image size), optionally followed by nnU-Net's loss."""
    device = next(network.parameters()).device
    height, width = patch_size or (image_size, image_size)
    own = {p.untyped_storage()._cdata for p in network.parameters()}
    own |= {b.untyped_storage()._cdata for b in network.buffers()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            seen[storage._cdata] = storage.nbytes()
        return tensor

    x = torch.zeros(batch, input_channels, height, width, device=device)
    was_training = network.training
    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = network(x)
        if with_loss:
            nnunet_loss()(logits, torch.zeros(batch, 1, height, width, device=device))
    network.train(was_training)
    return sum(seen.values())


class _LargestNewTensor(TorchDispatchMode):
    """Records the largest tensor an operation allocates (views and existing storages excluded)."""

    def __init__(self, existing: set[int]) -> None:
        super().__init__()
        self.existing = existing
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in self.existing:
                    self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def largest_encoder_tensor_bytes(network: nn.Module, image_size: int) -> int:
    """Largest tensor the image encoder allocates for one image (e.g. a global attention matrix)."""
    encoder = network.sam.image_encoder
    device = next(encoder.parameters()).device
    existing = {t.untyped_storage()._cdata for t in (*encoder.parameters(), *encoder.buffers())}
    tracker = _LargestNewTensor(existing)
    with tracker, torch.no_grad():
        encoder(torch.zeros(1, 3, image_size, image_size, device=device))
    return tracker.largest


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int  # parameters and buffers
    gradients: int
    optimizer: int
    activations: int  # saved for backward, network and loss
    workspace: int  # forward/backward transients and the input batch
    peak: int  # bytes, including allocator overhead and (on CUDA) the context

    @property
    def peak_gb(self) -> float:
        return self.peak / GIB


@lru_cache(maxsize=256)
def _probe(setup_name: str, lora_rank: int, image_size: int, num_classes: int, input_channels: int,
           patch_size: tuple[int, int], checkpointing: bool, precision: str,
           device: str) -> tuple[int, int, int, int, int, int]:
    """Parameter bytes, trainable parameters, buffer bytes, saved bytes for one patch and for each further
    patch, and the encoder's largest single tensor for one image, all measured on the meta device, as
    ``device``'s autocast and attention kernels would compute them."""
    setup = Setup.parse(setup_name, lora_rank=lora_rank, lora_alpha=float(lora_rank))
    network = meta_network(setup, image_size, num_classes, input_channels)
    if checkpointing:
        network.enable_gradient_checkpointing()
    bf16 = precision == "bf16"
    cuda_bf16 = bf16 and device == "cuda"  # CUDA's fused kernels take the masks; a CPU's only unmasked calls
    with FusedKernelSaves(unmasked_only=not cuda_bf16):
        if not cuda_bf16:  # a CPU's autocast leaves norms and activations in the fp32 they come in: fp32-sized
            largest = largest_encoder_tensor_bytes(network, image_size)
        if bf16:  # the trainer stores frozen linear/convolution weights in bf16 (autosam.sam.frozen)
            store_frozen_weights(network, torch.bfloat16)
        with MetaAutocast(rules=device) if bf16 else contextlib.nullcontext():
            two, three = (saved_activation_bytes(network, b, image_size, input_channels, patch_size, with_loss=True)
                          for b in (2, 3))
            if cuda_bf16:
                largest = largest_encoder_tensor_bytes(network, image_size)
    params = list(network.parameters())
    return (sum(p.numel() * p.element_size() for p in params), sum(p.numel() for p in params if p.requires_grad),
            sum(b.numel() * b.element_size() for b in network.buffers()), 2 * two - three, three - two, largest)


def estimate_training_memory(setup, image_size: int, batch_size: int, num_classes: int = 2, input_channels: int = 1,
                             patch_size: tuple[int, int] | None = None, gradient_checkpointing: bool = False,
                             device: str = "cuda", precision: str = "fp32") -> MemoryEstimate:
    """Predicted peak memory of one training step of ``setup`` (a ``Setup``) on ``patch_size`` patches, with
    activations in ``precision`` ("fp32", or "bf16" autocast as the trainer runs on hardware with native
    bf16) on ``device`` ("cuda" or "cpu")."""
    patch = tuple(patch_size or (image_size, image_size))
    key = (setup.name, setup.lora_rank, image_size, num_classes, input_channels, patch)
    probe_device = "cuda" if device == "cuda" else "cpu"
    param_bytes, trainable, buffer_bytes, first, per_image, largest = _probe(*key, gradient_checkpointing, precision,
                                                                             probe_device)
    activations = first + (batch_size - 1) * per_image  # affine in the batch (prompt tensors are shared)
    if gradient_checkpointing:
        # backward recomputes one block at a time: add one block's worth of the activations it avoided
        _, _, _, plain_first, plain_per_image, _ = _probe(*key, False, precision, probe_device)
        plain = plain_first + (batch_size - 1) * plain_per_image
        activations += (plain - activations) // get_backbone(setup.backbone).encoder_blocks
    weights, grads, states = param_bytes + buffer_bytes, 4 * trainable, 8 * trainable
    inputs = batch_size * (input_channels + 1) * patch[0] * patch[1] * 4  # image and target batch
    logits = batch_size * num_classes * patch[0] * patch[1] * 4
    # Transients: a trained encoder keeps about two of its largest tensors (e.g. attention scores and their
    # softmax) alive beyond what it saves; a frozen one about three, while nothing else is saved yet.
    # Backward instead holds the logits' gradient and one more logits-sized buffer.
    transient = batch_size * largest * (2 if setup.trains_encoder else 3)
    workspace = inputs + max(2 * logits, transient if setup.trains_encoder else 0)
    forward_backward = weights + states + activations + workspace
    frozen_encoder_forward = weights + states + inputs + (0 if setup.trains_encoder else transient)
    optimizer_step = weights + grads + states + 4 * trainable
    peak = max(forward_backward, frozen_encoder_forward, optimizer_step)
    if device == "cuda":
        peak = int(peak * ALLOCATOR_OVERHEAD) + CUDA_CONTEXT_BYTES
    return MemoryEstimate(weights, grads, states, activations, workspace, peak)


class _NoHook:
    def remove(self) -> None:
        pass


def measured_training_peak(network: nn.Module, batch_size: int, patch_size: tuple[int, int]) -> int:
    """Peak bytes of two real AdamW training steps (nnU-Net's loss), tracked tensor by tensor by torch's
    MemTracker on the network's own device: the reference the estimate is checked against."""
    device = next(network.parameters()).device
    for param in network.parameters():
        if not param.requires_grad:  # MemTracker hooks every parameter; frozen ones cannot take hooks
            param.register_hook = lambda *a, **k: _NoHook()
            param.register_post_accumulate_grad_hook = lambda *a, **k: _NoHook()
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    loss = nnunet_loss()
    x = torch.randn(batch_size, network.input_channels, *patch_size, device=device)
    y = torch.randint(0, network.num_classes, (batch_size, 1, *patch_size), device=device).float()
    network.train()
    tracker = MemTracker()
    tracker.track_external(network, optimizer, x)
    with tracker:
        for step in range(2):  # the second step has the optimiser state the first one created
            optimizer.zero_grad(set_to_none=True)
            loss(network(x), y).backward()
            optimizer.step()
            if step == 0:
                tracker.reset_mod_stats()
    return next(iter(tracker.get_tracker_snapshot("peak").values()))["Total"]
