"""`autosam weights`: downloads from a local HTTP server, verified, resumable, never half a file under its name."""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from autosam.cli import main
from autosam.errors import CheckpointError
from autosam.experiments.demo import DEMO_DATA
from autosam.planners.sam_planner import base_checkpoint_for
from autosam.sam.network import SamSegmenter
from autosam.sam.registry import build_sam
from autosam.sam.setups import Setup
from autosam.sam.weights.base import load_base_checkpoint
from autosam.sam.weights.catalogue import CATALOGUE, CatalogueEntry, find_checkpoint, register_user_checkpoint

NAME = "test_sam"


class Server:
    """Serves ``body`` at any path over loopback HTTP; honours ``Range: bytes=N-`` unless told not to, can send
    fewer bytes than its Content-Length announces, and records each request's Range header."""

    def __init__(self, body: bytes) -> None:
        self.body, self.truncate_at, self.ignore_range, self.ranges = body, None, False, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = 0 if wanted is None or server.ignore_range else int(wanted[len("bytes="):].rstrip("-"))
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                self.wfile.write(server.body[start:server.truncate_at])  # then HTTP/1.0 closes the connection

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights/{NAME}.pth"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(base_checkpoint, monkeypatch, tmp_path: Path):
    """A tiny official-layout checkpoint on a local server, catalogued as ``test_sam``; (server, sam, folder)."""
    path, sam = base_checkpoint("test_vit", 64, 4, name="served.pth")
    body = path.read_bytes()
    server = Server(body)
    monkeypatch.setitem(CATALOGUE, NAME, CatalogueEntry(NAME, f"{NAME}.pth", "test_vit", len(body),
                                                        hashlib.sha256(body).hexdigest(), server.url))
    yield server, sam, tmp_path / "weights"
    server.stop()


def _weights(capsys, *args: str) -> tuple[int, str, list[str]]:
    """Run `autosam weights ...`; (exit status, stdout, the error lines on stderr)."""
    code = main(["weights", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, [line for line in err.splitlines() if line.startswith("autosam: error")]


def test_download_verifies_and_loads_through_the_catalogue(served, capsys) -> None:
    server, original, folder = served
    code, out, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert (code, errors) == (0, []) and "downloaded and verified" in out
    assert server.ranges == [None] and sorted(p.name for p in folder.iterdir()) == [f"{NAME}.pth"]
    fresh = build_sam("test_vit", 64, 4)
    identity = load_base_checkpoint(fresh, "test_vit", find_checkpoint(NAME, folder))
    assert identity.name == NAME and identity.sha256 == CATALOGUE[NAME].sha256
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(SamSegmenter(original, 1).eval()(x), SamSegmenter(fresh, 1).eval()(x))
    code, out, _ = _weights(capsys, "list", "--checkpoint-dir", str(folder))
    assert code == 0 and any(line.startswith(NAME) and "verified" in line for line in out.splitlines())


def test_correct_file_present_is_reused_without_a_request(served, capsys) -> None:
    server, _, folder = served
    folder.mkdir()
    (folder / f"{NAME}.pth").write_bytes(server.body)
    code, out, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert (code, errors) == (0, []) and "reused" in out and server.ranges == []


def test_other_file_under_the_name_is_refused_and_kept(served, capsys) -> None:
    server, _, folder = served
    folder.mkdir()
    (folder / f"{NAME}.pth").write_bytes(b"the user's own file")
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert code == 2 and len(errors) == 1 and "move it away" in errors[0] and server.ranges == []
    assert (folder / f"{NAME}.pth").read_bytes() == b"the user's own file"
    code, out, errors = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert code == 2 and "FAILED" in out and len(errors) == 1


def test_wrong_hash_leaves_no_file(served, monkeypatch, capsys) -> None:
    server, _, folder = served
    monkeypatch.setitem(CATALOGUE, NAME, replace(CATALOGUE[NAME], sha256="0" * 64))
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert code == 2 and len(errors) == 1 and "sha256" in errors[0] and server.url in errors[0]
    assert list(folder.iterdir()) == []  # neither the file nor a partial or temporary one


def test_truncated_transfer_leaves_no_file_and_resumes(served, capsys) -> None:
    server, _, folder = served
    half = len(server.body) // 2
    server.truncate_at = half
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert code == 2 and len(errors) == 1 and "interrupted" in errors[0] and "again to resume" in errors[0]
    assert not (folder / f"{NAME}.pth").exists()
    kept = (folder / f".{NAME}.pth.part").stat().st_size  # what arrived, less the chunk being read
    assert 0 < kept <= half
    server.truncate_at = None
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert (code, errors) == (0, []) and server.ranges == [None, f"bytes={kept}-"]
    assert (folder / f"{NAME}.pth").read_bytes() == server.body and len(list(folder.iterdir())) == 1


def test_server_ignoring_the_range_restarts_the_file(served, capsys) -> None:
    server, _, folder = served
    folder.mkdir()
    (folder / f".{NAME}.pth.part").write_bytes(server.body[:100])
    server.ignore_range = True
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert (code, errors) == (0, []) and server.ranges == ["bytes=100-"]
    assert (folder / f"{NAME}.pth").read_bytes() == server.body


def test_server_gone_says_what_to_do(served, capsys) -> None:
    server, _, folder = served
    server.stop()
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert code == 2 and len(errors) == 1
    assert server.url in errors[0] and "check the network" in errors[0] and "by hand" in errors[0]
    assert list(folder.iterdir()) == []  # no file, and no empty part


def test_missing_weights_name_the_download_command(tmp_path: Path, capsys) -> None:
    command = f"autosam weights download sam_vit_b --checkpoint-dir {tmp_path}"
    with pytest.raises(CheckpointError, match=re.escape(command)):
        find_checkpoint("sam_vit_b", tmp_path)
    with pytest.raises(CheckpointError, match=re.escape(command)):
        load_base_checkpoint(build_sam("test_vit", 64, 4), "test_vit", tmp_path / "sam_vit_b_01ec64.pth")
    _, warnings = base_checkpoint_for(Setup.parse("vit_b_encdec_lora"), "sam_vit_b", str(tmp_path))
    assert any(command in w for w in warnings)  # what `autosam plan` prints
    code, _, errors = _weights(capsys, "download", "medsam_vit_b", "--checkpoint-dir", str(tmp_path))
    assert code == 2 and len(errors) == 1 and CATALOGUE["medsam_vit_b"].source in errors[0]


def test_verify_covers_the_folders_own_pretrained_checkpoints(base_checkpoint, tmp_path: Path, capsys) -> None:
    """`autosam pretrain` registers its files in the folder's catalogue: list and verify check them too."""
    path, _ = base_checkpoint("test_vit", 64, 4, name="mine.pth")
    folder = path.parent
    body = path.read_bytes()
    register_user_checkpoint(CatalogueEntry("mine", "mine.pth", "test_vit", len(body),
                                            hashlib.sha256(body).hexdigest(), "autosam pretrain", modality="US"),
                             folder)
    code, out, _ = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert code == 0 and f"mine: {path}: verified" in out
    path.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # same size, one bit changed
    code, out, errors = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert code == 2 and "mine" in errors[0] and "FAILED: sha256" in out


def _run_fix(line: str, capsys, extra: dict[str, list[str]] | None = None) -> None:
    """Run every command quoted in an error line (`mv A B`, `autosam ...`), each expected to succeed; ``extra``:
    options added to a command by its verb (the options a pretrained file was made with)."""
    commands = re.findall(r"`([^`]+)`", line)
    assert commands, line
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "mv":
            shutil.move(argv[1], argv[2])
            continue
        assert argv[0] == "autosam", command
        code = main(argv[1:] + (extra or {}).get(argv[1], []))
        assert code == 0, (command, capsys.readouterr().err)


def test_verify_fix_of_a_changed_official_file_works(served, capsys) -> None:
    server, _, folder = served
    folder.mkdir()
    (folder / f"{NAME}.pth").write_bytes(server.body[:-1] + bytes([server.body[-1] ^ 1]))
    code, _, errors = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert code == 2 and len(errors) == 1 and "autosam weights download" in errors[0]
    _run_fix(errors[0], capsys)
    code, out, errors = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert (code, errors) == (0, []) and "verified" in out


def test_verify_fix_of_a_changed_pretrained_file_works(tmp_path: Path, capsys) -> None:
    """A file `autosam pretrain` wrote, changed afterwards: the fix is to make it again, not to download it."""
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((DEMO_DATA / "imagesTr").glob("*.png"))[:2]:
        shutil.copy(path, images / path.name)
    options = ["--images", str(images), "--backbone", "vit_t", "--image-size", "256", "--epochs", "1",
               "--iterations", "1", "--batch-size", "1", "--modality", "US"]
    output = tmp_path / "weights" / "mine.pth"
    assert main(["pretrain", "-o", str(output), *options]) == 0
    body = output.read_bytes()
    output.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    code, _, errors = _weights(capsys, "verify", "--checkpoint-dir", str(output.parent))
    assert code == 2 and len(errors) == 1 and "autosam pretrain" in errors[0] and "download" not in errors[0]
    assert main(["pretrain", "-o", str(output), *options]) == 2  # the file must be moved away first, as it says
    capsys.readouterr()
    _run_fix(errors[0], capsys, {"pretrain": options})
    code, out, errors = _weights(capsys, "verify", "--checkpoint-dir", str(output.parent))
    assert (code, errors) == (0, []) and f"mine: {output}: verified" in out


def test_a_file_with_no_published_hash_is_checked_against_its_first_download(served, monkeypatch, capsys) -> None:
    """SAM 2.1's publishers give no sha256: the first download's is recorded beside the file, and a file changed
    afterwards is refused by `weights verify` and by loading, as a file failing a published hash is."""
    server, _, folder = served
    monkeypatch.setitem(CATALOGUE, NAME, replace(CATALOGUE[NAME], size=None, sha256=None))
    code, _, errors = _weights(capsys, "download", NAME, "--checkpoint-dir", str(folder))
    assert (code, errors) == (0, [])
    record = folder / f"{NAME}.pth.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(server.body).hexdigest()
    code, out, _ = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert code == 0 and "verified" in out

    changed = bytearray(server.body)
    changed[-10] ^= 0xFF  # one flipped byte in the tensor data: still a readable checkpoint
    (folder / f"{NAME}.pth").write_bytes(bytes(changed))
    code, out, errors = _weights(capsys, "verify", "--checkpoint-dir", str(folder))
    assert code == 2 and "first download's" in out and len(errors) == 1
    with pytest.raises(CheckpointError, match="does not match"):
        load_base_checkpoint(build_sam("test_vit", 64, 4), "test_vit", find_checkpoint(NAME, folder))
