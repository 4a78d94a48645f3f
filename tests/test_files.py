"""A full disk while a checkpoint or a JSON file is written: the previous file is kept byte for byte, no temporary
file is left behind, and one line names the file, says it was kept and how to fix it."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from autosam.errors import AutosamError
from autosam.files import atomic_save_figure, atomic_torch_save, atomic_write_json

WRITERS: dict[str, tuple[Callable[[object, Path], None], object, str]] = {
    "checkpoint": (atomic_torch_save, {"weights": torch.arange(20000.0)}, "checkpoint_final.pth"),
    "json": (atomic_write_json, {"dice": list(range(20000))}, "summary.json"),
}


class _FillingFile:
    """A file whose disk fills up after ``room`` bytes: the write that crosses it lands partly, then fails."""

    def __init__(self, file, room: int, code: int) -> None:
        self.file, self.room, self.code, self.written = file, room, code, 0

    def write(self, data) -> int:
        data = bytes(data)
        if self.written + len(data) > self.room:
            self.file.write(data[: self.room - self.written])
            self.written = self.room
            raise OSError(self.code, os.strerror(self.code))
        self.written += len(data)
        return self.file.write(data)

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def _fill_during_write(monkeypatch, code: int = errno.ENOSPC) -> None:
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FillingFile(real(fd, mode), 100, code))


def _fill_at_fsync(monkeypatch, code: int = errno.ENOSPC) -> None:
    def fsync(fd: int) -> None:
        assert os.fstat(fd).st_size > 0  # the bytes were written; the disk runs out when they are flushed
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("fill", [_fill_during_write, _fill_at_fsync], ids=["during_write", "at_fsync"])
@pytest.mark.parametrize("writer", WRITERS)
def test_full_disk_keeps_the_previous_file(writer: str, fill, tmp_path: Path, monkeypatch) -> None:
    write, obj, name = WRITERS[writer]
    path = tmp_path / name
    write({"previous": 1}, path)
    before = path.read_bytes()
    fill(monkeypatch)
    with pytest.raises(AutosamError) as raised:
        write(obj, path)
    monkeypatch.undo()
    message = str(raised.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # the temporary file is gone
    assert "\n" not in message
    assert message.startswith(f"{path}: cannot write (No space left on device)"), message
    assert "the previous version was kept" in message
    assert f"free space on the filesystem holding {tmp_path}" in message


def test_quota_and_a_first_write_say_so(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "plans.json"
    _fill_during_write(monkeypatch, errno.EDQUOT)
    with pytest.raises(AutosamError, match="nothing was written; .* or raise your quota"):
        atomic_write_json({"plans": list(range(100))}, path)
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_pass_through(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "summary.json"
    atomic_write_json({"previous": 1}, path)
    _fill_at_fsync(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as raised:
        atomic_write_json({"new": 2}, path)
    assert raised.value.errno == errno.EIO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_figure_that_cannot_be_written_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "curves.png"
    path.write_bytes(b"previous figure")
    figure = plt.figure()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AutosamError, match="the previous version was kept"):
        atomic_save_figure(figure, path, dpi=50)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == b"previous figure" and [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    atomic_save_figure(figure, path, dpi=50)
    assert path.read_bytes().startswith(b"\x89PNG")
