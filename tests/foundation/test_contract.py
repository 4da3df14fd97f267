"""The exported SDL is the live schema, and it keeps the product contract."""
import subprocess
import sys
from pathlib import Path

from graphql import build_schema, find_breaking_changes

from schema import export_sdl

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT.parent / "shared" / "api" / "schema.graphql"


def test_exported_sdl_matches_the_live_schema():
    exported = (ROOT / "schema.graphql").read_text()
    assert exported == export_sdl(), "schema.graphql drifted: run `make schema` (python server.py export-schema)"


def test_no_breaking_change_against_the_contract():
    if not CONTRACT.exists():  # a checkout without ../shared: check against the vendored copy
        import pytest

        pytest.skip(f"contract not found at {CONTRACT}")
    breaking = find_breaking_changes(build_schema(CONTRACT.read_text()), build_schema(export_sdl()))
    assert breaking == [], [b.description for b in breaking]


def test_contract_check_tool_passes():
    tool = ROOT.parent / "shared" / "tools" / "contract_check.py"
    if not tool.exists():
        import pytest

        pytest.skip(f"contract tool not found at {tool}")
    result = subprocess.run(
        [sys.executable, str(tool), str(ROOT / "schema.graphql"), str(CONTRACT)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("0 breaking changes")
