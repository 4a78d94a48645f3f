"""One training on several GPUs (or CPU processes): torch DDP through nnU-Net's own DDP code.

nnU-Net's trainer does the distributed work itself once a process group exists: it splits the global batch
and the foreground oversampling over the ranks, wraps the network in ``DistributedDataParallel``, gathers the
Dice terms and the logged losses, writes logs and checkpoints on rank 0 only, and shares the validation cases
between the ranks. What ``nnunetv2.run.run_training.run_ddp`` adds — spawning one process per GPU and the
process group — is done here instead, because run_ddp looks the trainer up by name, always takes NCCL and
CUDA, and builds the trainer without autosam's budget, seed and fold lock. Each rank runs the same per-fold
function as a single-process training (``fold_training.train_folds``).

Two seams, both for a CPU process group (gloo), which nnU-Net does not support: nnU-Net moves every DDP rank
to ``cuda:<rank>`` (``nnUNetTrainerSAM.__init__`` keeps the CPU), and wraps the network as
``DDP(network, device_ids=[rank])``, a GPU-only call (``cpu_ddp_wrapper`` drops ``device_ids``). On CUDA
both are nnU-Net's own. ``find_unused_parameters`` stays off as in nnU-Net: frozen weights are not
DDP's business, and every trainable tensor of every set-up gets a gradient in each step (tested).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.run.run_training import find_free_network_port

from autosam.errors import AutosamError


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(rank: int, world_size: int, device_type: str) -> Iterator[None]:
    """This process as ``rank`` of ``world_size`` (MASTER_ADDR/MASTER_PORT from the environment)."""
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend_for(device_type), rank=rank, world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def cpu_ddp_wrapper(device: torch.device) -> Iterator[None]:
    """While nnU-Net's ``initialize`` runs: on a CPU, its ``DDP(network, device_ids=[rank])`` without the
    GPU-only ``device_ids``. Nothing changes on CUDA or outside a process group."""
    if device.type == "cuda" or not (dist.is_available() and dist.is_initialized()):
        yield
        return
    original = nnunet_trainer.DDP

    def wrap(module, device_ids=None, **options):
        return original(module, **options)

    nnunet_trainer.DDP = wrap
    try:
        yield
    finally:
        nnunet_trainer.DDP = original


def check_world(world_size: int, device: torch.device, batch_size: int, cpu_asked: bool = False) -> None:
    """Refuse, before any process starts, what nnU-Net's DDP would stop on later, and CPU processes nobody
    asked for (``cpu_asked``: ``--device cpu`` was given)."""
    if world_size < 1:
        raise AutosamError(f"--gpus {world_size}: give 1 or more processes")
    if world_size < 2:
        return
    if device.type == "cpu" and not cpu_asked:
        raise AutosamError(f"--gpus {world_size}: no CUDA GPU is visible to torch; add --device cpu to train on "
                           f"{world_size} CPU processes instead (gloo)")
    if device.type == "cuda" and torch.cuda.device_count() < world_size:
        raise AutosamError(f"--gpus {world_size}: only {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                           "give at most that many (CUDA_VISIBLE_DEVICES decides which)")
    if batch_size < world_size:
        raise AutosamError(f"--gpus {world_size}: the global batch size is {batch_size}, and each GPU needs at least "
                           f"one patch; re-plan with --batch-size {world_size} or more, or use fewer GPUs")
    if batch_size % world_size:
        # nnU-Net would give the ranks unequal batches, and its batch Dice gathers every rank's per-image sums
        # with all_gather, which needs equal shapes: the ranks would stop at the first step
        even = batch_size - batch_size % world_size
        raise AutosamError(f"--gpus {world_size}: the global batch size {batch_size} does not split evenly over "
                           f"{world_size} processes (nnU-Net's distributed Dice needs equal shares); re-plan with "
                           f"--batch-size {even}, or use a number of GPUs that divides {batch_size}")


def _rank_main(rank: int, world_size: int, device_type: str, function: Callable, args: tuple) -> None:
    with process_group(rank, world_size, device_type):
        if device_type == "cpu":  # the ranks share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        function(*args)


def launch(world_size: int, device: torch.device, function: Callable, *args) -> None:
    """``function(*args)`` in ``world_size`` spawned processes joined in one process group (NCCL on CUDA, gloo
    on a CPU). ``function`` must be importable (spawned processes import it); a rank's AutosamError comes back
    as one."""
    os.environ.setdefault("MASTER_ADDR", "localhost")
    chosen_port = "MASTER_PORT" not in os.environ
    if chosen_port:
        os.environ["MASTER_PORT"] = str(find_free_network_port())
    try:
        mp.spawn(_rank_main, args=(world_size, device.type, function, args), nprocs=world_size, join=True)
    except mp.ProcessRaisedException as e:
        last = str(e).strip().splitlines()[-1]
        prefix = f"{AutosamError.__module__}.{AutosamError.__name__}: "
        if last.startswith(prefix):
            raise AutosamError(last[len(prefix):]) from None
        raise
    finally:
        if chosen_port:  # a later launch picks a free port again
            del os.environ["MASTER_PORT"]

