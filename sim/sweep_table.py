"""``sweep.csv`` written as runs finish, so a sweep of any length holds no list of its results.

Each finished run's row is appended and flushed at once (a sweep stopped part way still has
the rows of the runs that finished). The header is the first row's columns; a later run
with a topic or pool none before it had widens it: the file is rewritten row by row into a
temporary file with the wider header and renamed over the old one. At the end the rows are
put in run order the same way, so the finished file is the same whatever order the runs
finished in (locally or on a cluster). All that is kept in memory is where each row starts
in the file (two integers a run), never the rows.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

from common.analysis import sweep as plan_


class SweepTable:
    """Appends sweep rows (``common.analysis.sweep.sweep_row`` or ``crashed_row``) to ``path``."""

    def __init__(self, path: Path, parameters: dict):
        self.path = Path(path)
        self.parameters = dict(parameters)
        self.columns: list[str] = []
        self.spans: dict[int, tuple[int, int]] = {}  # run number -> (offset, length) of its row in the file
        self._file = open(self.path, "w+b")  # noqa: SIM115 (held open for the sweep; close() closes it)

    def add(self, row: dict) -> None:
        """Append ``row`` and flush it to disk, widening the header first if it has new columns."""
        wanted = plan_.columns(self.parameters, [dict.fromkeys(self.columns), row])
        if wanted != self.columns:
            self._rewrite(list(self.spans), wanted)
        self._file.seek(0, os.SEEK_END)
        start = self._file.tell()
        data = _encode(plan_.table_rows([row], self.columns)[0])
        self._file.write(data)
        self._file.flush()
        self.spans[row["run"]] = (start, len(data))

    def close(self) -> None:
        """Put the rows in run order (runs finish in any order) and close the file."""
        if self._file.closed:
            return
        order = sorted(self.spans)
        if order != list(self.spans):
            self._rewrite(order, self.columns)
        if not self.columns:  # no run finished: the header of an empty table
            self._rewrite([], plan_.columns(self.parameters, []))
        self._file.close()

    def _rewrite(self, order: list[int], columns: list[str]) -> None:
        """The file again with header ``columns`` and the rows of runs ``order``, one row
        in memory at a time; the new file replaces the old one only once it is complete."""
        temporary = self.path.with_name(f".{self.path.name}.partial")
        spans: dict[int, tuple[int, int]] = {}
        with open(temporary, "wb") as new:
            new.write(_encode(columns))
            for run in order:
                offset, length = self.spans[run]
                self._file.seek(offset)
                values = next(csv.reader(io.StringIO(self._file.read(length).decode(), newline="")))
                row = dict(zip(self.columns, values, strict=True))
                start = new.tell()
                data = _encode([row.get(c, "") for c in columns])
                new.write(data)
                spans[run] = (start, len(data))
        os.replace(temporary, self.path)
        self._file.close()
        self._file = open(self.path, "r+b")  # noqa: SIM115 (as in __init__)
        self.columns, self.spans = columns, spans


def _encode(values) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)  # the csv module's default dialect, as output.write_table
    return buffer.getvalue().encode()


#: Columns read back as text whatever they look like (swept values are added per sweep).
_TEXT_COLUMNS = frozenset({"run_dir", "failed", "errors_by_reason", "fingerprint"})


def read_rows(path: Path, parameters) -> Iterator[dict]:
    """The rows of a ``sweep.csv`` back as ``sweep_row`` made them (numbers as numbers,
    ``ok`` a bool, empty cells None), one at a time."""
    text = _TEXT_COLUMNS | set(parameters)
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            yield {name: _cell(name, value, text) for name, value in raw.items()}


def _cell(name: str, value: str, text: frozenset | set):
    if name in text:
        return value
    if value == "":
        return None
    if name == "ok":
        return value == "True"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value
