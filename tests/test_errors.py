"""The code registry and the README's table agree, code for code."""

from __future__ import annotations

import re
from pathlib import Path

from iris_credexec.errors import Code

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_code_is_documented_once_and_no_other() -> None:
    text = README.read_text()
    section = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", section, flags=re.M)
    assert sorted(documented) == sorted(c.name for c in Code)
    assert len(documented) == len(set(documented))


def test_every_code_has_a_meaning_and_a_fix() -> None:
    for code in Code:
        assert code.meaning.endswith(".") and code.fix.endswith("."), code
