"""The ``autosam`` command line: argument parsing only, one function per verb; the work lives in the library.

Each verb imports its stage when it runs, so that ``autosam --help`` and a refused flag answer at once, without
loading torch and nnU-Net."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from autosam.errors import AutosamError, did_you_mean
from autosam.paths import FINAL_CHECKPOINT, Dataset, checkpoint_folder


def _print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    widths = [max(len(title), *(len(str(r[key])) for r in rows)) for key, title in columns]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(row[key]).rjust(w) if isinstance(row[key], (int, float)) else str(row[key]).ljust(w)
                        for (key, _), w in zip(columns, widths)))


def cmd_setups(args: argparse.Namespace) -> None:
    from autosam.sam.costs import setup_costs
    from autosam.sam.registry import check_image_size, family_backbones, get_backbone
    from autosam.sam.setups import all_setups

    backbones = (args.backbone,) if args.backbone else family_backbones(args.family or "sam")
    size = args.image_size or 1024
    for name in backbones:
        check_image_size(get_backbone(name), size)
    rows = [setup_costs(s, size, args.num_classes) for s in all_setups(backbones)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"SAM fine-tuning set-ups at {size} px, {args.num_classes} classes (background included)")
    _print_table(
        [{**r, "total_params": f"{r['total_params']:,}", "trainable_params": f"{r['trainable_params']:,}",
          "share": f"{100 * r['trainable_params'] / r['total_params']:.2f}%", "gflops": f"{r['gflops']:.1f}"}
         for r in rows],
        [("name", "set-up"), ("total_params", "total params"), ("trainable_params", "trainable"),
         ("share", "share"), ("gflops", "GFLOPs/img")],
    )


def _sam_options(args: argparse.Namespace):
    from autosam.planners.sam_planner import SamOptions

    flag_of = {"num_epochs": "epochs", "iterations_per_epoch": "iterations", "unlabelled_dir": "unlabelled"}
    given = {f.name: getattr(args, flag_of.get(f.name, f.name)) for f in fields(SamOptions)
             if f.name != "embedding_cache"}  # the flag is --no-embedding-cache
    return SamOptions(**given, embedding_cache=not args.no_embedding_cache)


def cmd_plan(args: argparse.Namespace) -> None:
    from autosam.experiments.job_table import run_job_table
    from autosam.planners.explain import plan_summary, plan_text
    from autosam.planners.hardware import detect_hardware
    from autosam.planners.preprocess import baseline_configurations, plan, preprocess
    from autosam.plans import SAM_CONFIGURATION, sam_plan_of

    hardware = detect_hardware(args.gpu_memory, None if args.device == "auto" else args.device)
    chatter = args.dataset.preprocessed / "autosam_plan.log"  # nnU-Net's planning output, printed as dicts
    chatter.parent.mkdir(parents=True, exist_ok=True)
    print(f"planning {args.dataset.name} (nnU-Net's output: {chatter})", file=sys.stderr)
    with chatter.open("a") as stream, contextlib.redirect_stdout(stream):  # stdout carries the plan alone
        planner = plan(args.dataset, _sam_options(args), hardware, args.num_processes, write=args.preprocess)
        if args.preprocess:
            preprocess(args.dataset, args.num_processes, baseline_configurations(args.dataset, not args.no_3d))
    configuration = planner.plans["configurations"][SAM_CONFIGURATION]
    summary = plan_summary(sam_plan_of(configuration), configuration["batch_size"],
                           configuration["autosam_dataset_facts"])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(plan_text(summary, args.explain))
        print("\n`autosam run` with nnU-Net's own budget would train (--equal-budget: every method SAM's steps):")
        for line in run_job_table(args.dataset, sam_plan_of(configuration), configuration["batch_size"],
                                  hardware.device, not args.no_3d):
            print(line)
        if args.preprocess:
            print(f"\nwritten to {planner.plans['plans_name']}.json, configuration {SAM_CONFIGURATION}")
        else:
            print(f"\na preview: nothing written. `autosam plan-and-preprocess -d {args.dataset.id}` with the same "
                  "flags writes this plan; `autosam run` plans by itself")


def cmd_train(args: argparse.Namespace) -> None:
    from autosam.trainers.fold_training import Budget, train

    if not args.folds:
        raise AutosamError("train: give the folds to train, e.g. -f 0 1 2 3 4, or -f all (every case)")
    if args.no_compile:
        os.environ["nnUNet_compile"] = "false"  # the SAM trainer compiles encoder blocks on CUDA unless this is false
    for folder in train(args.dataset, args.folds, args.setup, Budget(args.epochs, args.iterations), args.device,
                        args.continue_training, args.from_scratch, args.npz, args.seed, args.gpus):
        print(f"finished: {folder} (validation: {folder / 'validation' / 'summary.json'})")


def cmd_predict(args: argparse.Namespace) -> None:
    from autosam.inference.predict import predict, predict_with_prompts
    from autosam.inference.trained_models import resolve_model

    if args.prompts:  # the prompted SAM model, whatever find_best_configuration chose
        predict_with_prompts(args.dataset, args.input, args.output, args.prompts, args.folds, args.setup,
                             args.device, args.checkpoint_name)
        print(f"predictions with the prompts of {args.prompts} written to {args.output}")
        return
    choice = resolve_model(args.dataset, args.setup)
    print(f"model: {choice.name}: {choice.why}")
    predict(args.dataset, args.input, args.output, args.folds, choice, device=args.device,
            checkpoint=args.checkpoint_name, mirroring=not args.disable_tta)
    print(f"predictions written to {args.output}")


def cmd_export(args: argparse.Namespace) -> None:
    from autosam.inference.export import export

    if not args.folds or len(args.folds) != 1:
        raise AutosamError(f"export: give one fold, e.g. -f 0 (or -f all); got {' '.join(args.folds or []) or 'none'}")
    exported = export(args.dataset, args.folds[0], args.output, args.setup, args.checkpoint_name)
    print(f"SAM checkpoint: {exported.checkpoint} ({exported.loading})")
    if exported.peft_folder:
        print(f"LoRA in peft's format: {exported.peft_folder} (PeftModel.from_pretrained on the base checkpoint)")
    print(f"how it was trained and what input it expects: {exported.checkpoint.with_suffix('.json')}")


def cmd_validate(args: argparse.Namespace) -> None:
    from autosam.data.checks import check_dataset

    warnings = check_dataset(args.dataset, every_file=args.all)
    for warning in warnings:
        print(warning.line(args.all))
    print(f"dataset {args.dataset.name}: no errors" + (f", {len(warnings)} warning(s)" if warnings else ""))


def cmd_status(args: argparse.Namespace) -> None:
    from autosam.experiments.status import status_lines

    for line in status_lines(args.dataset):
        print(line)


def cmd_split(args: argparse.Namespace) -> None:
    from autosam.data.splits import write_grouped_splits

    result = write_grouped_splits(args.dataset, args.groups, args.group_pattern, args.num_folds, args.group_column)
    if result.shipped:
        print(f"the dataset's own {result.num_folds} folds ({result.shipped}) are used; they keep each of the "
              f"{result.num_patients} patients on one side of every fold")
    else:
        print(f"wrote {result.splits_file} ({result.num_folds} folds, {result.num_patients} patients)")
    print(f"wrote {result.groups_file}")


def _fold_numbers(folds: list[str] | None) -> list[int] | None:
    if folds is None:
        return None
    if not all(f.isdigit() for f in folds):
        raise AutosamError(f"-f {' '.join(folds)}: give cross-validation fold numbers, e.g. -f 0 1 2 ('all' trains "
                           "on every case: autosam train -f all)")
    return [int(f) for f in folds]


def _run_options(args: argparse.Namespace):
    from autosam.experiments.run import RunOptions

    if args.repeats != 1 and not args.train_cases:
        raise AutosamError(f"--repeats {args.repeats}: repeats are few-shot draws; give --train-cases K too")

    return RunOptions(folds=_fold_numbers(args.folds), epochs=args.epochs,
                      iterations=args.iterations, equal_budget=args.equal_budget, device=args.device,
                      gpu_memory=args.gpu_memory, ensembles=not args.no_ensembles, no_3d=args.no_3d,
                      replan=args.replan, seed=args.seeds[0] if args.seeds else None, seeds=args.seeds,
                      baselines=args.baselines,
                      train_cases=args.train_cases, repeats=args.repeats, allow_seen_base=args.allow_seen_base)


def cmd_run(args: argparse.Namespace) -> None:
    from autosam.experiments.run import run

    args.seed = args.seeds[0] if args.seeds else None  # --seed 0 1 2; a new plan records the first
    run(args.dataset, _sam_options(args), _run_options(args), ray_address=args.ray)


def cmd_ablate(args: argparse.Namespace) -> None:
    from autosam.experiments.ablation import ablate
    from autosam.experiments.run import RunOptions

    ablate(args.dataset, args.setups, RunOptions(folds=_fold_numbers(args.folds),
                                                 epochs=args.epochs,
                                                 iterations=args.iterations, device=args.device, ensembles=False,
                                                 seed=args.seed, gpu_memory=args.gpu_memory), args.ray,
           family=args.family or "sam")


def cmd_demo(args: argparse.Namespace) -> None:
    from autosam.experiments.demo import run_demo

    run_demo(args.dir, args.full, args.device, args.seed)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from autosam.pretraining.mae import PretrainOptions, pretrain

    if args.prompted:
        _prompted_pretrain(args)
        return
    options = PretrainOptions(backbone=args.backbone or "vit_b", image_size=args.image_size or 1024,
                              epochs=args.epochs or 100, iterations=args.iterations, batch_size=args.batch_size or 8,
                              mask_ratio=args.mask_ratio,
                              learning_rate=args.lr, base=args.base, checkpoint_dir=args.checkpoint_dir,
                              modality=args.modality, seed=args.seed or 0, device=args.device)
    result = pretrain(args.output, options, args.dataset, args.images)
    print(f"pretrained checkpoint: {result.checkpoint} (sha256 {result.entry.sha256})")
    print(f"registered as '{result.entry.name}' ({result.entry.backbone}, modality {result.entry.modality}) in "
          f"{result.catalogue}; use it with --checkpoint-dir {result.checkpoint.parent} --checkpoint "
          f"{result.entry.name}")


def _prompted_pretrain(args: argparse.Namespace) -> None:
    from autosam.pretraining.prompted import PromptedOptions, prompted_pretrain

    options = PromptedOptions(backbone=args.backbone or "vit_b", image_size=args.image_size or 1024,
                              prompts=args.prompts, epochs=args.epochs or 100, iterations=args.iterations,
                              batch_size=args.batch_size or 8,
                              learning_rate=args.lr, base=args.base, checkpoint_dir=args.checkpoint_dir,
                              modality=args.modality, seed=args.seed or 0, device=args.device)
    result = prompted_pretrain(args.output, options, args.dataset)
    print(f"Dice + BCE on the fixed evaluation slices: {result.loss_before:.4f} before, {result.loss_after:.4f} after")
    print(f"pretrained checkpoint: {result.checkpoint} (sha256 {result.entry.sha256})")
    print(f"registered as '{result.entry.name}' ({result.entry.backbone}, modality {result.entry.modality}) in "
          f"{result.catalogue}; use it with --checkpoint-dir {result.checkpoint.parent} --checkpoint "
          f"{result.entry.name}")


def cmd_weights(args: argparse.Namespace) -> None:
    from autosam.sam.weights.download import download, entries, failure_line, status

    if args.action == "list" and checkpoint_folder(args.checkpoint_dir) is None:  # the catalogue itself
        from autosam.sam.weights.catalogue import CATALOGUE

        print("no checkpoint folder (--checkpoint-dir DIR or $AUTOSAM_CHECKPOINT_DIR): the catalogue, nothing checked")
        _print_table([{"name": e.name, "file": e.filename, "backbone": e.backbone,
                       "size": f"{e.size / 2**20:.0f} MB" if e.size else "?", "from": e.source}
                      for e in CATALOGUE.values() if not args.names or e.name in args.names],
                     [("name", "name"), ("file", "file"), ("backbone", "backbone"), ("size", "size"), ("from", "from")])
        return
    folder = checkpoint_folder(args.checkpoint_dir, required=True)
    if args.action == "download":
        for entry in entries(args.names, folder):
            path, fetched = download(entry, folder)
            print(f"{entry.name}: {path} ({'downloaded and verified' if fetched else 'present and verified, reused'})")
        return
    checked = [status(e, folder) for e in entries(args.names, folder)]
    if args.action == "list":
        print(f"checkpoint folder: {folder}")
        _print_table([{"name": s.entry.name, "file": s.entry.filename, "backbone": s.entry.backbone,
                       "size": f"{s.entry.size / 2**20:.0f} MB" if s.entry.size else "?", "state": s.state,
                       "from": s.entry.source} for s in checked],
                     [("name", "name"), ("file", "file"), ("backbone", "backbone"), ("size", "size"),
                      ("state", "state"), ("from", "from")])
        return
    checked = [s for s in checked if s.state != "missing" or args.names]
    if not checked:
        raise AutosamError(f"{folder}: holds no catalogue checkpoint to verify; `autosam weights download NAME` "
                           "fetches one")
    for s in checked:
        print(f"{s.entry.name}: {s.path}: {s.state}")
    failed = [s for s in checked if not s.ok and not s.state.startswith("present")]
    if failed:
        raise AutosamError("\n".join(failure_line(s, folder) for s in failed))


# The flags several verbs take, defined once: every verb that takes one gets this very definition (argparse's
# parent parsers share the action objects), so a flag is spelled, typed and explained the same everywhere.
# nnU-Net's spellings are aliases. To add a shared flag: one entry here, then its name in the verbs' lists below.
SHARED_FLAGS: dict[str, tuple[tuple[str, ...], dict]] = {
    "dataset": (("-d", "--dataset"), {"required": True, "metavar": "ID",
                                      "help": "dataset id or name, e.g. 501 or Dataset501_BUSI"}),
    "folds": (("-f", "--folds", "--fold"), {
        "nargs": "+", "metavar": "FOLD",
        "help": "fold numbers, or 'all' (train, predict, export: the model trained on every case); default: every "
                "fold of splits_final.json, else all five (predict: every trained fold)"}),
    "device": (("--device", "-device"), {
        "metavar": "{auto,cpu,cuda,cuda:N}",
        "help": "where to compute: auto (the default: a GPU when torch sees one), cpu, cuda, or cuda:N for the "
                "N-th GPU; plan and run also plan for it"}),
    "gpu_memory": (("--gpu-memory",), {
        "type": float, "metavar": "GB",
        "help": "the training GPUs' memory: plan for a GPU you are not on, and (with --ray) refuse a job predicted "
                "to need more"}),
    "seed": (("--seed",), {"type": int, "metavar": "N",
                           "help": "random seed of the training (default: the plan's, 0 when planning); recorded "
                                   "in every fold and the report"}),
    "seeds": (("--seed",), {"type": int, "nargs": "+", "metavar": "N",
                            "help": "random seeds (default: the plan's, 0 when planning); several (--seed 0 1 2) train "
                                    "every method once per seed, the first under the usual model folders, the others "
                                    "under <plans>_seed<N>, and the report adds the seed spread and a test of the "
                                    "training recipe"}),
    "epochs": (("--epochs",), {"type": int, "metavar": "N",
                               "help": "training epochs (run, ablate: every method the same, an equal budget)"}),
    "iterations": (("--iterations",), {"type": int, "metavar": "N",
                                       "help": "training iterations per epoch (run, ablate: every method the same)"}),
    "from_scratch": (("--from-scratch",), {"action": "store_true",
                                           "help": "no pretrained weights: random initialisation (far lower Dice; "
                                                   "for tests)"}),
    "setup": (("--setup",), {"metavar": "NAME",
                             "help": "a fixed set-up, e.g. vit_b_encdec_lora (autosam setups lists them); predict "
                                     "and export also take 'planned'"}),
    "backbone": (("--backbone",), {"metavar": "NAME",
                                   "help": "image encoder: vit_t, vit_b, vit_h (also vit_l), or SAM 2.1's sam2_t, "
                                           "sam2_s, sam2_bplus, sam2_l"}),
    "family": (("--family",), {"choices": ("sam", "sam2", "all"), "metavar": "{sam,sam2,all}",
                               "help": "SAM (ViT, MobileSAM) or SAM 2.1 (Hiera): plan and run choose from this family "
                                       "(default: SAM unless only SAM 2.1 weights are present, rule R28); ablate "
                                       "'all' runs this family's 18 set-ups (all: both families, 36)"}),
    "image_size": (("--image-size",), {"type": int, "metavar": "PX",
                                       "help": "SAM input size in pixels, a multiple of 64 (SAM 2.1: of 32) (default: planned; "
                                               "setups and pretrain: 1024)"}),
    "batch_size": (("--batch-size",), {"type": int, "metavar": "N",
                                       "help": "images per step (default: planned; pretrain: 8)"}),
    "checkpoint": (("--checkpoint",), {"metavar": "NAME|FILE",
                                       "help": "base weights: a catalogue name (autosam weights list), e.g. "
                                               "medsam_vit_b, or a .pth file; decides the backbone"}),
    "checkpoint_dir": (("--checkpoint-dir",), {"metavar": "DIR",
                                               "help": "folder holding the weights files (or "
                                                       "$AUTOSAM_CHECKPOINT_DIR)"}),
    "checkpoint_name": (("-chk", "--checkpoint-name"), {"default": FINAL_CHECKPOINT, "metavar": "FILE",
                                                        "help": f"the fold's checkpoint to use (default "
                                                                f"{FINAL_CHECKPOINT})"}),
    "num_processes": (("-np", "--num-processes"), {"type": int, "default": 1, "metavar": "N",
                                                   "help": "worker processes for nnU-Net's preprocessing "
                                                           "(default 1)"}),
    "ray": (("--ray",), {"nargs": "?", "const": "", "metavar": "ADDRESS",
                         "help": "train each fold as a Ray task on the cluster at ADDRESS (e.g. ray://head:10001 or "
                                 "head:6379); without ADDRESS on a local Ray instance sized to this machine "
                                 "(pip install 'autosam[ray]')"}),
    "explain": (("--explain",), {"action": "store_true",
                                 "help": "the full reasons, with every candidate and why it lost"}),
    "json": (("--json",), {"action": "store_true", "help": "print JSON instead of a table"}),
    "no_3d": (("--no-3d",), {"action": "store_true",
                             "help": "on 3D data, leave out nnU-Net's 3d_fullres baseline"}),
    "max_image_gb": (("--max-image-gb",), {
        "type": float, "metavar": "GB",
        "help": "largest image, as float32, that the input checks accept (default: a quarter of this machine's "
                "memory); raise it for genuinely large volumes"}),
    "debug": (("--debug",), {"action": "store_true", "default": argparse.SUPPRESS,
                             "help": "show full tracebacks on errors (before or after the command)"}),
}
# What every SAM planning verb lets the user fix; the planner chooses the rest.
PLAN_FLAGS = ("gpu_memory", "device", "setup", "image_size", "batch_size", "checkpoint", "checkpoint_dir", "seed",
              "epochs", "iterations", "from_scratch", "max_image_gb", "family")


def shared_flags() -> dict[str, argparse.ArgumentParser]:
    """One parent parser per shared flag (made once: the same action objects in every verb)."""
    if not _SHARED:
        for name, (flags, options) in SHARED_FLAGS.items():
            parent = argparse.ArgumentParser(add_help=False)
            parent.add_argument(*flags, dest=name, **options)
            _SHARED[name] = parent
    return _SHARED


_SHARED: dict[str, argparse.ArgumentParser] = {}


def _verb(verbs, name: str, text: str, shared: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A verb with the shared flags named (and --debug, which every verb takes)."""
    parents = [shared_flags()[flag] for flag in (*shared, "debug")]
    return verbs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", parents=parents)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version  # not autosam.__version__: the package's API sits above the CLI

    parser = argparse.ArgumentParser(
        prog="autosam", description="Auto-configured SAM fine-tuning inside nnU-Net, compared with nnU-Net.",
        parents=[shared_flags()["debug"]])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('autosam')}",
                        help="print the version and exit")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    p = _verb(verbs, "setups", "list the fine-tuning set-ups with parameter counts and FLOPs",
              ("backbone", "image_size", "json", "family"))
    p.add_argument("--num-classes", type=int, default=2, help="output classes incl. background (default 2)")
    p.set_defaults(func=cmd_setups)

    for verb, preprocesses in (("plan", False), ("plan-and-preprocess", True)):
        p = _verb(verbs, verb, "preview the SAM set-up for a dataset and machine, with reasons; writes no plan"
                  if not preprocesses else "choose the SAM set-up for a dataset and machine, write the plan and "
                  "preprocess with nnU-Net", ("dataset", *PLAN_FLAGS, "explain", "json", "no_3d", "num_processes"))
        _plan_only_flags(p)
        p.set_defaults(func=cmd_plan, preprocess=preprocesses)

    p = _verb(verbs, "run", "plan, train nnU-Net and SAM on the same folds, compare, pick the best",
              ("dataset", "folds", *(("seeds" if f == "seed" else f) for f in PLAN_FLAGS), "no_3d", "ray"))
    _plan_only_flags(p)
    p.add_argument("--baselines", nargs="+", metavar="PRESET",
                   help="nnU-Net presets to train: 2d, 3d_fullres (the plain U-Net), resenc_m:2d, resenc_m:3d_fullres, "
                   "resenc_l:2d, resenc_l:3d_fullres (nnU-Net's residual-encoder planners; default: the plain 2d, "
                   "and 3d_fullres on 3D data, plus resenc_m at the same configurations when training on a GPU)")
    p.add_argument("--equal-budget", action="store_true",
                   help="give nnU-Net SAM's epochs x iterations and batch: the same optimiser steps and patches")
    p.add_argument("--no-ensembles", action="store_true", help="do not export probabilities or try ensembles")
    p.add_argument("--replan", action="store_true", help="plan again even if a SAM plan exists")
    p.add_argument("--allow-seen-base", action="store_true",
                   help="train SAM from a base whose lineage saw this dataset's images (refused otherwise); the "
                   "report's headline says so")
    p.add_argument("--train-cases", type=int, nargs="+", metavar="K",
                   help="few-shot: also train every method on K labelled cases of each fold's training part (one "
                   "per patient when known) and add Dice against K to the report")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="few-shot: draws of the K cases per K (default 1); the report gives the spread over them")
    p.set_defaults(func=cmd_run)

    p = _verb(verbs, "ablate", "train the study's set-ups on the same folds and budget; heat map",
              ("dataset", "folds", "device", "epochs", "iterations", "seed", "gpu_memory", "ray", "family"))
    p.add_argument("--setups", nargs="+", default=["all"], metavar="NAME",
                   help="'all' (the 18 of --family, SAM's by default) or set-up names of either family")
    p.set_defaults(func=cmd_ablate)

    p = _verb(verbs, "demo", "the bundled BUSI subset through 'autosam run' on a CPU-sized budget", ("device", "seed"))
    p.add_argument("--dir", type=Path, default=Path("autosam_demo"), help="where to write (default ./autosam_demo)")
    p.add_argument("--full", action="store_true", help="the real budget: five folds, planned epochs")
    p.set_defaults(func=cmd_demo)

    p = _verb(verbs, "train", "train SAM on folds with nnU-Net's loop, then validate",
              ("dataset", "folds", "setup", "device", "seed", "epochs", "iterations", "from_scratch"))
    p.add_argument("--continue", "--c", dest="continue_training", action="store_true",
                   help="resume from the last checkpoint")
    p.add_argument("--npz", action="store_true", help="also save validation probabilities (for ensembling)")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile the encoder blocks (on CUDA)")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="train each fold on N GPUs with DDP (nnU-Net's; the planned batch is split over them); "
                   "with --device cpu: N CPU processes (gloo), for testing")
    p.set_defaults(func=cmd_train)

    p = _verb(verbs, "predict", "segment new images with the trained model: --setup, else the one "
              "find_best_configuration chose after 'run', else the only trained SAM model",
              ("dataset", "folds", "setup", "device", "checkpoint_name", "max_image_gb"))
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of <case>_0000<ending> images")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--disable-tta", "--disable_tta", action="store_true",
                   help="no mirroring test-time augmentation (faster)")
    p.add_argument("--prompts", type=Path, metavar="JSON",
                   help="boxes/points per image and class (see README) for a SAM model trained with --prompts")
    p.set_defaults(func=cmd_predict)

    p = _verb(verbs, "export", "a trained SAM fold as a stock segment-anything checkpoint (LoRA merged), plus the "
              "LoRA in peft's format", ("dataset", "folds", "setup", "checkpoint_name"))
    p.add_argument("-o", "--output", type=Path, required=True, help="the checkpoint file to write (.pth)")
    p.set_defaults(func=cmd_export)

    p = _verb(verbs, "validate", "check a raw dataset: every problem at once, with the fix", ("dataset", "max_image_gb"))
    p.add_argument("--all", action="store_true", help="name every file of each problem, not two examples")
    p.set_defaults(func=cmd_validate)

    p = _verb(verbs, "status", "what is planned, which folds of which models are trained, and the report's path",
              ("dataset",))
    p.set_defaults(func=cmd_status)

    p = _verb(verbs, "split", "patient-grouped folds (splits_final.json) and each case's patient", ("dataset",))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--groups", type=Path, help="CSV case,group or JSON {case: group}; a CSV of more columns "
                        "needs --group-column")
    source.add_argument("--group-pattern", metavar="REGEX",
                        help=r"the patient is group 1 of REGEX matched against the whole case id, e.g. '(.*)_z\d+'")
    p.add_argument("--group-column", metavar="NAME",
                   help="with --groups CSV: the header's column holding the patient (case: the first column)")
    p.add_argument("--num-folds", type=int, metavar="K",
                   help="folds to write (default 5); refused when the dataset ships its own splits_final.json")
    p.set_defaults(func=cmd_split)

    p = _verb(verbs, "pretrain", "self-supervised (masked-autoencoder) pretraining of SAM's image encoder on "
              "unlabelled images; writes a base checkpoint and catalogues it",
              ("backbone", "image_size", "batch_size", "checkpoint_dir", "device", "seed", "epochs", "iterations",
               "max_image_gb"))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="a folder of images (any format nnU-Net reads)")
    source.add_argument("-d", "--dataset", nargs="+", metavar="ID",
                        help="nnU-Net raw datasets (ids or names); labels are ignored")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the checkpoint to write (.pth); its folder's autosam_catalogue.json registers it by file stem")
    p.add_argument("--from", dest="base", metavar="CHECKPOINT",
                   help="start from these weights: a catalogue name (e.g. sam_vit_b) or a file (default: random)")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="share of 16-px patches masked (default 0.75)")
    p.add_argument("--prompted", action="store_true",
                   help="instead of MAE: prompt-based training (MedSAM's recipe) on the -d datasets' imagesTr + "
                   "labelsTr, one object per slice and class; the image encoder and mask decoder train, the prompt "
                   "encoder stays as it started")
    p.add_argument("--prompts", choices=("box", "point", "box+point"), default="box",
                   help="with --prompted: the objects' prompts (default box)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--modality", help="the images' modality (e.g. MR, CT, US); default: from the datasets' "
                   "channel names. The planner prefers the checkpoint for datasets of this modality")
    p.set_defaults(func=cmd_pretrain)

    p = _verb(verbs, "weights", "list, download (official addresses, resumable) and verify the SAM checkpoints "
              "of the catalogue")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, names, what in (
            ("list", "*", "each catalogue entry: present and verified (size + sha256), partial or missing"),
            ("download", "+", "fetch from the official address with a progress bar, resuming a partial file; "
                              "verified before it gets its name; a verified file present is reused"),
            ("verify", "*", "check the present files' size and sha256 again (default: every present file)")):
        q = _verb(actions, action, what, ("checkpoint_dir",))
        q.add_argument("names", nargs=names, metavar="NAME", help="catalogue names, e.g. mobile_sam"
                       + (" (default: all)" if names == "*" else ""))
        q.set_defaults(func=cmd_weights)
    return parser


def _plan_only_flags(p: argparse.ArgumentParser) -> None:
    """What plan, plan-and-preprocess and run take beyond the shared flags."""
    p.add_argument("--lora-rank", type=int, metavar="R", help="LoRA rank (default 4, alpha = rank)")
    p.add_argument("--unlabelled", metavar="DIR",
                   help="folder of unlabelled images of the same kind (counted in the facts)")
    p.add_argument("--native-patches", action="store_true",
                   help="keep nnU-Net's 2d patch and data for SAM (the network resizes each patch to its input)")
    p.add_argument("--no-embedding-cache", action="store_true",
                   help="decoder-only set-ups encode every augmented patch instead of training on embeddings "
                        "encoded once per slice (keeps nnU-Net's augmentation; slower)")
    p.add_argument("--prompts", choices=("box", "point", "box+point"),
                   help="also train SAM with box and/or point prompts from the reference masks (default: "
                   "promptless); 'run' then adds an interactive evaluation with simulated clicks")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (it may be replaced between calls of ``main``)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_values(args: argparse.Namespace) -> None:
    """Names and values checked as soon as the line is parsed, before any work, with the closest name when
    mistyped (the set-up, backbone and checkpoint lists live in autosam.sam, imported only for such a flag)."""
    if args.verb in ("run", "ablate") and args.folds:
        _fold_numbers(args.folds)
    device = getattr(args, "device", None)
    if device is not None and not DEVICE.fullmatch(device):
        raise AutosamError(f"--device {device}: choose auto, cpu, cuda or cuda:N"
                           f"{did_you_mean(device, ('auto', 'cpu', 'cuda'))}")
    setups = [s for s in getattr(args, "setups", None) or [] if s != "all"]
    if getattr(args, "setup", None) not in (None, "planned"):
        setups.append(args.setup)
    if setups:
        from autosam.sam.setups import check_setup_name

        for name in setups:
            check_setup_name(name, "--setups" if name != getattr(args, "setup", None) else "--setup")
    if getattr(args, "backbone", None):
        from autosam.sam.registry import get_backbone

        get_backbone(args.backbone)
    for flag, name in (("--checkpoint", getattr(args, "checkpoint", None)), ("--from", getattr(args, "base", None))):
        if name:
            from autosam.sam.weights.catalogue import check_checkpoint_name

            check_checkpoint_name(name, getattr(args, "checkpoint_dir", None), flag)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)  # --debug has no default of its own, so a verb's never hides it
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logger = logging.getLogger("autosam")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("autosam: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    if getattr(args, "max_image_gb", None) is not None:  # read by the input checks, here and in child processes
        from autosam.data.raw import MAX_IMAGE_GB_ENV

        os.environ[MAX_IMAGE_GB_ENV] = str(args.max_image_gb)
    try:
        check_values(args)
        if getattr(args, "dataset", None):  # resolved once, here; every stage below takes the Dataset
            args.dataset = ([Dataset.resolve(d) for d in args.dataset] if isinstance(args.dataset, list)
                            else Dataset.resolve(args.dataset))
        args.func(args)
    except AutosamError as e:
        if args.debug:
            raise
        for line in str(e).splitlines():  # a dataset check reports every problem, one line each
            print(f"autosam: {line}" if line.startswith(("error:", "warning:")) else f"autosam: error: {line}",
                  file=sys.stderr)
        return 2
    except OSError as e:
        if args.debug or e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "point the nnUNet_* folders elsewhere"
        print(f"autosam: error: {e.filename or 'output'}: cannot write ({e.strerror}); {fix} and run the "
              "command again (finished work is kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autosam: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
