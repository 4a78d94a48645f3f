"""Choose the SAM set-up and its numbers from dataset facts and the machine, with a reason for every field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from nnunetv2.utilities.dataset_name_id_conversion import convert_dataset_name_to_id
from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.planners.fingerprint import DatasetFacts
from autosam.planners.hardware import Hardware
from autosam.planners.rules import RULES, cite, set_by_user
from autosam.planners.step_cost import embedding_cache_reason, iteration_gflops
from autosam.sam.costs import meta_network
from autosam.sam.memory import ALLOCATOR_OVERHEAD, CUDA_CONTEXT_BYTES, GIB, estimate_training_memory
from autosam.sam.network import bf16_hardware, estimated_precision
from autosam.sam.registry import FAMILY_BACKBONES, IMAGE_SIZE_STEP, family_backbones, get_backbone
from autosam.sam.setups import DEFAULT_LORA_RANK, Setup, all_setups
from autosam.sam.weights.catalogue import CATALOGUE, RANDOM_START, checkpoint_backbone

MEMORY_HEADROOM = 0.9  # R17
CPU_MEMORY_SHARE = 0.5  # a CPU run shares RAM with data loading and the system
MIN_BATCH, MAX_BATCH = 2, 8  # R11
LARGE_DATA_SLICES = 1000  # R4
VANILLA_ENCODER_MIN_SLICES = 500  # R7
FEW_SHOT_CASES = 50  # R20
FEW_SHOT_CURVE = (1, 2, 5, 10, 20)  # R20: the K values suggested for 'autosam run --train-cases'
ITERATIONS_PER_EPOCH = 250  # nnU-Net's epoch
PASSES, MIN_ITERATIONS, MAX_ITERATIONS = 200, 2500, 50000  # R15
PEFT_LEARNING_RATE, FULL_ENCODER_LEARNING_RATE = 1e-3, 1e-4  # R13


@dataclass
class Candidate:
    setup: Setup
    predicted_memory_gb: float
    gradient_checkpointing: bool
    fits: bool
    excluded: str | None = None  # a rule that rules it out whatever the memory
    why_not: str = ""
    step_gflops: float | None = None  # training compute per image and iteration (step_cost.py)

    def to_dict(self) -> dict:
        return {"name": self.setup.name, "predicted_memory_gb": round(self.predicted_memory_gb, 2),
                "fits": self.fits, "gradient_checkpointing": self.gradient_checkpointing,
                "why_not": self.why_not, "step_gflops": self.step_gflops}


@dataclass
class Choice:
    setup: Setup
    image_size: int
    batch_size: int
    gradient_checkpointing: bool
    predicted_memory_gb: float
    base_checkpoint: str | None  # catalogue name; None with --from-scratch
    learning_rate: float
    num_epochs: int
    iterations_per_epoch: int
    reasons: dict[str, str]
    overridden: list[str]
    warnings: list[str]
    candidates: list[Candidate] = field(default_factory=list)


def learning_rate_for(setup: Setup) -> float:
    """R13: the lower rate when every encoder weight trains."""
    return FULL_ENCODER_LEARNING_RATE if setup.trains_whole_encoder else PEFT_LEARNING_RATE


def learning_rate_reason(setup: Setup) -> str:
    return f"{learning_rate_for(setup):g} for {setup.name} ({cite('R13')})"


def default_image_size(facts: DatasetFacts, hardware: Hardware) -> tuple[int, str]:
    if hardware.device == "cpu":
        return 256, cite("R10") + " (CPU: 256 px keeps a step under a second with ViT-T)"
    longest = max(facts.median_slice_shape)
    size = min(1024, max(256, math.ceil(longest / IMAGE_SIZE_STEP) * IMAGE_SIZE_STEP))
    return size, f"median slice {facts.median_slice_shape} -> {size} px ({cite('R10')})"


def in_domain_checkpoints(facts: DatasetFacts) -> dict[str, str]:
    """R19: 'autosam pretrain' checkpoints present whose recorded modality is the dataset's, name -> backbone.
    One pretrained from random weights is never preferred to SAM's own (the study continues SAM's pretraining);
    ``--checkpoint NAME`` still uses it. One whose lineage saw an image of the dataset (or whose images were not
    recorded) is never chosen: SAM would be validated on images it was trained on (``seen_checkpoints``)."""
    return {name: e["backbone"] for name, e in _of_the_modality(facts).items() if not e.get("seen")}


def seen_checkpoints(facts: DatasetFacts) -> dict[str, str]:
    """R19's candidates left out because their lineage saw images of the dataset: name -> what it saw."""
    return {name: e["seen"] for name, e in _of_the_modality(facts).items() if e.get("seen")}


def _of_the_modality(facts: DatasetFacts) -> dict[str, dict]:
    if facts.modality in ("mixed", "unknown"):
        return {}
    return {name: e for name, e in sorted(facts.pretrained_checkpoints.items())
            if e.get("modality") == facts.modality and e.get("started_from") != RANDOM_START}


def family_for(facts: DatasetFacts, options, fixed_backbone: str | None) -> tuple[str, str]:
    """R28: the family the set-ups come from, and why."""
    if options.setup or fixed_backbone:
        backbone = fixed_backbone or Setup.parse(options.setup).backbone
        return get_backbone(backbone).family, set_by_user("--setup" if options.setup else "--checkpoint")
    if options.family:
        return options.family, set_by_user(f"--family {options.family}") + (
            "; both families, SAM's first" if options.family == "all" else "")
    present = {family: [n for n in facts.checkpoints_present if n in CATALOGUE
                        and get_backbone(CATALOGUE[n].backbone).family == family] for family in FAMILY_BACKBONES}
    if present["sam2"] and not present["sam"] and not options.from_scratch:
        return "sam2", f"SAM 2.1: its weights ({', '.join(present['sam2'])}) are the only official ones present ({cite('R28')})"
    return "sam", f"SAM, the study's family ({cite('R28')})"


def backbone_order(facts: DatasetFacts, hardware: Hardware, ssl: bool, pretrained: str | None = None,
                   family: str = "sam") -> list[str]:
    """``pretrained``: the backbone of an in-domain self-supervised checkpoint (R19), first on a GPU. SAM 2.1's
    sizes take the places of ViT-T, ViT-B and ViT-H (R28); "all": SAM's order, then SAM 2.1's."""
    if family == "all":
        return [b for f in FAMILY_BACKBONES for b in backbone_order(facts, hardware, ssl, pretrained, f)]
    small, base, large = FAMILY_BACKBONES[family]
    pretrained = pretrained if pretrained in FAMILY_BACKBONES[family] else None
    if hardware.device == "cpu":
        return [small, base, large]
    if pretrained:
        return [pretrained] + [b for b in (base, small, large) if b != pretrained]
    if ssl and family == "sam":
        return [base, small, large]
    if facts.num_foreground_slices >= LARGE_DATA_SLICES:
        return [large, base, small]
    return [base, small, large]


def _budget_bytes(hardware: Hardware) -> float:
    share = MEMORY_HEADROOM if hardware.device == "cuda" else CPU_MEMORY_SHARE
    return hardware.memory_gb * GIB * share


def _estimate(setup: Setup, size: int, batch: int, shape: dict, hardware: Hardware, checkpointing: bool) -> float:
    # the patch the trainer will see: SAM-sized (sam_planner.sam_sized) unless --native-patches
    patch = shape["patch"] if shape["native_patches"] else tuple(min(p, size) for p in shape["patch"])
    return estimate_training_memory(setup, size, batch, shape["num_classes"], shape["channels"], patch,
                                    checkpointing, hardware.device, estimated_precision("bf16", hardware.device)).peak


def precision_here(hardware: Hardware) -> str:
    """The planned hardware's precision, in words."""
    if hardware.device == "cuda":
        return "bf16 on the planned GPU if it is Ampere or later, else nnU-Net's fp16 autocast with loss scaling"
    return f"{bf16_hardware(torch.device('cpu'))}: {estimated_precision('bf16', 'cpu')}"


def evaluate(setup: Setup, size: int, shape: dict, hardware: Hardware) -> Candidate:
    """Memory at the batch-size floor, with gradient checkpointing only if it is needed to fit."""
    budget = _budget_bytes(hardware)
    plain = _estimate(setup, size, MIN_BATCH, shape, hardware, False)
    if plain <= budget:
        return Candidate(setup, plain / GIB, False, True)
    checkpointed = _estimate(setup, size, MIN_BATCH, shape, hardware, True)
    return Candidate(setup, checkpointed / GIB, True, checkpointed <= budget)


def _weight_bytes(backbone: str, size: int, shape: dict) -> int:
    """The base network's parameters and buffers: every set-up of ``backbone`` holds at least these."""
    network = meta_network(Setup(backbone, "dec", "vanilla"), size, shape["num_classes"], shape["channels"])
    return sum(t.numel() * t.element_size() for t in (*network.parameters(), *network.buffers()))


def refuse_impossible_memory(pool: list[Setup], size: int, shape: dict, hardware: Hardware, dataset: str) -> None:
    """Before the candidates are probed: when the lightest backbone's weights alone (with the CUDA context) exceed
    the budget, nothing fits. One line naming the flag and the memory the lightest set-up needs at ``size`` (the
    smallest image size) and the smallest batch, from one probe."""
    weights = {b: _weight_bytes(b, size, shape) for b in dict.fromkeys(s.backbone for s in pool)}
    lightest = min(weights, key=weights.get)
    floor = weights[lightest] * ALLOCATOR_OVERHEAD + CUDA_CONTEXT_BYTES if hardware.device == "cuda" else weights[lightest]
    if floor <= _budget_bytes(hardware):
        return
    # its lightest set-up: decoder-only before encoder updates, LoRA before adapters before vanilla
    setup = min((s for s in pool if s.backbone == lightest),
                key=lambda s: (s.scope != "dec", ("lora", "adapter", "vanilla").index(s.method)))
    needed = evaluate(setup, size, shape, hardware)
    cuda = hardware.device == "cuda"
    fix = (f"give --gpu-memory {math.ceil(needed.predicted_memory_gb / MEMORY_HEADROOM)} or more" if cuda else
           f"plan on a machine with {math.ceil(needed.predicted_memory_gb / CPU_MEMORY_SHARE)} GB of RAM or more")
    raise AutosamError(
        f"{dataset}: no set-up fits {hardware.description}: {lightest}'s weights alone"
        + (" and the CUDA context" if cuda else "")
        + f" need {floor / GIB:.2f} GB of the {_budget_bytes(hardware) / GIB:.2f} GB usable; the lightest set-up, "
        f"{setup.name} at {size} px with batch {MIN_BATCH}, needs about {needed.predicted_memory_gb:.1f} GB ({fix})")


def choose(facts: DatasetFacts, hardware: Hardware, num_classes: int, channels: int, patch: tuple[int, int],
           options) -> Choice:
    """``options``: a ``autosam.planners.sam_planner.SamOptions`` (user overrides)."""
    shape = {"num_classes": num_classes, "channels": channels, "patch": tuple(patch),
             "native_patches": options.native_patches}
    reasons: dict[str, str] = {}
    overridden: list[str] = []
    warnings: list[str] = []
    ssl = facts.modality == "MR" and "ssl_mri_vit_b" in facts.checkpoints_present and not options.from_scratch
    own = {} if options.from_scratch or options.checkpoint else in_domain_checkpoints(facts)  # R19

    if options.image_size:
        sizes, overridden = [options.image_size], overridden + ["image_size"]
        reasons["image_size"] = set_by_user("--image-size")
    else:
        start, reasons["image_size"] = default_image_size(facts, hardware)
        sizes = list(range(start, 255, -IMAGE_SIZE_STEP))  # smaller only when nothing fits (monotonic in memory)

    # a checkpoint given without a set-up decides the backbone: its weights fit no other
    fixed_backbone = (checkpoint_backbone(options.checkpoint, options.checkpoint_dir)
                      if options.checkpoint and not options.setup else None)
    family, reasons["family"] = family_for(facts, options, fixed_backbone)
    if options.family or options.setup or fixed_backbone:
        overridden.append("family")
    order = backbone_order(facts, hardware, ssl, next(iter(own.values()), None), family)
    if family == "sam2" and "family" not in overridden:  # chosen for the weights present: those sizes first
        present = {CATALOGUE[n].backbone for n in facts.checkpoints_present if n in CATALOGUE}
        order = sorted(order, key=lambda b: b not in present)
    rank = lambda c: (c.setup.scope != "encdec", ("lora", "adapter", "vanilla").index(c.setup.method),
                      order.index(c.setup.backbone) if c.setup.backbone in order else len(order))
    rank_option = {} if options.lora_rank is None else {"lora_rank": options.lora_rank,
                                                         "lora_alpha": float(options.lora_rank)}
    pool = [Setup.parse(options.setup, **rank_option)] if options.setup else [
        Setup(s.backbone, s.scope, s.method, **rank_option)
        for s in all_setups((fixed_backbone,) if fixed_backbone else family_backbones(family))]
    if options.setup:
        overridden.append("setup")
    scratch_only = options.from_scratch and not options.setup  # R18
    possible = [s for s in pool if get_backbone(s.backbone).min_image_size <= sizes[-1]]
    if possible:
        refuse_impossible_memory(possible, sizes[-1], shape, hardware, facts.dataset)

    def candidates_at(size: int) -> list[Candidate]:
        todo = [s for s in pool if get_backbone(s.backbone).min_image_size <= size]
        candidates = [evaluate(s, size, shape, hardware) for s in
                      tqdm(todo, desc=f"memory of {len(todo)} set-ups at {size} px", unit="set-up", leave=False,
                           disable=len(todo) < 2)]
        for c in candidates:
            full = c.setup.trains_whole_encoder
            if scratch_only and not full:
                c.excluded = (f"{RULES['R18'].label}: from scratch, only a vanilla encoder + decoder update "
                              "learns features")
            elif (full and not options.setup and not scratch_only
                    and facts.num_foreground_slices < VANILLA_ENCODER_MIN_SLICES):
                c.excluded = (f"{RULES['R7'].label}: {facts.num_foreground_slices} labelled slices < "
                              f"{VANILLA_ENCODER_MIN_SLICES}")
            elif full and not options.setup and not scratch_only and facts.num_cases < FEW_SHOT_CASES:
                c.excluded = f"{RULES['R20'].label}: {facts.num_cases} labelled cases < {FEW_SHOT_CASES}"
        return candidates

    for size in sizes:
        candidates = candidates_at(size)
        viable = sorted((c for c in candidates if c.fits and not c.excluded), key=rank)
        if viable and (viable[0].setup.trains_encoder or size == sizes[-1]):
            break
        if size == sizes[0] != sizes[-1] and not any(c.fits for c in candidates):
            smallest = candidates_at(sizes[-1])  # memory grows with the image size: when nothing fits at the
            if not any(c.fits for c in smallest):  # smallest either, the sizes between are not tried
                candidates, viable = smallest, []
                break
    if not candidates:  # the fixed set-up's backbone needs a larger input than the fixed size
        needs = get_backbone(pool[0].backbone).min_image_size
        raise AutosamError(f"--setup {pool[0].name} needs --image-size {needs} or more (its image encoder's "
                           f"smallest input), not {sizes[-1]}")
    if not viable:
        smallest = min(candidates, key=lambda c: c.predicted_memory_gb)
        raise AutosamError(
            f"{facts.dataset}: no set-up fits {hardware.description}; the smallest, {smallest.setup.name} at "
            f"{sizes[-1]} px with batch {MIN_BATCH}, needs about {smallest.predicted_memory_gb:.1f} GB "
            f"(give --gpu-memory {math.ceil(smallest.predicted_memory_gb / MEMORY_HEADROOM)} or more)")
    best = viable[0]
    for c in candidates:
        c.why_not = _why_not(c, best, facts, hardware)
        c.step_gflops = round(iteration_gflops(c.setup, size, num_classes, options.embedding_cache), 3)
    if size != sizes[0]:
        reasons["image_size"] += f"; reduced to {size} px so that an encoder update fits"
    setup = best.setup
    reasons["setup"] = _setup_reason(setup, facts, hardware, ssl, bool(options.setup),
                                     fixed_backbone and options.checkpoint)
    if not setup.trains_encoder:
        warnings.append(f"{setup.name}: only the mask decoder trains because no encoder update fits "
                        f"{hardware.description}; expect lower Dice ({RULES['R6'].evidence})")

    batch, checkpointing, memory = _batch_size(best, size, shape, hardware, facts, options)
    reasons["batch_size"] = (set_by_user("--batch-size") if options.batch_size else
                             f"largest in {MIN_BATCH}-{MAX_BATCH} that fits, at most a quarter of the labelled slices ({cite('R11')})")
    if options.batch_size:
        overridden.append("batch_size")
    reasons["gradient_checkpointing"] = (cite("R12") if checkpointing else
                                         f"not needed: the set-up fits without it ({RULES['R12'].label})")
    reasons["precision"] = ("bf16 autocast where the trainer runs on hardware that computes bf16 natively, a CUDA "
                            "GPU of compute capability 8 or later or a CPU with AVX512-BF16 or AMX (weights, "
                            "gradients and AdamW state stay fp32, no loss scaling); fp32 elsewhere "
                            f"({cite('R21')}); {precision_here(hardware)}")
    reasons["embedding_cache"] = embedding_cache_reason(setup, size, num_classes, options.embedding_cache)
    if not options.embedding_cache:
        overridden.append("embedding_cache")
    reasons["predicted_memory_gb"] = (f"meta-device activation probe x batch + weights, gradients, AdamW state "
                                      f"and transients, for {hardware.description} ({cite('R23')})")

    base = None
    if options.from_scratch:
        reasons["base_checkpoint"] = f"random initialisation, {set_by_user('--from-scratch')}"
        overridden.append("base_checkpoint")
    elif options.checkpoint:
        base = options.checkpoint
        reasons["base_checkpoint"] = set_by_user("--checkpoint")
        overridden.append("base_checkpoint")
    elif any(b == setup.backbone for b in own.values()):
        base = next(n for n, b in own.items() if b == setup.backbone)
        reasons["base_checkpoint"] = (f"{base}: self-supervised by 'autosam pretrain' on {facts.modality} images, "
                                      f"the dataset's modality ({cite('R19')})")
        if hardware.device != "cpu":
            reasons["setup"] += f"; {setup.backbone}: the backbone of {base} ({RULES['R19'].label})"
    elif ssl and setup.backbone == "vit_b":
        base = "ssl_mri_vit_b"
        reasons["base_checkpoint"] = f"MR data and the SSL MRI weights are present ({cite('R8')})"
    else:
        base = get_backbone(setup.backbone).checkpoint
        reasons["base_checkpoint"] = f"the official {setup.backbone} weights ({cite('R24')})"
    seen_given = facts.pretrained_checkpoints.get(options.checkpoint or "", {}).get("seen")
    if seen_given and not options.from_scratch:
        warnings.append(f"--checkpoint {options.checkpoint}: {seen_given}; 'autosam run' refuses this base unless "
                        "given --allow-seen-base")
    if not (options.from_scratch or options.checkpoint):
        warnings += [f"{name} is not used as the base ({RULES['R19'].label}): its lineage saw this dataset's images: "
                     f"{seen}" for name, seen in seen_checkpoints(facts).items()]
    if own and base not in own:
        warnings.append(f"{', '.join(own)} ({'/'.join(sorted(set(own.values())))}), self-supervised on "
                        f"{facts.modality} images, is not used: the planned backbone is {setup.backbone}")
    reasons["normalisation"] = cite("R9")

    learning_rate = learning_rate_for(setup)
    reasons["learning_rate"] = learning_rate_reason(setup)
    reasons["warmup_iterations"] = cite("R14")
    total = min(MAX_ITERATIONS, max(MIN_ITERATIONS, PASSES * max(1, facts.num_foreground_slices) // batch))
    epochs, iterations = math.ceil(total / ITERATIONS_PER_EPOCH), ITERATIONS_PER_EPOCH
    reasons["num_epochs"] = f"{total} iterations for {facts.num_foreground_slices} labelled slices ({cite('R15')})"
    if options.num_epochs:
        epochs, reasons["num_epochs"] = options.num_epochs, set_by_user("--epochs")
        overridden.append("num_epochs")
    reasons["iterations_per_epoch"] = f"nnU-Net's epoch of 250 iterations ({RULES['R15'].label})"
    if options.iterations_per_epoch:
        iterations, reasons["iterations_per_epoch"] = options.iterations_per_epoch, set_by_user("--iterations")
        overridden.append("iterations_per_epoch")
    reasons["lora_rank"] = (set_by_user("--lora-rank") if options.lora_rank else
                            f"rank {DEFAULT_LORA_RANK} with alpha = rank ({cite('R26')})")
    reasons["nnunet_baseline"] = cite("R16")
    if facts.num_cases < FEW_SHOT_CASES:
        reasons["few_shot"] = few_shot_reason(facts)
    for name in facts.tiny_targets:
        warnings.append(f"label '{name}' covers {100 * facts.median_foreground_fraction[name]:.2f}% of a case "
                        "(median): a tiny target; SAM's 1/4-resolution decoder may miss it, compare with nnU-Net")
    if "unknown" in facts.modalities:
        warnings.append(f"channel names {facts.channels} include an unknown modality; planned as generic images")
    return Choice(setup, size, batch, checkpointing, memory / GIB, base, learning_rate, epochs, iterations,
                  reasons, overridden, warnings, candidates)


def few_shot_reason(facts: DatasetFacts) -> str:
    """R20: the regime, and the command that measures it (K below a fold's training part under 5 folds)."""
    curve = " ".join(str(k) for k in FEW_SHOT_CURVE if k < 0.8 * facts.num_cases) or "1"
    return (f"{facts.num_cases} labelled cases < {FEW_SHOT_CASES}: the few-shot regime ({cite('R20')}); measure "
            f"where SAM stops helping: autosam run -d {convert_dataset_name_to_id(facts.dataset)} --train-cases {curve} --repeats 3")


def _batch_size(best: Candidate, size: int, shape: dict, hardware: Hardware, facts: DatasetFacts,
                options) -> tuple[int, bool, float]:
    budget = _budget_bytes(hardware)
    checkpointing = best.gradient_checkpointing
    if options.batch_size:
        return options.batch_size, checkpointing, _estimate(best.setup, size, options.batch_size, shape, hardware,
                                                            checkpointing)
    cap = max(MIN_BATCH, min(MAX_BATCH, facts.num_foreground_slices // 4))
    batch, memory = MIN_BATCH, _estimate(best.setup, size, MIN_BATCH, shape, hardware, checkpointing)
    for candidate in range(MIN_BATCH + 1, cap + 1):
        needed = _estimate(best.setup, size, candidate, shape, hardware, checkpointing)
        if needed > budget:
            break
        batch, memory = candidate, needed
    return batch, checkpointing, memory


def _setup_reason(setup: Setup, facts: DatasetFacts, hardware: Hardware, ssl: bool, user: bool,
                  checkpoint: str | None = None) -> str:
    """Why this set-up; ``_why_not`` says why each other candidate lost. ``checkpoint``: the user's
    --checkpoint, which decided the backbone."""
    if user:
        return set_by_user("--setup")
    if setup.trains_whole_encoder:
        parts = [cite("R18")]
    else:
        parts = [cite("R1") if setup.trains_encoder else cite("R6"), f"{RULES['R2'].choice}: {cite('R2')}"]
    _, base, large = FAMILY_BACKBONES[get_backbone(setup.backbone).family]
    name = _short_name(setup.backbone)
    if checkpoint:
        parts.append(f"{setup.backbone}: the backbone of --checkpoint {checkpoint}, whose weights fit no other")
    elif hardware.device == "cpu":
        parts.append(f"{name}: planning for a CPU ({cite('R5')})")
    elif setup.backbone == large:
        parts.append(f"{name}: {facts.num_foreground_slices} labelled slices ({cite('R4')})")
    elif setup.backbone == base:
        parts.append(f"{name}: {cite('R3')}" + ("; the SSL MRI weights are ViT-B" if ssl and base == "vit_b" else ""))
    else:
        parts.append(f"{name}: a larger backbone does not fit ({cite('R5')})")
    return "; ".join(parts)


def _short_name(backbone: str) -> str:
    return {"vit_t": "ViT-T", "vit_b": "ViT-B", "vit_h": "ViT-H"}.get(backbone, get_backbone(backbone).description)


def _why_not(c: Candidate, best: Candidate, facts: DatasetFacts, hardware: Hardware) -> str:
    if c is best:
        return "chosen"
    if not c.fits:
        return f"does not fit: {c.predicted_memory_gb:.1f} GB predicted at batch {MIN_BATCH}"
    if c.excluded:
        return c.excluded
    if c.setup.scope != best.setup.scope:
        return f"{RULES['R6'].label}: decoder-only is a fallback when no encoder update fits"
    if c.setup.method != best.setup.method:
        return f"{RULES['R2'].label}: {best.setup.method} is preferred to {c.setup.method}"
    if get_backbone(c.setup.backbone).family != get_backbone(best.setup.backbone).family:
        return f"{RULES['R28'].label}: {RULES['R28'].evidence}"
    if hardware.device == "cpu":
        return f"{RULES['R5'].label}: on a CPU the smallest backbone keeps training time practical"
    large = FAMILY_BACKBONES[get_backbone(best.setup.backbone).family][-1]
    if large in (c.setup.backbone, best.setup.backbone):
        return (f"{RULES['R4'].label}: {_short_name(large)} from {LARGE_DATA_SLICES} labelled slices "
                f"(has {facts.num_foreground_slices})")
    return f"{RULES['R3'].label}: {best.setup.backbone} is preferred; {RULES['R3'].evidence}"
