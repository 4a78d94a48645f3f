"""Interrupted training resumes: SIGKILL mid-epoch, then --continue ends as the uninterrupted run ends."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autosam.cli import main
from autosam.errors import AutosamError
from autosam.experiments.demo import DEMO_DATASET
from autosam.trainers.fold_training import fold_lock
from autosam.trainers.sam_trainer import nnUNetTrainerSAM

EPOCHS = 5
# On a CPU with augmentation in the main process (the default on up to 4 cores) a continued run draws the
# same batches and augmentations as one that never stopped; what differs is float32 rounding (vectorised
# reductions depend on memory alignment, ~1e-7). Without the generators' states the second epoch's loss
# already differs by ~2e-2.
RESUME_TOLERANCE = 1e-4


def test_kill_then_continue_ends_with_the_weights_of_an_uninterrupted_run(planned_demo) -> None:
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_encdec_lora", "--image-size", "64",
                 "--from-scratch", "--iterations", "6"]) == 0
    fold = planned_demo["nnUNet_results"] / DEMO_DATASET / "nnUNetTrainerSAM__autosamPlans__2d_sam" / "fold_0"
    train = ["train", "-d", "901", "-f", "0", "--device", "cpu", "--epochs", str(EPOCHS), "--seed", "7"]
    assert main(train) == 0
    uninterrupted = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    shutil.rmtree(fold)

    process = subprocess.Popen([sys.executable, "-m", "autosam", *train], env=dict(os.environ),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (fold / "checkpoint_latest.pth").is_file():  # the first epoch is saved
        assert process.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.2)
    time.sleep(0.5)  # now inside a later epoch
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and not (fold / "checkpoint_final.pth").exists(), "finished before the kill"
    killed = torch.load(fold / "checkpoint_latest.pth", weights_only=True)
    saved = killed["current_epoch"]
    assert 1 <= saved < EPOCHS

    assert main([*train, "--continue"]) == 0
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    # continued, not restarted: the saved epochs are kept as they were (a restart would train them again, at
    # other times) and the optimiser counts every step once
    assert final["current_epoch"] == EPOCHS and len(final["logging"]["train_losses"]) == EPOCHS
    assert final["logging"]["epoch_start_timestamps"][:saved] == killed["logging"]["epoch_start_timestamps"][:saved]
    assert {int(state["step"]) for state in final["optimizer_state"]["state"].values()} == {EPOCHS * 6}
    # ... and it ends where the run that never stopped ended: the same losses, the same weights
    assert np.allclose(final["logging"]["train_losses"], uninterrupted["logging"]["train_losses"], rtol=0,
                       atol=RESUME_TOLERANCE)
    weights, reference = final["network_weights"], uninterrupted["network_weights"]
    assert weights.keys() == reference.keys()
    difference = max((weights[k].float() - reference[k].float()).abs().max().item() for k in weights)
    print(f"killed after epoch {saved}, continued: largest weight difference to the uninterrupted run {difference:.1e}")
    assert difference <= RESUME_TOLERANCE
    assert not list(fold.glob("*.tmp")) and not list(fold.glob(".*.tmp"))
    assert (fold / "validation" / "summary.json").is_file()


def test_a_second_process_on_the_same_fold_is_refused(tmp_path: Path) -> None:
    with fold_lock(tmp_path):
        child = subprocess.run([sys.executable, "-c", "from pathlib import Path; from autosam.trainers.fold_training import "
                                f"fold_lock\nwith fold_lock(Path({str(tmp_path)!r})): pass"],
                               capture_output=True, text=True)
        assert child.returncode != 0 and "another autosam process" in child.stderr
    with fold_lock(tmp_path):  # released: usable again
        pass
    with pytest.raises(AutosamError):
        with fold_lock(tmp_path):
            with fold_lock(tmp_path):  # flock is per open file: a second open in one process is refused too
                pass


def test_out_of_memory_is_answered_with_what_to_change(planned_demo, monkeypatch, capsys) -> None:
    assert main(["plan-and-preprocess", "-d", "901", "--setup", "test_vit_dec_lora", "--image-size", "64",
                 "--from-scratch", "--batch-size", "4"]) == 0

    def out_of_memory(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(nnUNetTrainerSAM, "run_training", out_of_memory)
    assert main(["train", "-d", "901", "-f", "0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "ran out of memory at batch 4" in err and "--batch-size 2" in err and "Traceback" not in err
