"""Data sets that fetch themselves: a real HTTP server on 127.0.0.1 serves ../shared/data."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import JSB_FILE, MNIST_DIR
from vrnnkit.cli import app
from vrnnkit.data import catalog, download
from vrnnkit.errors import ConfigError, DownloadError

SHARED = MNIST_DIR.parent
needs_shared = pytest.mark.skipif(not (MNIST_DIR.is_dir() and JSB_FILE.is_file()), reason="../shared/data is absent")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``root``; ``mode`` "drop" sends half of each file then hangs up, "no-range"
    ignores range requests; ``requests`` records (path, Range header)."""

    root: Path
    mode = "ok"
    requests: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        type(self).requests.append((self.path, self.headers.get("Range")))
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        body = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range")
        if wanted and self.mode != "no-range":
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.mode == "drop":
            self.wfile.write(body[start : start + (len(body) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve(monkeypatch) -> Iterator:
    """serve(root, mode): a server in a thread, set as $VRNNKIT_DATA_MIRROR; returns its handler."""
    servers = []

    def start(root: Path, mode: str = "ok") -> type[_Handler]:
        handler = type("Handler", (_Handler,), {"root": root, "mode": mode, "requests": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv(catalog.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        return handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(catalog.DATA_ENV, str(folder))
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@needs_shared
def test_the_checksums_kept_in_the_package_match_the_shared_copies():
    for dataset in catalog.DATASETS.values():
        for file in dataset.files:
            assert download._verified(SHARED / dataset.name / file.name, file), file.name
            assert (SHARED / dataset.name / file.name).stat().st_size == file.size


@needs_shared
def test_download_verifies_and_caches_both_data_sets(serve, cache):
    handler = serve(SHARED)
    result = CliRunner().invoke(app, ["data", "download", "mnist"])
    assert result.exit_code == 0, result.output
    assert _files(cache / "mnist") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for name in _files(cache / "mnist"):
        assert (cache / "mnist" / name).read_bytes() == (MNIST_DIR / name).read_bytes()
    result = CliRunner().invoke(app, ["data", "download", "jsb-chorales"])
    assert result.exit_code == 0, result.output
    assert (cache / "jsb-chorales" / JSB_FILE.name).read_bytes() == JSB_FILE.read_bytes()
    count = len(handler.requests)
    assert download.fetch("mnist") == cache / "mnist"  # present and verified: no request
    assert len(handler.requests) == count


def test_an_unknown_data_set_lists_the_known_ones(cache):
    result = CliRunner().invoke(app, ["data", "download", "cifar"])
    assert result.exit_code == 2
    assert "unknown data set 'cifar'" in result.output and "mnist, jsb-chorales" in result.output
    assert not cache.exists()


@needs_shared
def test_a_checksum_mismatch_keeps_nothing(serve, cache, tmp_path):
    mirror = tmp_path / "mirror" / "jsb-chorales"
    mirror.mkdir(parents=True)
    (mirror / JSB_FILE.name).write_bytes(JSB_FILE.read_bytes().replace(b"72", b"73", 1))
    serve(tmp_path / "mirror")
    result = CliRunner().invoke(app, ["data", "download", "jsb-chorales"])
    assert result.exit_code == 1
    assert "expected SHA-256" in result.output and "not kept" in result.output and "Traceback" not in result.output
    assert _files(cache / "jsb-chorales") == []


@needs_shared
def test_a_dropped_connection_leaves_only_a_part_file_and_the_next_attempt_resumes(serve, cache):
    serve(SHARED, mode="drop")
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download.fetch("jsb-chorales", on_progress=lambda *a: None)
    folder = cache / "jsb-chorales"
    assert _files(folder) == [f".{JSB_FILE.name}.part"]
    half = (folder / f".{JSB_FILE.name}.part").stat().st_size
    assert 0 < half < JSB_FILE.stat().st_size
    handler = serve(SHARED)
    download.fetch("jsb-chorales", on_progress=lambda *a: None)
    assert handler.requests == [(f"/jsb-chorales/{JSB_FILE.name}", f"bytes={half}-")]
    assert _files(folder) == [JSB_FILE.name]
    assert (folder / JSB_FILE.name).read_bytes() == JSB_FILE.read_bytes()


@needs_shared
def test_a_server_without_ranges_restarts_the_file(serve, cache):
    folder = cache / "jsb-chorales"
    folder.mkdir(parents=True)
    (folder / f".{JSB_FILE.name}.part").write_bytes(b"garbage that is not a prefix")
    serve(SHARED, mode="no-range")
    download.fetch("jsb-chorales", on_progress=lambda *a: None)
    assert _files(folder) == [JSB_FILE.name]
    assert hashlib.sha256((folder / JSB_FILE.name).read_bytes()).hexdigest() == catalog.DATASETS["jsb-chorales"].files[0].sha256


def test_a_missing_file_names_the_url_and_the_folder(serve, cache, tmp_path):
    serve(tmp_path)  # an empty mirror: 404
    result = CliRunner().invoke(app, ["data", "download", "mnist"])
    assert result.exit_code == 1
    assert "HTTP 404" in result.output and "/mnist/t10k-images-idx3-ubyte.gz" in result.output
    assert f"put it in {cache / 'mnist'}" in " ".join(result.output.split())
    assert _files(cache / "mnist") == []


def test_no_network_says_what_to_fetch_by_hand(cache, monkeypatch):
    monkeypatch.setenv(catalog.MIRROR_ENV, "http://127.0.0.1:9")  # the discard port: refused
    with pytest.raises(DownloadError, match=re.escape("Offline? Download http://127.0.0.1:9/mnist/t10k-images-idx3-ubyte.gz by hand")):
        download.fetch("mnist")


def test_a_read_only_cache_folder_is_refused_before_any_download(serve, cache, tmp_path, monkeypatch):
    handler = serve(tmp_path)
    cache.mkdir()
    if os.geteuid() != 0:
        cache.chmod(0o555)
    else:  # root writes anywhere: make the write fail as a read-only folder would
        def read_only(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(download.tempfile, "mkstemp", read_only)
    try:
        result = CliRunner().invoke(app, ["data", "download", "mnist"])
    finally:
        cache.chmod(0o755)
    assert result.exit_code == 1  # an OS error, like every failed write (issue 33)
    text = " ".join(result.output.split())
    assert f"cannot write {cache / 'mnist'}: permission denied" in text and "VRNNKIT_DATA=PATH" in text
    assert "Traceback" not in text
    assert handler.requests == [] and [p for p in cache.rglob("*") if p.is_file()] == []


def test_a_file_in_the_way_of_the_cache_is_refused(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file")
    with pytest.raises(ConfigError, match="a file is in the way"):
        download.fetch("mnist", blocker)


@needs_shared
def test_train_on_built_in_names_downloads_into_the_cache(serve, cache):
    serve(SHARED)
    from tests.conftest import train_cli

    result = train_cli("jsb-chorales", "--steps", "2", "--every", "2", "--h-dim", "8", "--z-dim", "4",
                       "--batch-size", "8", "--out", str(cache.parent / "run"), "--quiet")
    assert result.exit_code == 0, result.output
    assert _files(cache / "jsb-chorales") == [JSB_FILE.name]
    shutil.rmtree(cache / "jsb-chorales")  # seq-mnist: the MNIST folder comes from the cache too
    result = train_cli("seq-mnist", "--steps", "2", "--every", "2", "--h-dim", "8", "--z-dim", "4", "--seq-len", "28",
                       "--batch-size", "8", "--out", str(cache.parent / "run2"), "--quiet")
    assert result.exit_code == 0, result.output
    assert _files(cache / "mnist") == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_train_on_moving_mnist_offline_names_the_url_and_writes_no_run(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MIRROR_ENV, "http://127.0.0.1:9")  # the discard port: refused
    from tests.conftest import train_cli

    result = train_cli("moving-mnist", "--steps", "1", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "http://127.0.0.1:9/mnist/t10k-images-idx3-ubyte.gz" in text and f"put it in {cache / 'mnist'}" in text
    assert not (tmp_path / "run").exists() and [p for p in cache.rglob("*") if p.is_file()] == []
