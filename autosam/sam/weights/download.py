"""``autosam weights``: the catalogue's checkpoints fetched from their official addresses, listed and verified.

This is the only code in autosam that downloads; planning, training and prediction never fetch anything.
pooch streams each file to a temporary file in the checkpoint folder, checks its sha256 and only then moves
it under its final name, so a failed download never leaves half a file there. Resuming is ours: the bytes
received so far are kept in ``.<file>.part`` and the next run asks the server for the rest (HTTP Range).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests
from pooch import HTTPDownloader
from tqdm import tqdm

from autosam.errors import AutosamError
from autosam.sam.weights.catalogue import (
    CATALOGUE,
    USER_CATALOGUE,
    CatalogueEntry,
    download_command,
    how_to_get,
    recorded_sha256,
    recorded_sha256_file,
    sha256_of,
    user_catalogue,
)

log = logging.getLogger("autosam")
# bytes per read: pooch's 1 kB default costs a write and a flush per kB of a 2.5 GB file; a broken transfer
# loses at most the chunk being read, the rest is kept for the next run
CHUNK = 1 << 16


def entries(names: list[str], folder: Path) -> list[CatalogueEntry]:
    """Catalogue entries by name (every entry when none is named): the official ones and those that
    ``autosam pretrain`` registered in ``folder``."""
    known = {**CATALOGUE, **user_catalogue(folder)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise AutosamError(f"unknown checkpoint name {unknown[0]}: choose from {', '.join(known)} "
                           "(`autosam weights list` shows them)")
    return [known[n] for n in names] if names else list(known.values())


def problem(path: Path, entry: CatalogueEntry) -> str | None:
    """Why ``path`` is not the published file (size first, then sha256; for a file whose publisher gives no
    sha256, the one recorded at its first download), or None when it is."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        return f"{size} bytes, expected {entry.size} (truncated or another file)"
    expected, whose = (entry.sha256, "published") if entry.sha256 else (recorded_sha256(path), "first download's")
    if expected is not None and (actual := sha256_of(path)) != expected:
        return f"sha256 {actual[:12]}... instead of the {whose} {expected[:12]}... (corrupt or another release)"
    return None


@dataclass(frozen=True)
class Status:
    entry: CatalogueEntry
    path: Path
    state: str  # "verified", "missing", "partial ...", "present (...)" or "FAILED: ..."

    @property
    def ok(self) -> bool:
        return self.state == "verified"


def _partial(folder: Path, entry: CatalogueEntry) -> Path:
    return folder / f".{entry.filename}.part"


def status(entry: CatalogueEntry, folder: Path) -> Status:
    """Whether the entry's file is in ``folder`` and passes size + sha256 (hashes large files: seconds)."""
    path = folder / entry.filename
    if not path.is_file():
        part = _partial(folder, entry)
        if part.is_file():
            got = part.stat().st_size
            return Status(entry, path, f"partial ({got} of {entry.size or '?'} bytes; download resumes)")
        return Status(entry, path, "missing")
    if entry.size is None and entry.sha256 is None and recorded_sha256(path) is None:
        return Status(entry, path, "present (no published size or sha256, and no download record, to check)")
    reason = problem(path, entry)
    return Status(entry, path, f"FAILED: {reason}" if reason else "verified")


def failure_line(checked: Status, folder: Path) -> str:
    """One line for a file that failed ``autosam weights verify``: what is wrong and a command that repairs it
    for this kind of file (an official file is fetched again, one of ``autosam pretrain`` made again)."""
    entry, path = checked.entry, shlex.quote(str(checked.path))
    away = "" if checked.state == "missing" else f"move it away (`mv {path} {path}.changed`) and "
    if entry.official and entry.url:
        fix = f"{away}run `{download_command(entry.name, folder)}`"
    elif entry.official:
        fix = f"{away}{how_to_get(entry, folder)}"
    else:
        fix = (f"the file is not the one autosam pretrain wrote: {away}run `autosam pretrain -o {path}` again "
               f"with the options it was made with ({entry.source}), or drop it: delete the entry '{entry.name}' "
               f"from {shlex.quote(str(folder / USER_CATALOGUE))}")
    return f"{entry.name}: {checked.path}: {checked.state}; {fix}"


class _ResumingDownloader:
    """pooch's HTTPDownloader writing into the kept ``.part`` file, asking only for the bytes it lacks.

    pooch hands in its temporary file; when the part is complete (size checked) it is renamed onto that file,
    which pooch hashes and moves into place, or deletes on a mismatch (a bad part is never resumed again)."""

    def __init__(self, entry: CatalogueEntry, part: Path) -> None:
        self.entry, self.part = entry, part

    def __call__(self, url: str, output_file: str, _pooch) -> None:
        with open(self.part, "ab") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AutosamError(f"{self.part}: another `autosam weights download` is fetching "
                                   f"{self.entry.filename}; wait for it to finish") from None
            try:
                self._fetch(f, url, output_file)
            finally:  # nothing arrived: leave no empty part behind
                if os.fstat(f.fileno()).st_size == 0:
                    self.part.unlink(missing_ok=True)

    def _fetch(self, f, url: str, output_file: str) -> None:
        size = self.entry.size
        done = os.fstat(f.fileno()).st_size
        if size is not None and done > size:  # not a prefix of the published file
            f.truncate(0)
            done = 0
        if size is None or done < size:
            if done:
                log.info("resuming %s at %d of %s bytes", self.entry.filename, done, size or "?")

            answered = []

            def restart_if_whole(response, *_args, **_kwargs):
                answered.append(response.status_code)
                if done and response.status_code == 200:  # the server ignored the Range: it sends it all
                    f.truncate(0)

            headers = {"Range": f"bytes={done}-"} if done else {}
            bar = tqdm(total=(size or 0) - done, desc=self.entry.filename, unit="B", unit_scale=True,
                       disable=None)  # shown on a terminal; pooch skips it when the size is unknown (total 0)
            try:
                HTTPDownloader(progressbar=bar, chunk_size=CHUNK, headers=headers,
                               hooks={"response": restart_if_whole})(url, f, None)
            except requests.HTTPError as e:
                raise AutosamError(f"download of {url} failed: the server answered {e.response.status_code} "
                                   f"{e.response.reason}; {self._by_hand()}") from None
            except requests.RequestException as e:
                got = os.fstat(f.fileno()).st_size
                if answered:  # the transfer started, then broke off
                    raise AutosamError(f"download of {url} interrupted after {got} of {size or '?'} bytes "
                                       f"({type(e).__name__}); run `{self._command()}` again to resume") from None
                raise AutosamError(f"cannot reach {url} ({_reason(e)}); check the network connection and run "
                                   f"`{self._command()}` again, or {self._by_hand()}") from None
            finally:
                bar.close()
        got = os.fstat(f.fileno()).st_size
        if size is not None and got != size:
            if got > size:
                self.part.unlink()
            raise AutosamError(f"download of {url} ended after {got} of {size} bytes; nothing was written under "
                               f"{self.entry.filename}; run `{self._command()}` again"
                               + (" to resume" if got < size else ""))
        os.replace(self.part, output_file)  # the part's inode (and its umask-respecting mode) goes to pooch

    def _command(self) -> str:
        return download_command(self.entry.name, self.part.parent)

    def _by_hand(self) -> str:
        return f"download {self.entry.url} by hand into {self.part.parent}"


def _reason(error: Exception) -> str:
    """The innermost cause of a requests error, e.g. 'Connection refused', not urllib3's pool description."""
    while error.__context__ is not None or error.__cause__ is not None:
        error = error.__cause__ or error.__context__
    text = str(error).strip()
    return text.split("] ")[-1][:120] if text else type(error).__name__


def download(entry: CatalogueEntry, folder: Path) -> tuple[Path, bool]:
    """The entry's file in ``folder``, fetched unless a verified copy is there; (path, whether it was fetched)."""
    path = folder / entry.filename
    if entry.url is None:
        raise AutosamError(f"{entry.name}: no official download address; {how_to_get(entry, folder)}")
    if path.exists():
        reason = problem(path, entry)
        if reason:
            raise AutosamError(f"{path}: present but not the published {entry.name} ({reason}); autosam does not "
                               f"overwrite it: move it away and run `{download_command(entry.name, folder)}` again")
        log.info("%s: already present and verified, not downloaded again", path)
        return path, False
    folder.mkdir(parents=True, exist_ok=True)
    pooch.get_logger().setLevel(logging.WARNING)  # the line below says it, with the size
    log.info("downloading %s (%s bytes) from %s into %s", entry.filename, entry.size or "?", entry.url, folder)
    try:
        pooch.retrieve(entry.url, f"sha256:{entry.sha256}" if entry.sha256 else None, fname=entry.filename,
                       path=folder, downloader=_ResumingDownloader(entry, _partial(folder, entry)))
    except ValueError:  # pooch's hash check; it deleted the download
        raise AutosamError(f"download of {entry.url}: the file's sha256 is not the published {entry.sha256[:12]}... "
                           f"(a corrupt transfer or another file at that address); it was deleted and nothing was "
                           f"written under {path}; run `{download_command(entry.name, folder)}` again, and if it "
                           "fails the same way, the address serves another release than the catalogue's") from None
    if entry.sha256 is None:  # nothing published to check against: later loads check against this download
        recorded_sha256_file(path).write_text(f"{sha256_of(path)}  {entry.filename}\n")
        log.info("%s: no published sha256; recorded this download's in %s", path, recorded_sha256_file(path))
    return path, True
