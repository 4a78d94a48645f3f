"""The ``autosam`` command line: argument parsing only, one function per verb; the work lives in the library.

Each verb imports its stage when it runs, so that ``autosam --help`` and a refused flag answer at once, without
loading torch and nnU-Net."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from autosam.errors import AutosamError
from autosam.paths import FINAL_CHECKPOINT, Dataset, checkpoint_folder


def _print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    widths = [max(len(title), *(len(str(r[key])) for r in rows)) for key, title in columns]
    print("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(row[key]).rjust(w) if isinstance(row[key], (int, float)) else str(row[key]).ljust(w)
                        for (key, _), w in zip(columns, widths)))


def cmd_setups(args: argparse.Namespace) -> None:
    from autosam.sam.costs import setup_costs
    from autosam.sam.registry import STUDY_BACKBONES, check_image_size, get_backbone
    from autosam.sam.setups import all_setups

    backbones = (args.backbone,) if args.backbone else STUDY_BACKBONES
    for name in backbones:
        check_image_size(get_backbone(name), args.image_size)
    rows = [setup_costs(s, args.image_size, args.num_classes) for s in all_setups(backbones)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"SAM fine-tuning set-ups at {args.image_size} px, {args.num_classes} classes (background included)")
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
    from autosam.planners.explain import plan_summary, plan_text
    from autosam.planners.hardware import detect_hardware
    from autosam.planners.preprocess import baseline_configurations, plan, preprocess
    from autosam.plans import SAM_CONFIGURATION, sam_plan_of

    hardware = detect_hardware(args.gpu_memory, args.device)
    with contextlib.redirect_stdout(sys.stderr):  # nnU-Net's planning chatter; stdout carries the plan
        planner = plan(args.dataset, _sam_options(args), hardware, args.num_processes)
        if args.preprocess:
            preprocess(args.dataset, args.num_processes, baseline_configurations(args.dataset, not args.no_3d))
    configuration = planner.plans["configurations"][SAM_CONFIGURATION]
    summary = plan_summary(sam_plan_of(configuration), configuration["batch_size"],
                           configuration["autosam_dataset_facts"])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(plan_text(summary, args.explain))
        print(f"\nwritten to {planner.plans['plans_name']}.json, configuration {SAM_CONFIGURATION}")


def cmd_train(args: argparse.Namespace) -> None:
    import os

    from autosam.trainers.fold_training import Budget, train

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

    exported = export(args.dataset, args.fold, args.output, args.setup, args.checkpoint_name)
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


def cmd_split(args: argparse.Namespace) -> None:
    from autosam.data.splits import write_grouped_splits

    result = write_grouped_splits(args.dataset, args.groups, args.group_pattern, args.num_folds)
    if result.shipped:
        print(f"the dataset's own {result.num_folds} folds ({result.shipped}) are used; they keep each of the "
              f"{result.num_patients} patients on one side of every fold")
    else:
        print(f"wrote {result.splits_file} ({result.num_folds} folds, {result.num_patients} patients)")
    print(f"wrote {result.groups_file}")


def _run_options(args: argparse.Namespace):
    from autosam.experiments.run import RunOptions

    if args.repeats != 1 and not args.train_cases:
        raise AutosamError(f"--repeats {args.repeats}: repeats are few-shot draws; give --train-cases K too")

    return RunOptions(folds=[int(f) for f in args.folds] if args.folds else None, epochs=args.epochs,
                      iterations=args.iterations, equal_budget=args.equal_budget, device=args.device,
                      gpu_memory=args.gpu_memory, ensembles=not args.no_ensembles, no_3d=args.no_3d,
                      replan=args.replan, seed=args.seed, train_cases=args.train_cases, repeats=args.repeats)


def cmd_run(args: argparse.Namespace) -> None:
    from autosam.experiments.run import run

    run(args.dataset, _sam_options(args), _run_options(args), ray_address=args.ray)


def cmd_ablate(args: argparse.Namespace) -> None:
    from autosam.experiments.ablation import ablate
    from autosam.experiments.run import RunOptions

    ablate(args.dataset, args.setups, RunOptions(folds=[int(f) for f in args.folds] if args.folds else None,
                                                 epochs=args.epochs,
                                                 iterations=args.iterations, device=args.device, ensembles=False,
                                                 seed=args.seed, gpu_memory=args.gpu_memory), args.ray)


def cmd_demo(args: argparse.Namespace) -> None:
    from autosam.experiments.demo import run_demo

    run_demo(args.dir, args.full, args.device, args.seed)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from autosam.pretraining.mae import PretrainOptions, pretrain

    if args.prompted:
        _prompted_pretrain(args)
        return
    options = PretrainOptions(backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                              iterations=args.iterations, batch_size=args.batch_size, mask_ratio=args.mask_ratio,
                              learning_rate=args.lr, base=args.base, checkpoint_dir=args.checkpoint_dir,
                              modality=args.modality, seed=args.seed, device=args.device)
    result = pretrain(args.output, options, args.dataset, args.images)
    print(f"pretrained checkpoint: {result.checkpoint} (sha256 {result.entry.sha256})")
    print(f"registered as '{result.entry.name}' ({result.entry.backbone}, modality {result.entry.modality}) in "
          f"{result.catalogue}; use it with --checkpoint-dir {result.checkpoint.parent} --checkpoint "
          f"{result.entry.name}")


def _prompted_pretrain(args: argparse.Namespace) -> None:
    from autosam.pretraining.prompted import PromptedOptions, prompted_pretrain

    options = PromptedOptions(backbone=args.backbone, image_size=args.image_size, prompts=args.prompts,
                              epochs=args.epochs, iterations=args.iterations, batch_size=args.batch_size,
                              learning_rate=args.lr, base=args.base, checkpoint_dir=args.checkpoint_dir,
                              modality=args.modality, seed=args.seed, device=args.device)
    result = prompted_pretrain(args.output, options, args.dataset)
    print(f"Dice + BCE on the fixed evaluation slices: {result.loss_before:.4f} before, {result.loss_after:.4f} after")
    print(f"pretrained checkpoint: {result.checkpoint} (sha256 {result.entry.sha256})")
    print(f"registered as '{result.entry.name}' ({result.entry.backbone}, modality {result.entry.modality}) in "
          f"{result.catalogue}; use it with --checkpoint-dir {result.checkpoint.parent} --checkpoint "
          f"{result.entry.name}")


def cmd_weights(args: argparse.Namespace) -> None:
    from autosam.sam.weights.download import download, entries, status

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
        raise AutosamError(f"{len(failed)} of {len(checked)} checkpoint(s) failed verification ("
                           f"{', '.join(s.entry.name for s in failed)}); run `autosam weights download NAME` for "
                           "each (move a file that failed away first)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autosam", description="Auto-configured SAM fine-tuning inside nnU-Net, compared with nnU-Net."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    p = verbs.add_parser("setups", help="list the fine-tuning set-ups with parameter counts and FLOPs")
    p.add_argument("--backbone", help="only this backbone (vit_t, vit_b, vit_h; also vit_l)")
    p.add_argument("--image-size", type=int, default=1024, help="SAM input size in pixels (default 1024)")
    p.add_argument("--num-classes", type=int, default=2, help="output classes incl. background (default 2)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=cmd_setups)

    def seed_flag(p: argparse.ArgumentParser, default_help: str) -> None:
        p.add_argument("--seed", type=int, metavar="N", help=f"random seed of the training ({default_help}); "
                       "recorded in every fold and the report")

    def dataset_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("-d", "--dataset", required=True, help="dataset id or name, e.g. 501 or Dataset501_BUSI")

    def ray_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="train each fold as a Ray task on the cluster at ADDRESS (e.g. ray://head:10001 or "
                       "head:6379); without ADDRESS on a local Ray instance sized to this machine "
                       "(pip install 'autosam[ray]')")

    def budget_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--epochs", type=int, help="training epochs (with 'run': for every method, equal budgets)")
        p.add_argument("--iterations", type=int,
                       help="training iterations per epoch (with 'run': for every method, equal budgets)")
        p.add_argument("--from-scratch", action="store_true",
                       help="no pretrained weights: random initialisation (far lower Dice; for tests)")

    def plan_flags(p: argparse.ArgumentParser, device_help: str) -> None:
        """The machine and the fields a user can fix; the planner chooses the rest."""
        machine = p.add_mutually_exclusive_group()
        machine.add_argument("--gpu-memory", type=float, metavar="GB", help="plan for a GPU with this much memory")
        machine.add_argument("--device", choices=("cpu", "cuda"), help=device_help)
        p.add_argument("--setup", help="fix the SAM set-up, e.g. vit_b_encdec_lora")
        p.add_argument("--image-size", type=int, help="fix the SAM input size (a multiple of 64)")
        p.add_argument("--batch-size", type=int, help="fix the SAM batch size")
        p.add_argument("--lora-rank", type=int, help="LoRA rank (default 4, alpha = rank)")
        p.add_argument("--checkpoint", help="base weights: a catalogue name (e.g. medsam_vit_b) or a file")
        p.add_argument("--checkpoint-dir", help="folder holding the weights files (or $AUTOSAM_CHECKPOINT_DIR)")
        p.add_argument("--unlabelled", help="folder of unlabelled images of the same kind (counted in the facts)")
        p.add_argument("--native-patches", action="store_true",
                       help="keep nnU-Net's 2d patch and data for SAM (the network resizes each patch to its input)")
        p.add_argument("--no-embedding-cache", action="store_true",
                       help="decoder-only set-ups encode every augmented patch instead of training on embeddings "
                            "encoded once per slice (keeps nnU-Net's augmentation; slower)")
        p.add_argument("--prompts", choices=("box", "point", "box+point"),
                       help="also train SAM with box and/or point prompts from the reference masks (default: "
                       "promptless); 'run' then adds an interactive evaluation with simulated clicks")
        seed_flag(p, "default: the plan's, 0 when planning")
        budget_flags(p)

    for verb, preprocesses in (("plan", False), ("plan-and-preprocess", True)):
        p = verbs.add_parser(verb, help="choose the SAM set-up for a dataset and machine, with reasons"
                             + (", then preprocess with nnU-Net" if preprocesses else ""))
        dataset_flag(p)
        plan_flags(p, "plan for this machine's CPU or GPU")
        p.add_argument("--explain", action="store_true", help="list all 18 candidates and why each lost")
        p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
        p.add_argument("--no-3d", action="store_true", help="on 3D data, skip preprocessing nnU-Net's 3d_fullres")
        p.add_argument("-np", "--num-processes", type=int, default=1, help="worker processes (default 1)")
        p.set_defaults(func=cmd_plan, preprocess=preprocesses)

    p = verbs.add_parser("run", help="plan, train nnU-Net and SAM on the same folds, compare, pick the best")
    dataset_flag(p)
    p.add_argument("--folds", nargs="+", help="folds (default: every fold of splits_final.json, else all five)")
    plan_flags(p, "train on this device (default: cuda if present)")
    p.add_argument("--equal-budget", action="store_true",
                   help="give nnU-Net SAM's epochs x iterations and batch: the same optimiser steps and patches")
    p.add_argument("--no-3d", action="store_true", help="on 3D data, do not train nnU-Net's 3d_fullres baseline")
    p.add_argument("--no-ensembles", action="store_true", help="do not export probabilities or try ensembles")
    p.add_argument("--replan", action="store_true", help="plan again even if a SAM plan exists")
    ray_flag(p)
    p.add_argument("--train-cases", type=int, nargs="+", metavar="K",
                   help="few-shot: also train every method on K labelled cases of each fold's training part (one "
                   "per patient when known) and add Dice against K to the report")
    p.add_argument("--repeats", type=int, default=1, metavar="R",
                   help="few-shot: draws of the K cases per K (default 1); the report gives the spread over them")
    p.set_defaults(func=cmd_run)

    p = verbs.add_parser("ablate", help="train the study's set-ups on the same folds and budget; heat map")
    dataset_flag(p)
    p.add_argument("--setups", nargs="+", default=["all"], help="'all' (the 18) or set-up names")
    p.add_argument("--folds", nargs="+", help="folds (default: every fold of splits_final.json, else all five)")
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--epochs", type=int, help="training epochs (every set-up the same)")
    ray_flag(p)
    p.add_argument("--gpu-memory", type=float, metavar="GB",
                   help="with --ray: the cluster GPUs' memory; a set-up predicted to need more is refused")
    p.add_argument("--iterations", type=int, help="iterations per epoch (every set-up the same)")
    seed_flag(p, "default: the plan's")
    p.set_defaults(func=cmd_ablate)

    p = verbs.add_parser("demo", help="the bundled BUSI subset through 'autosam run' on a CPU-sized budget")
    p.add_argument("--dir", type=Path, default=Path("autosam_demo"), help="where to write (default ./autosam_demo)")
    p.add_argument("--full", action="store_true", help="the real budget: five folds, planned epochs")
    p.add_argument("--device", choices=("cpu", "cuda"))
    seed_flag(p, "default 0")
    p.set_defaults(func=cmd_demo)

    p = verbs.add_parser("train", help="train SAM on folds with nnU-Net's loop, then validate")
    dataset_flag(p)
    p.add_argument("-f", "--folds", nargs="+", required=True, help="fold numbers, or 'all' (train on every case)")
    p.add_argument("--setup", help="train one of the 18 fixed set-ups instead of the planned one")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--continue", dest="continue_training", action="store_true", help="resume from the last checkpoint")
    p.add_argument("--npz", action="store_true", help="also save validation probabilities (for ensembling)")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile the encoder blocks (on CUDA)")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="train each fold on N GPUs with DDP (nnU-Net's; the planned batch is split over them); "
                   "with --device cpu: N CPU processes (gloo), for testing")
    seed_flag(p, "default: the plan's")
    budget_flags(p)
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("predict", help="segment new images with the trained model: --setup, else the one "
                         "find_best_configuration chose after 'run', else the only trained SAM model")
    dataset_flag(p)
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of <case>_0000<ending> images")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: every trained fold)")
    p.add_argument("--setup", help="use the model trained with this fixed set-up ('planned': the planned one)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--checkpoint-name", default=FINAL_CHECKPOINT)
    p.add_argument("--disable-tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("--prompts", type=Path, metavar="JSON",
                   help="boxes/points per image and class (see README) for a SAM model trained with --prompts")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("export", help="a trained SAM fold as a stock segment-anything checkpoint (LoRA merged), "
                         "plus the LoRA in peft's format")
    dataset_flag(p)
    p.add_argument("-f", "--fold", required=True, help="the fold to export (a number, or 'all')")
    p.add_argument("-o", "--output", type=Path, required=True, help="the checkpoint file to write (.pth)")
    p.add_argument("--setup", help="export the model trained with this fixed set-up ('planned': the planned one; "
                   "default: as predict chooses)")
    p.add_argument("--checkpoint-name", default=FINAL_CHECKPOINT)
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("validate", help="check a raw dataset: every problem at once, with the fix")
    dataset_flag(p)
    p.add_argument("--all", action="store_true", help="name every file of each problem, not two examples")
    p.set_defaults(func=cmd_validate)

    p = verbs.add_parser("split", help="patient-grouped folds (splits_final.json) and each case's patient")
    dataset_flag(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--groups", type=Path, help="CSV case,group or JSON {case: group}")
    source.add_argument("--group-pattern", metavar="REGEX",
                        help=r"the patient is group 1 of REGEX matched against the whole case id, e.g. '(.*)_z\d+'")
    p.add_argument("--num-folds", type=int, default=5)
    p.set_defaults(func=cmd_split)

    p = verbs.add_parser("pretrain", help="self-supervised (masked-autoencoder) pretraining of SAM's image encoder "
                         "on unlabelled images; writes a base checkpoint and catalogues it")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="a folder of images (any format nnU-Net reads)")
    source.add_argument("-d", "--dataset", nargs="+", help="nnU-Net raw datasets (ids or names); labels are ignored")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="the checkpoint to write (.pth); its folder's autosam_catalogue.json registers it by file stem")
    p.add_argument("--backbone", default="vit_b", choices=("vit_t", "vit_b", "vit_l", "vit_h"),
                   help="image encoder (default vit_b)")
    p.add_argument("--from", dest="base", metavar="CHECKPOINT",
                   help="start from these weights: a catalogue name (e.g. sam_vit_b) or a file (default: random)")
    p.add_argument("--checkpoint-dir", help="folder holding the weights files (or $AUTOSAM_CHECKPOINT_DIR)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--iterations", type=int, help="steps per epoch (default: one pass over the slices)")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="share of 16-px patches masked (default 0.75)")
    p.add_argument("--prompted", action="store_true",
                   help="instead of MAE: prompt-based training (MedSAM's recipe) on the -d datasets' imagesTr + "
                   "labelsTr, one object per slice and class; the image encoder and mask decoder train, the prompt "
                   "encoder stays as it started")
    p.add_argument("--prompts", choices=("box", "point", "box+point"), default="box",
                   help="with --prompted: the objects' prompts (default box)")
    p.add_argument("--image-size", type=int, default=1024, help="SAM input size in pixels (default 1024)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--modality", help="the images' modality (e.g. MR, CT, US); default: from the datasets' "
                   "channel names. The planner prefers the checkpoint for datasets of this modality")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_pretrain)

    p = verbs.add_parser("weights", help="list, download (official addresses, resumable) and verify the SAM "
                         "checkpoints of the catalogue")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, names, what in (
            ("list", "*", "each catalogue entry: present and verified (size + sha256), partial or missing"),
            ("download", "+", "fetch from the official address with a progress bar, resuming a partial file; "
                              "verified before it gets its name; a verified file present is reused"),
            ("verify", "*", "check the present files' size and sha256 again (default: every present file)")):
        q = actions.add_parser(action, help=what)
        q.add_argument("names", nargs=names, metavar="NAME", help="catalogue names, e.g. mobile_sam"
                       + (" (default: all)" if names == "*" else ""))
        q.add_argument("--checkpoint-dir", help="folder of the weights files (or $AUTOSAM_CHECKPOINT_DIR)")
        q.set_defaults(func=cmd_weights)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (it may be replaced between calls of ``main``)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logger = logging.getLogger("autosam")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("autosam: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
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
