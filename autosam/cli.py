"""The ``autosam`` command line: argument parsing only, one function per verb; the work lives in the library."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from autosam.errors import AutosamError


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
          "share": f"{100 * r['trainable_params'] / r['total_params']:.2f}%", "gflops": f"{r['gflops']:.1f}"} for r in rows],
        [("name", "set-up"), ("total_params", "total params"), ("trainable_params", "trainable"),
         ("share", "share"), ("gflops", "GFLOPs/img")],
    )


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AutosamError as e:
        if args.debug:
            raise
        print(f"autosam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autosam: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
