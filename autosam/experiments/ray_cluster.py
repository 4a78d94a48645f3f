"""Fan-out on Ray: each fold job of ``run`` / ``ablate`` / few-shot is one Ray task, with the resources it needs.

A task asks for one GPU (on CUDA) or none, one CPU plus nnU-Net's augmentation workers, and the memory the
planner's estimator predicts for it; a job that no node of the cluster could ever hold is refused before
anything is submitted. Tasks write into the same nnU-Net folders as a serial run (the nnUNet_* variables
reach the workers through the task's ``runtime_env``; on a cluster the folders must be on storage every node
mounts), Ray retries a failed task once (``max_retries=1``, ``retry_exceptions``), and a job that fails twice
is returned to the caller, which names it in its report. Without an address a local Ray instance sized to this
machine is started and stopped again; an instance already running in this process (``ray.init`` by the
caller) is used as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import torch
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.paths import configure_training_processes
from autosam.plans import SAM_CONFIGURATION, read_plans
from autosam.sam.memory import estimate_training_memory
from autosam.sam.network import estimated_precision
from autosam.trainers.fold_jobs import FoldJob, SerialExecutor

log = logging.getLogger(__name__)
INSTALL_HINT = "--ray needs Ray: pip install 'autosam[ray]'"
# autosam's allowance for a training process beside what the estimator predicts for the step: the Python
# process with torch and nnU-Net loaded and the loader's queue, and each augmentation worker.
PROCESS_GB, AUGMENTATION_WORKER_GB = 2.0, 1.0
# nnU-Net's planner sizes its U-Net configurations for this much GPU memory (ExperimentPlanner's default).
NNUNET_TARGET_GB = 8.0
FORWARDED = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc", "nnUNet_n_proc_DA",
             "nnUNet_compile", "nnUNet_extTrainer")
GIB = 2**30


def import_ray():
    try:
        import ray  # optional dependency: imported only where --ray asks for it
    except ImportError:
        raise AutosamError(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class Resources:
    cpus: int
    gpus: int
    memory_gb: float  # host memory, Ray's "memory" resource
    gpu_memory_gb: float | None  # predicted for the GPU; None without a GPU

    def ray_options(self) -> dict:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "memory": int(self.memory_gb * GIB)}

    def text(self) -> str:
        gpu = f"1 GPU with {self.gpu_memory_gb:.1f} GB, " if self.gpus else ""
        return f"{gpu}{self.cpus} CPU(s), {self.memory_gb:.1f} GB of memory"


def _augmentation_workers(device: torch.device) -> int:
    if "nnUNet_n_proc_DA" in os.environ:
        return int(os.environ["nnUNet_n_proc_DA"])
    if device.type == "cpu":
        return 0  # autosam's CPU default on small machines (paths.configure_training_processes)
    return get_allowed_n_proc_DA()


def predicted_gb(job: FoldJob) -> float:
    """The estimator's peak for a SAM job (as the planner predicts it), nnU-Net's target for a baseline."""
    training = job.training
    if training.configuration != SAM_CONFIGURATION:
        return NNUNET_TARGET_GB
    plans = PlansManager(read_plans(job.dataset, training.plans))
    configuration = plans.get_configuration(SAM_CONFIGURATION)
    plan = training.trainer_cls.plan_for(configuration)
    dataset_json = json.loads((job.dataset.preprocessed / "dataset.json").read_text())
    classes = plans.get_label_manager(dataset_json).num_segmentation_heads
    channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    estimate = estimate_training_memory(
        plan.setup, plan.image_size, training.budget.batch_size or configuration.batch_size, classes, channels,
        tuple(configuration.patch_size), plan.gradient_checkpointing, job.device.type,
        estimated_precision(plan.precision, job.device.type))
    return estimate.peak_gb


def resources_for(job: FoldJob) -> Resources:
    workers = _augmentation_workers(job.device)
    predicted = predicted_gb(job)
    host = PROCESS_GB + AUGMENTATION_WORKER_GB * workers
    if job.device.type == "cuda":
        return Resources(1 + workers, 1, host, predicted)
    return Resources(1 + workers, 0, host + predicted, None)


def check_fits(needs: dict[FoldJob, Resources], nodes: list[dict], gpu_memory_gb: float | None) -> None:
    """One line for the first job that no node can hold, before anything is submitted."""
    for job, need in needs.items():
        if need.gpu_memory_gb is not None and gpu_memory_gb is not None and need.gpu_memory_gb > gpu_memory_gb:
            raise AutosamError(f"{job.name}: needs {need.gpu_memory_gb:.1f} GB of GPU memory (predicted), the "
                               f"GPUs have {gpu_memory_gb:g} GB; leave it out or re-plan (smaller --batch-size or "
                               "--image-size)")
        if not any(node.get("CPU", 0) >= need.cpus and node.get("GPU", 0) >= need.gpus
                   and node.get("memory", 0) >= need.memory_gb * GIB for node in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("memory", 0)), default={})
            raise AutosamError(
                f"{job.name}: needs {need.text()}, and no node of the Ray cluster has that (the largest: "
                f"{largest.get('GPU', 0):g} GPU(s), {largest.get('CPU', 0):g} CPU(s), "
                f"{largest.get('memory', 0) / GIB:.1f} GB); add such a node, or leave the set-up out")


def train_task(job: FoldJob, cpus: int) -> dict:
    """One Ray task: the same ``FoldJob.run`` as a serial run, with this task's share of the node's cores."""
    import ray  # in the task's process: Ray is an optional dependency

    started = time.time()
    configure_training_processes(job.device.type)
    torch.set_num_threads(max(1, cpus - _augmentation_workers(job.device)))
    trained = job.run()
    return {"trained": trained, "seconds": time.time() - started, "node": ray.util.get_node_ip_address()}


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    lines = [line for line in str(cause).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__


class RayExecutor:
    """Jobs as Ray tasks; ``address`` "" starts a local instance sized to this machine."""

    def __init__(self, address: str, gpu_memory_gb: float | None = None) -> None:
        ray = import_ray()
        self.ray = ray
        self.owns = not ray.is_initialized()
        if self.owns:
            log.info("Ray: %s", f"connecting to {address}" if address else "starting a local instance")
            try:
                ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise AutosamError(f"--ray {address}: cannot reach {where} ({str(e).strip().splitlines()[0]}); "
                                   "check the head's address and port (ray status on the head), or omit the "
                                   "address to run locally") from None
        if gpu_memory_gb is None and torch.cuda.is_available():
            gpu_memory_gb = torch.cuda.get_device_properties(0).total_memory / GIB
        self.gpu_memory_gb = gpu_memory_gb  # None: unknown, GPU memory is not checked

    def device(self, requested: str | None) -> torch.device:
        gpus = self.ray.cluster_resources().get("GPU", 0)
        if requested and requested.startswith("cuda") and not gpus:
            raise AutosamError(f"--device {requested}: the Ray cluster has no GPU; use --device cpu or add GPU nodes")
        # Ray gives each task its GPU: cuda:N names no device on the cluster's nodes
        return torch.device("cuda" if (requested in (None, "auto") or requested.startswith("cuda")) and gpus else "cpu")

    def run(self, jobs: list[FoldJob]) -> dict[FoldJob, str]:
        ray = self.ray
        needs = {job: resources_for(job) for job in jobs}
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        check_fits(needs, nodes, self.gpu_memory_gb)
        if self.gpu_memory_gb is None and any(need.gpus for need in needs.values()):
            log.warning("Ray: the GPUs' memory is unknown here, so the predicted GPU memory of each job is not "
                        "checked; give it with --gpu-memory GB")
        env = {name: os.environ[name] for name in os.environ if name in FORWARDED or name.startswith("AUTOSAM_")}
        task = ray.remote(train_task)
        pending = {}
        for job in jobs:
            need = needs[job]
            ref = task.options(**need.ray_options(), max_retries=1, retry_exceptions=True,
                               runtime_env={"env_vars": env}, name=job.name).remote(job, need.cpus)
            pending[ref] = job
            log.info("Ray: submitted %s (%s)", job.name, need.text())
        failed: dict[FoldJob, str] = {}
        with tqdm(total=len(jobs), desc="trainings", unit="task") as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                    state = "trained" if result["trained"] else "already done"
                    log.info("Ray: %s %s in %.0f s on %s", job.name, state, result["seconds"], result["node"])
                except ray.exceptions.RayError as e:
                    failed[job] = _first_line(e)
                    log.warning("Ray: %s failed twice (tried again once): %s", job.name, failed[job])
                bar.update(1)
        return failed

    def close(self) -> None:
        if self.owns:
            self.ray.shutdown()


def executor_for(ray_address: str | None, gpu_memory_gb: float | None = None) -> SerialExecutor | RayExecutor:
    """Serial without ``--ray``; else Ray at ``ray_address`` ("" starts a local instance). ``gpu_memory_gb``:
    the cluster's GPU memory, against which Ray jobs are checked (None: this machine's GPU, if any)."""
    return SerialExecutor() if ray_address is None else RayExecutor(ray_address, gpu_memory_gb)
