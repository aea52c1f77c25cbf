"""The code stays ruff-clean (lint and format): CI runs only the test command, so check here."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_code_is_ruff_clean(command):
    result = subprocess.run(
        [str(RUFF), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_lists_every_rule_with_its_indicator():
    from cds_service.rules import RULE_IDS

    readme = (ROOT / "README.md").read_text()
    for rule_id in RULE_IDS:
        assert f"| `{rule_id}` |" in readme, rule_id
