"""The package's layers (pyproject's import-linter contracts): imports point down only, and nothing imports in a
circle. A back-arrow added anywhere fails here."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers_without_cycles(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the contracts name the package as the source tree holds it
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0
