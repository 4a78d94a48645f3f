"""nnU-Net trainer that trains the promptless SAM network described by the plans' ``sam`` block.

Everything else is nnU-Net's: data loading, augmentation, the Dice + CE loss, the epoch loop, the 5-fold
splits, validation and export. What changes: the network (built from the plan, base weights loaded once at
initialisation), AdamW with warm-up + poly decay stepped per iteration, no deep supervision, and checkpoints
that hold only the fine-tuned tensors plus the identity of the base weights, written atomically.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from autosam.files import atomic_torch_save
from autosam.planners.choose import learning_rate_for, learning_rate_reason
from autosam.planners.sam_planner import base_checkpoint_for
from autosam.plans import SamPlan, network_for_plan, sam_plan_of
from autosam.sam.adapter import encoder_attention_blocks
from autosam.sam.frozen import store_frozen_weights
from autosam.sam.network import SamSegmenter, bf16_hardware
from autosam.sam.prompts import batch_prompts, generator_from_torch
from autosam.sam.registry import get_backbone
from autosam.sam.setups import Setup
from autosam.sam.weights.base import FROM_SCRATCH
from autosam.sam.weights.catalogue import CATALOGUE
from autosam.sam.weights.fold_checkpoint import check_identity, fine_tuned_weights, identity_of
from autosam.sam.weights.safe_load import load_fold_checkpoint
from autosam.trainers.cached import (
    EmbeddingBatch,
    cached_train_step,
    cached_training_loader,
    optimiser_step,
    why_not_cached,
)
from autosam.trainers.distributed import cpu_ddp_wrapper
from autosam.trainers.schedule import WarmupPolySchedule
from autosam.trainers.seeding import restore_rng_state, rng_state

# With --prompts, the share of training images prompted (each present class gets a prompt); the rest train the
# promptless path, which the automatic comparison scores, so one model serves both.
PROMPTED_SHARE = 0.5


def _plain(value):
    """numpy scalars/arrays in nnU-Net's logs -> Python numbers, so the checkpoint loads with weights_only."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class nnUNetTrainerSAM(nnUNetTrainer):
    """Trains the set-up named in the plans; subclasses in ``autosam.trainers.variants`` fix the set-up instead."""

    setup_override: str | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp and device.type == "cpu":  # nnU-Net moves DDP ranks to CUDA; a gloo group stays on the CPU
            self.device, self.grad_scaler = device, None
        self.sam_plan = self.plan_for(self.configuration_manager)
        self.from_scratch = self.sam_plan.from_scratch
        self.enable_deep_supervision = False
        self.initial_lr = self.sam_plan.learning_rate
        self.weight_decay = self.sam_plan.weight_decay
        self.num_epochs = self.sam_plan.num_epochs
        self.num_iterations_per_epoch = self.sam_plan.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.sam_plan.val_iterations_per_epoch
        # Fine-tuned checkpoints are small: keep the latest every epoch (a crash loses at most one), except
        # when every encoder weight trains and a checkpoint carries the whole model and its optimiser state.
        setup = self.sam_plan.setup
        self.save_every = 10 if setup.trains_whole_encoder else 1
        self._rng_state_to_restore: dict | None = None

    @classmethod
    def plan_for(cls, configuration_manager: ConfigurationManager) -> SamPlan:
        """The planned set-up, or the variant's with its own learning rate and, on another backbone, that
        backbone's official weights (looked up next to the planned ones) and their normalisation."""
        plan = sam_plan_of(configuration_manager.configuration)
        if cls.setup_override:
            setup = Setup.parse(cls.setup_override, lora_rank=plan.setup.lora_rank, lora_alpha=plan.setup.lora_alpha)
            if setup.backbone != plan.setup.backbone and plan.base_checkpoint is not None:
                planned = plan.base_checkpoint.path
                name = get_backbone(setup.backbone).checkpoint
                plan.base_checkpoint, _ = base_checkpoint_for(setup, name, planned and str(Path(planned).parent))
                plan.normalisation = CATALOGUE[name].normalisation
            plan.setup = setup
            plan.learning_rate = learning_rate_for(setup)
            plan.reasons["setup"] = f"fixed by the trainer {cls.__name__}"
            plan.reasons["learning_rate"] = learning_rate_reason(setup)
        return plan

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> SamSegmenter:
        """The network with random weights; the base weights load on first need (``ensure_base_loaded``)."""
        return network_for_plan(cls.plan_for(configuration_manager), num_output_channels, num_input_channels)

    def _sam_network(self) -> SamSegmenter:
        """The network under nnU-Net's DDP and torch.compile wrappers (their state-dict keys are prefixed)."""
        network = self.network.module if self.is_ddp else self.network
        return getattr(network, "_orig_mod", network)

    def initialize(self) -> None:
        with cpu_ddp_wrapper(self.device):
            super().initialize()
        network = self._sam_network()
        if self.from_scratch:
            network.base_loader, network.base_identity = None, FROM_SCRATCH
            self.print_to_log_file(
                f"WARNING: training {self.sam_plan.setup.name} FROM SCRATCH (random weights, no pretrained SAM). "
                "Expect far lower Dice than a pretrained start.")
        else:
            identity = network.ensure_base_loaded()
            self.print_to_log_file(f"Base weights: {identity.name} (sha256 {identity.sha256})")
        dtype = network.autocast_dtype(self.device)  # the one rule (SamSegmenter._autocast)
        if dtype is not None:
            precision = f"{str(dtype).removeprefix('torch.').replace('bfloat16', 'bf16')} autocast"
            if network.compute_dtype is None:
                precision += f" ({bf16_hardware(self.device)})"
            if dtype == torch.bfloat16:
                self.grad_scaler = None  # bf16 keeps fp32's exponent range: no loss scaling
                stored = store_frozen_weights(network, dtype)  # autocast computes them in bf16 anyway
                precision += f"; {stored} frozen linear/convolution tensors stored in bf16 (fp32 in checkpoints)"
        elif self.device.type != "cuda":
            precision = "fp32" + ("" if network.precision == "fp32" else " (this CPU has no native bf16)")
        elif network.precision == "bf16":
            precision = "fp16 autocast with loss scaling (nnU-Net's; this GPU has no native bf16)"
        else:
            precision = "fp32 (autocast off)"
        self.print_to_log_file(f"Precision: {precision}; trained weights, gradients and AdamW state fp32")
        if self.compile_blocks():
            self.print_to_log_file("torch.compile per encoder block (compiled during the first iterations; "
                                   "nnUNet_compile=false or --no-compile turns it off)")
        params = list(network.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        self.print_to_log_file(
            f"SAM set-up {self.sam_plan.setup.name} at {self.sam_plan.image_size} px: "
            f"{trainable:,} of {sum(p.numel() for p in params):,} parameters train")
        if self.sam_plan.prompts is not None:
            self.print_to_log_file(
                f"Prompts: {self.sam_plan.prompts} from the augmented reference, on {PROMPTED_SHARE:.0%} of the "
                "training images (the rest promptless); SAM's prompt encoder stays frozen")

    def _do_i_compile(self) -> bool:
        # nnU-Net compiles the whole network; SAM's encoder blocks are compiled one by one instead
        # (compile_blocks), so nnU-Net's own compile stays off.
        return False

    def compile_blocks(self) -> bool:
        """torch.compile each image-encoder block on CUDA (one compiled graph serves every block of a shape,
        FlexAttention in the global blocks), unless nnUNet_compile is false (``autosam train --no-compile``).
        SAM 2.1's Hiera runs eager: its own configuration marks Hiera-T's compilation as unsupported, and autosam
        has not measured the others on a GPU."""
        wanted = os.environ.get("nnUNet_compile", "true").lower() in ("true", "1", "t")
        if self.device.type != "cuda" or not wanted or get_backbone(self.sam_plan.setup.backbone).family == "sam2":
            return False
        for block in encoder_attention_blocks(self._sam_network().sam.image_encoder):
            block.compile()
        return True

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        pass  # SAM has a single output

    def configure_optimizers(self):
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.initial_lr, weight_decay=self.weight_decay,
                                      fused=self.device.type == "cuda")  # one kernel for all tensors
        total = self.num_epochs * self.num_iterations_per_epoch
        warmup = min(self.sam_plan.warmup_iterations, max(1, total // 10))  # a short budget still decays
        schedule = WarmupPolySchedule(optimizer, self.initial_lr, warmup, total, self.num_iterations_per_epoch,
                                      self.sam_plan.poly_exponent)
        return optimizer, schedule

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        why_not = why_not_cached(self)
        if why_not is None:  # decoder-only: train on embeddings encoded once (trainers/cached.py)
            return cached_training_loader(self, train), val
        if not self.sam_plan.setup.trains_encoder:
            self.print_to_log_file(f"Embedding cache not used: {why_not}")
        return train, val

    def train_step(self, batch: dict) -> dict:
        if isinstance(batch, EmbeddingBatch):
            result = cached_train_step(self, batch)
            self.lr_scheduler.advance()
            return result
        if self.sam_plan.prompts is None:
            result = self._train_step(batch)
        else:  # prompts from the augmented target nnU-Net's loader gives; nnU-Net's step and loss unchanged
            target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
            prompts = batch_prompts(target, self.sam_plan.prompts, generator_from_torch(),
                                    self.label_manager.ignore_label, PROMPTED_SHARE)
            with self._sam_network().prompting(prompts):
                result = self._train_step(batch)
        self.lr_scheduler.advance()
        return result

    def _train_step(self, batch: dict) -> dict:
        """nnU-Net's train step (its autocast, loss, loss scaling and clipping at 12), returning the loss as a
        device tensor: nnU-Net's moves it to the CPU every step, a host sync that stalls the GPU's queue.
        ``on_train_epoch_end`` moves the epoch's losses once."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) else \
            target.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type) if self.device.type == "cuda" else contextlib.nullcontext():
            loss = self.loss(self.network(data), target)
        optimiser_step(self, loss)
        return {"loss": loss.detach()}

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        for output in train_outputs:  # device tensors (SAM's steps) -> the numbers nnU-Net logs
            if isinstance(output["loss"], torch.Tensor):
                output["loss"] = output["loss"].cpu().numpy()
        super().on_train_epoch_end(train_outputs)

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        network = self._sam_network()
        checkpoint = {
            "network_weights": fine_tuned_weights(network),
            "autosam": identity_of(network, self.configuration_manager.data_identifier),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": _plain(self.logger.get_checkpoint()),
            "_best_ema": _plain(self._best_ema),
            "current_epoch": self.current_epoch + 1,
            "init_args": _plain(self.my_init_kwargs),
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": _plain(self.inference_allowed_mirroring_axes),
            "rng_state": rng_state(),  # saved at the epoch's end: what the next epoch starts from
        }
        atomic_torch_save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = load_fold_checkpoint(checkpoint, map_location=self.device)
        network = self._sam_network()
        source = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "checkpoint"
        check_identity(checkpoint.get("autosam"), identity_of(network, self.configuration_manager.data_identifier),
                       source)
        network.load_state_dict(checkpoint["network_weights"])
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get(
            "inference_allowed_mirroring_axes", self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        self._rng_state_to_restore = checkpoint.get("rng_state")

    def on_train_start(self) -> None:
        super().on_train_start()
        # after nnU-Net's loaders took their first batch, as in the run that wrote the checkpoint (rank 0's
        # states: other DDP ranks keep the streams of their own that seeding gave them)
        if self._rng_state_to_restore is not None and self.local_rank == 0:
            restore_rng_state(self._rng_state_to_restore)
            self._rng_state_to_restore = None
