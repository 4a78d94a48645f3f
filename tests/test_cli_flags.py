"""One flag language: every verb takes a shared flag as the very same definition, nnU-Net's spellings are
aliases, --debug goes anywhere, and names are checked before any work with the closest name when mistyped."""

from __future__ import annotations

import argparse

import pytest

from autosam.cli import SHARED_FLAGS, build_parser, main, parse_args, shared_flags

# Flags of the same spelling that mean something else in one verb, on purpose.
OWN_MEANING = {("pretrain", "dataset"): "several datasets (nargs +) of unlabelled images"}


def _verbs(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(_verbs(sub, f"{prefix}{name} "))
    return found


def test_every_verb_takes_the_shared_flags_as_one_definition_with_help() -> None:
    parser = build_parser()
    verbs = _verbs(parser)
    shared = {name: p._actions[0] for name, p in shared_flags().items()}
    spelling = {flag: name for name, (flags, _) in SHARED_FLAGS.items() for flag in flags}
    assert {"run", "ablate", "train", "predict", "export", "plan", "weights list"} <= set(verbs)
    for verb, sub in verbs.items():
        assert sub.description, verb
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (verb, action.option_strings or action.dest)
            # the definition named by its destination; --seed is two shared flags: one seed, or several (run)
            names = {action.dest} if action.dest in SHARED_FLAGS else {
                spelling[f] for f in action.option_strings if f in spelling
            }
            for name in names:
                if (verb, name) not in OWN_MEANING:
                    assert action is shared[name], (verb, name)
        assert shared["debug"] in sub._actions, verb
    for verb in ("run", "ablate", "train", "predict", "export"):
        assert shared["folds"] in verbs[verb]._actions and shared["device" if verb != "export" else "dataset"]


@pytest.mark.parametrize(
    "line",
    [
        ["run", "-d", "901", "-f", "0", "1"],
        ["run", "-d", "901", "--fold", "0"],
        ["export", "-d", "1", "-f", "0", "-o", "x"],
        [
            "predict",
            "-d",
            "1",
            "-i",
            "a",
            "-o",
            "b",
            "--disable_tta",
            "-chk",
            "checkpoint_best.pth",
            "-device",
            "cuda:1",
        ],
        ["train", "-d", "1", "-f", "0", "--c", "--npz", "--debug"],
        ["plan", "-d", "1", "-np", "2", "--device", "auto"],
    ],
)
def test_nnunet_spellings_and_flags_shared_across_verbs_parse(line: list[str]) -> None:
    args = build_parser().parse_args(line)
    assert args.dataset in ("901", "1")


def test_debug_before_or_after_the_verb_and_version(capsys) -> None:
    assert parse_args(["--debug", "validate", "-d", "1"]).debug
    assert parse_args(["validate", "-d", "1", "--debug"]).debug
    assert parse_args(["weights", "list", "--debug"]).debug
    assert not parse_args(["validate", "-d", "1"]).debug
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("autosam ")


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (["train", "-d", "1", "-f", "0", "--setup", "vit_b_encdec_lroa"], "did you mean vit_b_encdec_lora?"),
        (["predict", "-d", "1", "-i", "a", "-o", "b", "--setup", "vit_t_decc_lora"], "did you mean vit_t_dec_lora?"),
        (
            ["ablate", "-d", "1", "--setups", "vit_b_dec_lora", "vit_h_encdec_adaptr"],
            "did you mean vit_h_encdec_adapter?",
        ),
        (["plan", "-d", "1", "--checkpoint", "medsam_vitb"], "did you mean medsam_vit_b?"),
        (["pretrain", "--images", "x", "-o", "y.pth", "--from", "sam_vit_bb"], "did you mean sam_vit_b?"),
        (["setups", "--backbone", "vit_bb"], "did you mean vit_b?"),
        (["run", "-d", "1", "--device", "cuda1"], "choose auto, cpu, cuda or cuda:N"),
        (["run", "-d", "1", "-f", "all"], "give cross-validation fold numbers"),
    ],
)
def test_names_are_checked_before_any_work_in_one_line(
    line: list[str], said: str, capsys, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))  # no dataset 1 there: a name check must come first
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    assert main(line) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and said in err, err
    assert "Traceback" not in err


def test_weights_list_without_a_folder_shows_the_catalogue(monkeypatch, capsys) -> None:
    monkeypatch.delenv("AUTOSAM_CHECKPOINT_DIR", raising=False)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "no checkpoint folder" in out and "mobile_sam" in out and "medsam_vit_b" in out
