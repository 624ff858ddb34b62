"""The documentation tells the truth: its commands run, its options exist, its links resolve.

- The README's quick-start block runs as written (with its sizes shrunk), each command exiting
  0 and writing the files it names.
- Every `vrnnkit ...` line in a code block of README.md or docs/*.md parses with the real
  command line: an unknown option, a missing value or a bad type fails here.
- docs/training.md lists every option of `vrnnkit train`; every example TOML file is a valid
  training config; relative links point at files that exist; `vrnnkit --version` prints the
  version of the newest CHANGELOG release.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer.main
from typer.testing import CliRunner

import vrnnkit
import vrnnkit.cli  # imports the command modules, which register their commands
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = typer.main.get_command(vrnnkit.cli.app)

# Written by someone else and linked before it exists: the lead's page on torchrun.
LINKED_BEFORE_WRITTEN = {ROOT / "docs" / "distributed.md"}


# ----------------------------------------------------------------------------- helpers


SHELL_BLOCKS = ("bash", "sh", "shell", "console", "zsh")


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M)


def _command_lines(text: str) -> list[str]:
    """The `vrnnkit ...` lines of the shell blocks, and the `$ vrnnkit ...` lines of untagged
    blocks (the rest of those is program output), prompt stripped, continuations joined."""
    lines = []
    for language, block in _code_blocks(text):
        shell = language.strip() in SHELL_BLOCKS
        if not shell and language.strip():
            continue
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.strip()
            prompted = line.startswith("$ ")
            if prompted:
                line = line[2:].strip()
            if (shell or prompted) and (line.startswith("vrnnkit ") or line == "vrnnkit"):
                lines.append(line)
    return lines


def _resolve(args: list[str]) -> tuple[object, list[str], list[str]]:
    """The (sub)command that ``vrnnkit ARGS`` runs, the path of names to it, and its own args."""
    command, path = COMMAND, ["vrnnkit"]
    while args and hasattr(command, "commands") and args[0] in command.commands:
        command = command.commands[args[0]]
        path.append(args[0])
        args = args[1:]
    return command, path, args


def _parse(line: str) -> None:
    """Parse a documented command line as the real CLI would, without running it."""
    from typer import Exit

    args = shlex.split(line, comments=True)[1:]
    command, path, rest = _resolve(args)
    if hasattr(command, "commands"):  # a group: only its own options (--version, --help)
        assert rest and rest[0].startswith("-"), f"{line!r}: {' '.join(path)} needs a command"
    with contextlib.suppress(Exit):  # --version, --help: eager options that print and stop
        command.make_context(" ".join(path), rest)


def _quick_start_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Quick start' section"
    blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
    assert len(blocks) == 1, "the quick start has exactly one bash block"
    return blocks[0]


# What the test shrinks in the quick start, per command: the same commands on tiny sizes.
TINY = {
    ("train",): {"--steps": "3"},
    ("sample",): {"--num": "2", "--steps": "3"},
    ("data", "bouncing-balls"): {"--count": "2"},
    ("eval",): {"--num-sequences": "2", "--iwae-samples": "2", "--samples": "2", "--batch-size": "2"},
    ("predict",): {"--samples": "2"},
    ("export",): {"--steps": "2"},
}


def _shrink(args: list[str]) -> list[str]:
    _, path, _ = _resolve(args)
    tiny = dict(TINY.get(tuple(path[1:]), {}))
    out = list(args)
    for i, token in enumerate(out[:-1]):
        if token in tiny:
            out[i + 1] = tiny.pop(token)
    return out + [item for pair in tiny.items() for item in pair]


def _named_outputs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, token in enumerate(args[:-1]) if token in ("--out", "-o", "--json")]


# ----------------------------------------------------------------------------- tests


def test_the_quick_start_block_runs_and_writes_the_files_it_names(tmp_path, monkeypatch):
    """Each command runs in this process (the same code as the `vrnnkit` script, without a
    new interpreter per command), in an empty folder, on tiny sizes."""
    commands = [shlex.split(line, comments=True) for line in _quick_start_block().splitlines()]
    commands = [c for c in commands if c]
    assert {c[1] for c in commands} >= {"train", "sample", "predict", "eval", "export"}
    assert all(c[0] == "vrnnkit" for c in commands)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VRNNKIT_DEBUG", raising=False)
    runner = CliRunner()
    for command in commands:
        args = _shrink(command[1:])
        result = runner.invoke(vrnnkit.cli.app, args)
        assert result.exit_code == 0, f"{' '.join(command)} exited {result.exit_code}:\n{result.output}{result.exception!r}"
        for name in _named_outputs(args):
            path = tmp_path / name
            assert path.exists(), f"{' '.join(command)} did not write {name}"
            if path.is_dir():  # a run folder
                assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def test_the_quick_start_shrinks_every_size_it_meant_to():
    """If the README drops an option the test shrinks, the test must still run small."""
    block = _quick_start_block()
    for line in block.splitlines():
        args = shlex.split(line, comments=True)
        if not args:
            continue
        shrunk = _shrink(args[1:])
        _, path, _ = _resolve(shrunk)
        for option, value in TINY.get(tuple(path[1:]), {}).items():
            assert shrunk[shrunk.index(option) + 1] == value


def _all_command_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for line in _command_lines(doc.read_text()):
            found.append((doc.relative_to(ROOT).as_posix(), line))
    return found


def test_the_docs_show_many_commands():
    lines = _all_command_lines()
    assert len(lines) > 40
    documented = {tuple(_resolve(shlex.split(line, comments=True)[1:])[1]) for _, line in lines}
    for name in ("train", "sample", "predict", "eval", "export", "blocks"):
        assert ("vrnnkit", name) in documented
    assert ("vrnnkit", "data", "bouncing-balls") in documented
    assert ("vrnnkit", "data", "moving-mnist") in documented


# docs/troubleshooting.md shows what a mistake prints: these lines must keep failing.
DELIBERATE_MISTAKES = {"vrnnkit train --stepz 10", "vrnnkit train --steps ten"}


@pytest.mark.parametrize(("doc", "line"), _all_command_lines(), ids=lambda v: v[:70])
def test_every_documented_command_line_parses(doc, line):
    assert "<" not in line and ">" not in line, f"{doc}: a placeholder in {line!r}"
    if line in DELIBERATE_MISTAKES:
        from typer._click.exceptions import UsageError

        assert doc == "docs/troubleshooting.md"
        with pytest.raises(UsageError):
            _parse(line)
        return
    _parse(line)


def test_the_parse_check_catches_what_it_should():
    from typer._click.exceptions import UsageError

    _parse("vrnnkit train --steps 10 --out runs/x  # a comment")
    _parse("vrnnkit data bouncing-balls --out balls.npy --count 4")
    _parse("vrnnkit --version")
    for bad in (
        "vrnnkit train --stepz 10",  # unknown option
        "vrnnkit train --steps",  # missing value
        "vrnnkit train --steps ten",  # bad type
        "vrnnkit predict --context 5",  # a required argument left out
        "vrnnkit data bouncing-balls --out b.npy --digits 2",  # an option of another command
    ):
        with pytest.raises(UsageError):
            _parse(bad)


def test_training_md_lists_every_option_of_vrnnkit_train():
    text = (ROOT / "docs" / "training.md").read_text()
    train = COMMAND.commands["train"]
    for param in train.params:
        for name in param.opts:
            if name.startswith("--") and name != "--help":
                assert f"`{name}`" in text, f"docs/training.md does not list {name}"


def test_every_example_config_is_a_valid_training_config():
    from vrnnkit.training import TrainConfig
    from vrnnkit.training.config import read_toml

    paths = sorted((ROOT / "examples").glob("*.toml"))
    assert len(paths) >= 3
    for path in paths:
        TrainConfig.from_dict(read_toml(path))
        header = path.read_text()
        measured = "2-core CPU" in header or "Unmeasured:" in header
        assert measured, f"{path.name}: the header says where its time was measured (or that it was not)"


def test_relative_links_in_the_docs_point_at_files():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path = (doc.parent / target).resolve()
            assert path.exists() or path in LINKED_BEFORE_WRITTEN, f"{doc.name}: broken link {target}"


def test_version_option_prints_the_newest_changelog_release():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.M)
    assert released, "CHANGELOG.md names no release"
    assert vrnnkit.__version__ == released[0]
    result = CliRunner().invoke(vrnnkit.cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"vrnnkit {released[0]}"


def test_the_installed_command_prints_the_version():
    result = subprocess.run(
        [sys.executable, "-m", "vrnnkit", "--version"], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == f"vrnnkit {vrnnkit.__version__}"


def test_readme_links_every_page_of_the_docs():
    readme = (ROOT / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"


def test_docs_index_links_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/README.md does not link {page.name}"


def test_readme_images_are_small():
    for image in Path(ROOT / "docs" / "images").iterdir():
        assert image.stat().st_size < 1_000_000, f"{image.name} is over 1 MB"


def test_the_plugin_example_in_plugins_md_works(tmp_path, monkeypatch):
    from vrnnkit.registry import unregister

    text = (ROOT / "docs" / "plugins.md").read_text()
    blocks = [body for language, body in _code_blocks(text) if language.strip() == "python"]
    module, usage = blocks[0], blocks[1]
    assert module.startswith("# my_blocks/vrnnkit_blocks.py")
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(module, "plugins.md (module)", "exec"), {"__name__": "my_blocks.vrnnkit_blocks"})
        usage = usage.replace("import my_blocks.vrnnkit_blocks", "pass")
        namespace: dict = {}
        exec(compile(usage, "plugins.md (usage)", "exec"), namespace)
        model = namespace["model"]
        assert namespace["clips"].shape == (2, 5, 8)
        assert type(model.likelihood).__name__ == "Laplace"
        loaded = vrnnkit.load(tmp_path / "laplace.safetensors")
        x = namespace["x"]
        g = torch.Generator().manual_seed(0)
        assert torch.allclose(loaded(x, generator=g).loss, model(x, generator=torch.Generator().manual_seed(0)).loss)
        assert torch.isfinite(model.log_likelihood(x[:2], k=3)).all()
        assert model.sample(2, 3, mean=False, generator=g).shape == (2, 3, 8)
    finally:
        unregister("likelihood", "laplace")
        unregister("posterior", "gated")


# An absolute path in the docs is a path of the machine they were written on.
ABSOLUTE_PATH = re.compile(r"""(?:^|[\s"'`(=\[,])(/[A-Za-z][\w.+-]*(?:/[\w.+-]*)*)""", re.M)
ALLOWED_ABSOLUTE_PATHS = {"/dev/null", "/proc/meminfo"}  # system files, the same on every Linux


def _absolute_paths(text: str) -> list[str]:
    return [m.group(1) for m in ABSOLUTE_PATH.finditer(text) if m.group(1) not in ALLOWED_ABSOLUTE_PATHS]


def test_no_machine_paths_in_the_readme_docs_or_examples():
    files = [*DOCS, *sorted(p for p in (ROOT / "examples").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    found = [f"{path.relative_to(ROOT)}:{number}: {hit}"
             for path in files
             for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             for hit in _absolute_paths(line)]
    assert found == [], "absolute paths (use the data cache, a relative path or a placeholder):\n" + "\n".join(found)


def test_the_machine_path_check_catches_what_it_should():
    assert _absolute_paths('mnist-dir = "/home/me/mnist"') == ["/home/me/mnist"]
    assert _absolute_paths("vrnnkit train --out /tmp/x > /dev/null") == ["/tmp/x"]
    assert _absolute_paths("see https://example.org/a/b, bits/dim, runs/quick, ~/.cache/vrnnkit") == []


def test_the_readme_mentions_shell_completion():
    assert "vrnnkit --install-completion" in (ROOT / "README.md").read_text()
    result = CliRunner().invoke(vrnnkit.cli.app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in result.output
