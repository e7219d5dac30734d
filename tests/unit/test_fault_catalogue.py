"""The README's fault catalogue names tests that exist."""

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
README = TESTS.parent / "README.md"
SECTION = "## Faults and the tests that show them"


def catalogue() -> str:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def references() -> list[str]:
    return re.findall(r"`((?:unit|sim|real|contract)/[\w/]+\.py(?:::\w+)?)`", catalogue())


def test_every_named_test_exists():
    """Each `path::name` in the catalogue is a test function in that file (a rename breaks the map, not silently)."""
    missing = []
    for ref in references():
        path, _, name = ref.partition("::")
        source = (TESTS / path).read_text() if (TESTS / path).exists() else ""
        if not source or (name and not re.search(rf"^def {name}\(", source, re.M)):
            missing.append(ref)
    assert references() and missing == []


def test_every_row_names_a_test_or_says_why_not():
    """A row with no test reference says in words why (not modelled, not tested, the same code)."""
    rows = [line for line in catalogue().splitlines() if re.match(r"\| [A-H]\d+ \|", line)]
    assert len(rows) >= 40
    for row in rows:
        assert "`" in row or "not" in row or "same" in row, row
