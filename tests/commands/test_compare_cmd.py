"""`elan-deploy compare OLD NEW` on two saved runs."""

from __future__ import annotations

import json
from pathlib import Path

from elan_deploy.cli import main
from tests.helpers import changed_results


def test_compare_command_reads_two_saved_runs(tiny_bench: Path, tmp_path: Path, capsys) -> None:
    results = tiny_bench / "results.json"
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(changed_results(json.loads(results.read_text()), 1.5)))
    assert main(["compare", str(results), str(results)]) == 0
    assert main(["compare", str(results), str(slower)]) == 1  # regressions exit 1, as bench --compare does
    assert "machine's speed changed" in capsys.readouterr().err
    assert main(["compare", str(results), str(tiny_bench / "report.md")]) == 2
    assert "cannot read NEW file" in capsys.readouterr().err
    assert main(["compare", str(results), str(tmp_path)]) == 2  # a folder, not a file
