"""One training on several processes: nnU-Net's DDP with autosam's trainer, two CPU processes over gloo."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import autosam.trainers.sam_trainer as sam_trainer
from autosam.cli import main
from autosam.errors import AutosamError
from autosam.experiments.demo import DEMO_DATASET
from autosam.paths import Dataset
from autosam.sam.memory import nnunet_loss
from autosam.sam.model import build_network
from autosam.sam.setups import Setup
from autosam.trainers.distributed import check_world, launch
from autosam.trainers.fold_training import Budget, train_one

EPOCHS, ITERATIONS = 2, 2


def _train_rank(dataset: Dataset, out: str) -> None:
    """One rank: autosam's per-fold training (the same call as a single process), then what this rank holds."""
    written = []
    save = sam_trainer.atomic_torch_save

    def recording(obj, path) -> None:  # a spy: the checkpoint is still written by the real function
        written.append(Path(path).name)
        save(obj, path)

    sam_trainer.atomic_torch_save = recording
    trainer = train_one(dataset, "0", sam_trainer.nnUNetTrainerSAM, Budget(EPOCHS, ITERATIONS), torch.device("cpu"),
                        False, False, False, 0)
    network = trainer._sam_network()
    torch.save({"params": {n: p.detach().clone() for n, p in network.named_parameters() if p.requires_grad},
                "written": written, "wrapper": type(trainer.network).__name__, "device": str(trainer.device),
                "batch": trainer.batch_size}, Path(out) / f"rank{dist.get_rank()}.pt")


def test_ddp_on_two_cpu_processes_keeps_ranks_equal_and_rank_0_writes(planned_demo, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ranks"
    out.mkdir()
    launch(2, torch.device("cpu"), _train_rank, Dataset.resolve("901"), str(out))
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # nnU-Net's DDP path ran: the network wrapped, the global batch of 2 split into 1 per rank, on the CPU
    assert [(r["wrapper"], r["device"], r["batch"]) for r in ranks] == [("DistributedDataParallel", "cpu", 1)] * 2
    # after EPOCHS x ITERATIONS steps on different patches the ranks hold the same weights (gradients averaged)
    assert ranks[0]["params"].keys() == ranks[1]["params"].keys()
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
    fold = planned_demo["nnUNet_results"] / DEMO_DATASET / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert final["current_epoch"] == EPOCHS
    saved = {n: v for n, v in final["network_weights"].items() if n in ranks[0]["params"]}
    assert saved.keys() == ranks[0]["params"].keys()
    assert all(torch.equal(saved[n], ranks[0]["params"][n]) for n in saved)  # the checkpoint is what the ranks hold
    # every checkpoint is written once, by rank 0; rank 1 writes none
    assert ranks[1]["written"] == [] and ranks[0]["written"].count("checkpoint_final.pth") == 1
    assert sorted(p.name for p in fold.glob("checkpoint_*.pth")) == ["checkpoint_best.pth", "checkpoint_final.pth"]
    assert not list(fold.glob(".*.tmp")) and (fold / "validation" / "summary.json").is_file()

    capsys.readouterr()  # nnU-Net can only split a batch into one patch per rank or more: refused before spawning
    assert main(["train", "-d", "901", "-f", "1", "--device", "cpu", "--gpus", "3"]) == 2
    assert "--gpus 3: the global batch size is 2, and each GPU needs at least one patch" in capsys.readouterr().err
    with pytest.raises(AutosamError, match="batch size 3 does not split evenly over 2 processes.*--batch-size 2"):
        check_world(2, torch.device("cpu"), 3, cpu_asked=True)  # unequal shares stop nnU-Net's batch Dice
    if not torch.cuda.is_available():  # GPUs asked for, none there: CPU processes only when asked for
        assert main(["train", "-d", "901", "-f", "1", "--gpus", "2"]) == 2
        assert "--gpus 2: no CUDA GPU is visible to torch; add --device cpu" in capsys.readouterr().err


@pytest.mark.parametrize("backbone", ["test_vit", "test_tiny_vit", "test_hiera"])
def test_every_trainable_tensor_gets_a_gradient(backbone: str) -> None:
    """Why DDP runs without find_unused_parameters: no set-up leaves a trainable tensor out of the loss (the
    frozen prompt encoder, IoU head and TinyViT classifier, SAM 2.1's video modules do not count: DDP skips frozen
    tensors)."""
    # two channels: the learnable channel mixer in front of the encoder
    for scope, method, channels in itertools.product(("dec", "encdec"), ("vanilla", "adapter", "lora"), (1, 2)):
        network = build_network(Setup.parse(f"{backbone}_{scope}_{method}"), 64, 2, channels)
        image, target = torch.randn(2, channels, 64, 64), torch.randint(0, 2, (2, 1, 64, 64))
        nnunet_loss()(network(image), target).backward()
        trainable = [n for n, p in network.named_parameters() if p.requires_grad]
        assert trainable and not [n for n, p in network.named_parameters() if p.requires_grad and p.grad is None]
