"""Issue 33: a full disk or a failing write is one clear message (exit 1, no traceback) that
names the file, the cause and what to do; the last good save is kept and resumes; nothing
half-written or temporary is left. Simulated by writes that fail (``os.open``, ``os.write``
and the safetensors writer monkeypatched), and for real with a file-size limit
(``RLIMIT_FSIZE``, SIGXFSZ ignored so that writes fail with EFBIG) in a subprocess."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from safetensors import SafetensorError, safe_open
from typer.testing import CliRunner

import vrnnkit
from tests.conftest import ROOT, train_cli
from vrnnkit.cli import app
from vrnnkit.errors import WriteError, WriteWarning
from vrnnkit.io.atomic import append_bytes, atomic_path, write_json

TINY = ["--h-dim", "12", "--z-dim", "3", "--seq-len", "4", "--batch-size", "4", "--val-fraction", "0.2"]
TIMEOUT = 180
CAUSES = {  # errno: (what the message says went wrong, what it says to do)
    errno.ENOSPC: ("no space left on the device", "Free some space"),
    errno.EFBIG: ("the file is larger than the file system or the file-size limit (ulimit -f) allows",
                  "Raise the limit or write to another file system"),
    errno.EROFS: ("the file system is read-only", "Write to another folder, or make this one writable"),
    errno.EACCES: ("permission denied", "Write to another folder, or make this one writable"),
}


def _text(output: str) -> str:
    return " ".join(output.split())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".part"))


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _trainer_step(run: Path) -> int:
    with safe_open(str(run / "trainer.safetensors"), framework="pt") as handle:
        return int(handle.metadata()["step"])


def _refuse_writes(monkeypatch, refused, code: int) -> None:
    """Opening a file for writing where ``refused(path)`` fails with ``code``, as a read-only
    or full file system refuses it (every write of vrnnkit opens its file with ``os.open``)."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        name = os.fsdecode(path)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(name):
            raise OSError(code, os.strerror(code), name)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


def _disk_full_after(monkeypatch, budget: int, refused=lambda name: True) -> None:
    """``os.write`` to files where ``refused(path)`` writes ``budget`` bytes in all, then a
    short write and ENOSPC, as a disk that fills up does."""
    real_write, left = os.write, {"bytes": budget}

    def write(fd, data):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if not refused(name):
            return real_write(fd, data)
        if left["bytes"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: left["bytes"]]))
        left["bytes"] -= written
        return written

    monkeypatch.setattr(os, "write", write)


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")


def _environment() -> dict[str, str]:
    # This checkout's code in the subprocess (not an installed copy), on one thread.
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))


# ----------------------------------------------------------------------------- the write path


@pytest.mark.parametrize("code", sorted(CAUSES))
def test_a_failed_write_names_the_file_and_cause_and_keeps_the_old_file(tmp_path, code):
    target = tmp_path / "out.json"
    write_json(target, {"old": True})
    with pytest.raises(WriteError) as info, atomic_path(target) as tmp:
        tmp.write_text("half of a new file")
        raise OSError(code, os.strerror(code))
    cause, fix = CAUSES[code]
    assert str(info.value) == f"cannot write {target}: {cause}. Nothing was written; {fix[0].lower() + fix[1:]}, then try again"
    assert isinstance(info.value, OSError) and info.value.errno == code  # `except OSError` still catches it
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_library_error_that_names_an_os_error_is_a_write_error(tmp_path):
    # What safetensors (Rust) raises on a full disk: not an OSError, but it names one.
    with pytest.raises(WriteError, match="no space left on the device") as info, atomic_path(tmp_path / "m.safetensors"):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert info.value.errno == errno.ENOSPC and info.value.path == tmp_path / "m.safetensors"
    assert list(tmp_path.iterdir()) == []


def test_other_errors_in_a_write_keep_their_own_message(tmp_path):
    source = tmp_path / "missing.npy"
    with pytest.raises(FileNotFoundError) as info, atomic_path(tmp_path / "out.npy"):
        source.read_bytes()  # a read error of another file: not "cannot write out.npy"
    assert not isinstance(info.value, WriteError)
    with pytest.raises(ValueError, match="a bug"), atomic_path(tmp_path / "out.npy"):
        raise ValueError("a bug")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_where_the_file_should_be_is_a_write_error(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(WriteError, match="it is a folder, not a file"):
        write_json(tmp_path / "out.json", {})


@needs_proc
def test_an_append_that_fails_half_way_is_cut_off(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    append_bytes(log, b'{"step": 1}\n')
    _disk_full_after(monkeypatch, 5, lambda name: name == str(log))
    with pytest.raises(WriteError, match=f"cannot write {log}: no space left on the device"):
        append_bytes(log, b'{"step": 2}\n')
    assert log.read_bytes() == b'{"step": 1}\n'


# ----------------------------------------------------------------------------- training


def _fail_second_save(monkeypatch, code: int) -> None:
    """The safetensors writer as it fails on a full disk, at the second save of a run: half a
    file written, then its own error, which names the OS error."""
    import vrnnkit.training.run_dir as run_dir

    real, calls = run_dir.save_file, {"n": 0}

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] < 2:
            return real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 1000)
        raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(code)} (os error {code})")

    monkeypatch.setattr(run_dir, "save_file", save_file)


def _check_stopped_at_step_4(result, out: Path, path: Path, code: int) -> None:
    """Exit 1, one message naming the file, the cause, the last good save (step 2) and the
    resume command; the run folder as the step-2 save left it, loadable."""
    cause, fix = CAUSES[code]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert (f"error: could not save step 4 in {out}: cannot write {path}: {cause}. Training stopped; steps 3-4 are "
            f"not saved and the checkpoint of step 2 is intact. {fix}, then continue with: vrnnkit train --resume {out}"
            ) in _text(result.output)
    assert _leftovers(out) == []
    assert _steps(out) == [2] and _trainer_step(out) == 2
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "2"
    vrnnkit.load(out / "model.safetensors")


def _resumes_to_the_end(out: Path) -> None:
    resumed = train_cli("--resume", str(out))
    assert resumed.exit_code == 0, resumed.output
    assert _steps(out) == [2, 4] and _trainer_step(out) == 4
    assert vrnnkit.read_metadata(out / "model.safetensors")["step"] == "4"
    assert _leftovers(out) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_full_disk_mid_training_is_one_message_and_resumes_once_space_is_freed(tmp_path, tiny_config, monkeypatch, code):
    out = tmp_path / "run"
    _fail_second_save(monkeypatch, code)
    result = train_cli(*TINY, "--config", str(tiny_config), "--steps", "4", "--every", "2", "--out", str(out))
    _check_stopped_at_step_4(result, out, out / "trainer.safetensors", code)
    monkeypatch.undo()  # space freed
    _resumes_to_the_end(out)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_run_folder_that_turns_read_only_stops_the_run_cleanly(tmp_path, tiny_config, monkeypatch, code):
    out = tmp_path / "run"
    # Every file in the run folder refused once the first save is there (remounted read-only).
    _refuse_writes(monkeypatch, lambda name: name.startswith(str(out)) and (out / "model.safetensors").exists(), code)
    result = train_cli(*TINY, "--config", str(tiny_config), "--steps", "4", "--every", "2", "--out", str(out))
    _check_stopped_at_step_4(result, out, out / "trainer.safetensors", code)
    monkeypatch.undo()
    _resumes_to_the_end(out)


@needs_proc
def test_a_disk_that_fills_while_metrics_jsonl_is_appended_leaves_no_partial_line(tmp_path, tiny_config, monkeypatch):
    out = tmp_path / "run"
    log = out / "metrics.jsonl"
    _disk_full_after(monkeypatch, 500, lambda name: name == str(log))  # one line (~380 bytes), then a part of one
    result = train_cli(*TINY, "--config", str(tiny_config), "--steps", "4", "--every", "2", "--out", str(out))
    _check_stopped_at_step_4(result, out, log, errno.ENOSPC)
    assert log.read_text().endswith("}\n")  # the cut-off line is gone
    monkeypatch.undo()
    _resumes_to_the_end(out)


def test_a_folder_in_the_way_of_a_checkpoint_stops_the_run_cleanly(tmp_path, tiny_config):
    out = tmp_path / "run"
    blocker = out / "checkpoints" / "step-00000004.safetensors"
    blocker.mkdir(parents=True)
    result = train_cli(*TINY, "--config", str(tiny_config), "--steps", "4", "--every", "2", "--keep", "2", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert (f"could not save step 4 in {out}: cannot write {blocker}: it is a folder, not a file. Training stopped; "
            f"steps 3-4 are not saved and the checkpoint of step 2 is intact. Move the folder away or choose another "
            f"name, then continue with: vrnnkit train --resume {out}") in _text(result.output)
    assert _steps(out) == [2] and _trainer_step(out) == 2 and _leftovers(out) == []
    blocker.rmdir()
    _resumes_to_the_end(out)


def test_a_read_only_folder_on_resume_names_the_last_good_save(tmp_path, tiny_config, monkeypatch):
    out = tmp_path / "run"
    assert train_cli(*TINY, "--config", str(tiny_config), "--steps", "2", "--every", "2", "--out", str(out)).exit_code == 0
    _refuse_writes(monkeypatch, lambda name: name.startswith(str(out)), errno.EROFS)
    result = train_cli("--resume", str(out), "--steps", "4")
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = _text(result.output)
    assert f"cannot write {out / 'config.json'}: the file system is read-only" in text
    assert f"the checkpoint of step 2 in {out} is intact" in text and f"vrnnkit train --resume {out}" in text
    monkeypatch.undo()
    assert train_cli("--resume", str(out), "--steps", "4").exit_code == 0
    assert _steps(out) == [2, 4]


def test_optional_writes_that_fail_are_one_warning_each_and_training_goes_on(tmp_path, tiny_config, monkeypatch):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    _refuse_writes(monkeypatch, lambda name: name.startswith(str(out / "tensorboard")) or "/.samples." in name,
                   errno.ENOSPC)
    result = train_cli(*TINY, "--config", str(tiny_config), "--steps", "4", "--every", "2", "--log", "tensorboard",
                       "--out", str(out))
    assert result.exit_code == 0, result.output
    text = _text(result.output)
    assert "Traceback" not in text and "error:" not in text
    assert text.count("warning: --log tensorboard stopped: cannot write") == 1  # once, not at every step
    assert "no space left on the device. Training goes on; metrics.jsonl keeps every record" in text
    assert text.count("warning: trained and saved step 4") == 1 and "could not write samples.gif: no space left" in text
    assert _steps(out) == [2, 4] and vrnnkit.read_metadata(out / "model.safetensors")["step"] == "4"
    assert not (out / "samples.gif").exists() and _leftovers(out) == []


def _limited_train_script(limit: int) -> str:
    """`vrnnkit train ...` whose files may not grow past ``limit`` bytes once the first save is
    there (a real EFBIG from the kernel, in the safetensors writer too)."""
    return (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process\n"
        "from vrnnkit.training import run_dir\n"
        "real = run_dir.RunFolder.save\n"
        "def save(self, *args, **kwargs):\n"
        "    real(self, *args, **kwargs)\n"
        f"    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        "run_dir.RunFolder.save = save\n"
        "from vrnnkit.cli import app\n"
        "sys.argv = ['vrnnkit', 'train', *sys.argv[1:]]\n"
        "app()\n"
    )


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="POSIX file-size limits")
def test_a_real_file_size_limit_mid_training_is_one_message_and_resumes(tmp_path, tiny_config):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-c", _limited_train_script(64 * 1024), *TINY, "--config", str(tiny_config), "--steps", "4",
         "--every", "2", "--out", str(out)],
        env=_environment(), capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    cause, fix = CAUSES[errno.EFBIG]
    assert (f"error: could not save step 4 in {out}: cannot write {out / 'trainer.safetensors'}: {cause}. Training "
            f"stopped; steps 3-4 are not saved and the checkpoint of step 2 is intact. {fix}, then continue with: "
            f"vrnnkit train --resume {out}") in _text(done.stderr)
    assert _leftovers(out) == [] and _steps(out) == [2] and _trainer_step(out) == 2
    vrnnkit.load(out / "model.safetensors")
    _resumes_to_the_end(out)


# ----------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny image model's run folder and a clip file that fits it."""
    folder = tmp_path_factory.mktemp("trained")
    config = folder / "tiny.toml"
    config.write_text('num_sequences = 24\n[block_options.encoder]\nchannels = 4\n[block_options.decoder]\nchannels = 4\n')
    run = folder / "run"
    assert train_cli(*TINY, "--config", str(config), "--steps", "2", "--every", "2", "--out", str(run), "-q").exit_code == 0
    clip = folder / "clip.npy"
    assert CliRunner().invoke(app, ["data", "bouncing-balls", "--out", str(clip), "--count", "2", "--length", "8"]).exit_code == 0
    return run, clip


COMMANDS = {  # name: (arguments, given the run, the clip file and the output folder; the file written)
    "sample-gif": (lambda r, c, o: ["sample", "--ckpt", r, "--out", o / "s.gif"], "s.gif"),
    "sample-npy": (lambda r, c, o: ["sample", "--ckpt", r, "--out", o / "s.npy"], "s.npy"),
    "predict": (lambda r, c, o: ["predict", c, "--layout", "NTHW", "--ckpt", r, "--out", o / "p.gif"], "p.gif"),
    "eval-json": (lambda r, c, o: ["eval", c, "--layout", "NTHW", "--ckpt", r, "--iwae-samples", "2", "--json", o / "e.json"], "e.json"),
    "eval-plot": (lambda r, c, o: ["eval", c, "--layout", "NTHW", "--ckpt", r, "--iwae-samples", "2", "--plot", o / "e.png"], "e.png"),
    "export-safetensors": (lambda r, c, o: ["export", "--ckpt", r, "--format", "safetensors", "--out", o / "m.safetensors"], "m.safetensors"),
    "export-onnx": (lambda r, c, o: ["export", "--ckpt", r, "--out", o / "m.onnx"], "m.onnx"),
    "data-convert": (lambda r, c, o: ["data", "convert", c, "--layout", "NTHW", "--out", o / "c.npy"], "c.npy"),
    "data-generate": (lambda r, c, o: ["data", "bouncing-balls", "--out", o / "b.npy", "--count", "2", "--length", "4"], "b.npy"),
    "plot": (lambda r, c, o: ["plot", r, "--out", o / "curves.png"], "curves.png"),
}


def _run(trained, name: str, folder: Path):
    arguments, written = COMMANDS[name]
    run, clip = trained
    result = CliRunner().invoke(app, [str(a) for a in arguments(run, clip, folder)], env={"COLUMNS": "200"})
    return result, folder / written


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_writing_into_a_read_only_folder_says_so(trained, tmp_path, monkeypatch, name):
    folder = tmp_path / "out"
    folder.mkdir()
    _refuse_writes(monkeypatch, lambda path: path.startswith(str(folder)), errno.EROFS)
    result, written = _run(trained, name, folder)
    assert result.exit_code == 1, result.output
    cause, _ = CAUSES[errno.EROFS]
    assert f"error: cannot write {written}: {cause}. Nothing was written; write to another folder" in _text(result.output)
    assert "Traceback" not in result.output
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("name", ["sample-gif", "predict", "eval-json"])
@needs_proc
def test_a_command_that_fills_the_disk_keeps_the_old_file(trained, tmp_path, monkeypatch, name):
    folder = tmp_path / "out"
    folder.mkdir()
    written = folder / COMMANDS[name][1]
    written.write_bytes(b"the previous file")
    _disk_full_after(monkeypatch, 100, lambda path: path.startswith(str(folder)))
    result, _ = _run(trained, name, folder)
    assert result.exit_code == 1, result.output
    assert f"error: cannot write {written}: no space left on the device. Nothing was written; free some space" in _text(result.output)
    assert "Traceback" not in result.output
    assert written.read_bytes() == b"the previous file" and sorted(p.name for p in folder.iterdir()) == [written.name]


def test_a_command_without_permission_says_so(trained, tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
    else:  # root writes anywhere: refuse as a folder without write permission would
        _refuse_writes(monkeypatch, lambda path: path.startswith(str(folder)), errno.EACCES)
    try:
        result, written = _run(trained, "sample-gif", folder)
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 1, result.output
    assert f"error: cannot write {written}: permission denied" in _text(result.output) and "Traceback" not in result.output
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="POSIX file-size limits")
def test_a_real_file_size_limit_in_a_command_is_one_message(trained, tmp_path):
    """An .mp4, which ffmpeg (a child process) writes and whose failure it does not report."""
    import resource

    def limited() -> None:  # in the child (ffmpeg inherits both)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    out = tmp_path / "s.mp4"
    done = subprocess.run([sys.executable, "-m", "vrnnkit", "sample", "--ckpt", str(trained[0]), "--out", str(out)],
                          env=_environment(), capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=limited)
    assert done.returncode == 1, done.stderr
    cause, _ = CAUSES[errno.EFBIG]
    assert f"error: cannot write {out}: {cause}" in _text(done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the decode cache


def test_a_decode_cache_that_cannot_be_written_is_one_warning(tmp_path, monkeypatch):
    import imageio.v3 as iio
    import numpy as np

    from vrnnkit.data import clips

    folder, cache = tmp_path / "clips", tmp_path / "cache"
    folder.mkdir()
    for name in ("a.gif", "b.gif"):
        iio.imwrite(folder / name, np.random.default_rng(0).integers(0, 255, (4, 16, 16), dtype=np.uint8), extension=".gif")
    monkeypatch.setenv("VRNNKIT_DATA", str(cache))
    monkeypatch.setattr(clips, "_CACHE_WARNED", set())
    _refuse_writes(monkeypatch, lambda path: path.startswith(str(cache)), errno.ENOSPC)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = clips.read_clips(folder, progress=False)
    assert len(found.clips) == 2  # read all the same
    written = [w for w in caught if issubclass(w.category, WriteWarning)]
    assert len(written) == 1, [str(w.message) for w in caught]
    assert f"cannot write the decode cache {cache / 'decoded'}" in str(written[0].message)
    assert "no space left on the device; the clips are decoded again next time" in str(written[0].message)
    assert _leftovers(tmp_path) == []
