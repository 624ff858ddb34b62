"""The README's Python example runs as written."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_readme_model_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## The model in ten lines\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["clips"].shape == (4, 20, 28)
    assert namespace["futures"].shape == (8, 3, 10, 28)
    assert namespace["log_px"].shape == (8,)
    assert namespace["model"].num_parameters() == 185_092
    assert (tmp_path / "model.safetensors").is_file()


def test_readme_names_the_two_setup_commands_that_the_makefile_defines():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M)
