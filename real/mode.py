"""``run-scenario --mode real``: not built yet (see the real-mode issue)."""

import sys

EXIT_BAD_INPUT = 2


def run(args) -> int:
    print(
        "run-scenario: real mode is not built yet; this release simulates only "
        "(run without --mode, or with --mode sim)",
        file=sys.stderr,
    )
    return EXIT_BAD_INPUT
