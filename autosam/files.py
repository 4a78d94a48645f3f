"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from autosam.errors import AutosamError


def _disk_full(error: BaseException) -> OSError | None:
    """The ENOSPC or EDQUOT behind ``error``: torch.save reports a failed write as a RuntimeError on top of it."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        # created with mode 0666 minus the process umask, like any new file (mkstemp would make it 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = _disk_full(e)
        if full is None:
            raise
        kept = "the previous version was kept" if path.exists() else "nothing was written"
        quota = " or raise your quota" if full.errno == errno.EDQUOT else ""
        raise AutosamError(f"{path}: cannot write ({full.strerror}); {kept}; free space on the filesystem holding "
                           f"{path.parent}{quota} and run the command again") from e


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    _atomic(Path(path), lambda f: f.write(text.encode()))


def atomic_save_figure(figure, path: str | os.PathLike, **options) -> None:
    """``figure.savefig`` (matplotlib), written atomically."""
    _atomic(Path(path), lambda f: figure.savefig(f, format=Path(path).suffix.lstrip(".") or "png", **options))
