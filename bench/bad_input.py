"""How fast are bad scenario files refused? Each regression fixture (and a FIFO, a
symlink loop, a directory, a 64 MiB sparse file) goes through ``novalab validate``'s
code in-process; the time is reported as a ratio to validating a shipped scenario.

    python bench/bad_input.py [--repeat 5]

A refusal should cost about as much as validating a good file (a ratio near 1): the
loader refuses before it builds anything big.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

from real.cli import validate_files

ROOT = Path(__file__).resolve().parents[1]
GOOD = ROOT / "scenarios" / "vlan.yaml"


def best_of(path: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            validate_files([str(path)])
        best = min(best, time.perf_counter() - started)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per file; the fastest counts")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        special = Path(tmp)
        os.mkfifo(special / "fifo.yaml")
        (special / "loop.yaml").symlink_to(special / "loop.yaml")
        (special / "dir.yaml").mkdir()
        with open(special / "huge.yaml", "wb") as f:
            f.truncate(64 << 20)
        cases = sorted((ROOT / "tests" / "fixtures" / "scenarios" / "bad").glob("*.yaml"))
        cases += sorted(special.iterdir())
        baseline = best_of(GOOD, args.repeat)
        print(f"{'file':40} refusal time / time to validate {GOOD.name}")
        worst = 0.0
        for path in cases:
            ratio = best_of(path, args.repeat) / baseline
            worst = max(worst, ratio)
            print(f"{path.name:40} {ratio:8.2f}")
        print(f"{'worst':40} {worst:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
