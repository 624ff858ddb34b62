from __future__ import annotations

from typer.testing import CliRunner

import vrnnkit
from vrnnkit.cli import app

runner = CliRunner()


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"vrnnkit {vrnnkit.__version__}"


def test_blocks_lists_every_kind_and_name():
    result = runner.invoke(app, ["blocks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for kind, names in vrnnkit.list_blocks().items():
        assert kind in result.output
        for name in names:
            assert name in result.output


def test_an_unknown_command_exits_with_code_2_and_no_traceback():
    result = runner.invoke(app, ["trian"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
