"""The README is the user's manual: its warehouse tables and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.warehouse import QUARANTINE_COLUMNS, RUNS_COLUMNS, TABLES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_warehouse_table_and_column_is_documented():
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| (.+) \|$", README, re.MULTILINE)}
    for table, columns in {**TABLES, "runs": RUNS_COLUMNS, "quarantine": QUARANTINE_COLUMNS}.items():
        assert table in rows, f"README lacks the {table} table"
        for column in columns:
            assert re.search(rf"\b{column}\b", rows[table]), f"README's {table} row lacks {column}"


def test_ci_runs_the_readmes_test_command():
    assert "make test" in README and "make run" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
