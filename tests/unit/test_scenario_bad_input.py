"""Bad scenario files and command lines are refused before anything runs: exit 2 and one
line naming the file (and the field), never a traceback, a hang or a blow-up.

The regression fixtures under tests/fixtures/scenarios/bad/ are the smallest files the
fuzz test (test_scenario_fuzz.py) and the issue's own cases found; special files
(directories, symlink loops, FIFOs) are made here.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from real.cli import validate_files
from sim.cli import run_scenario_main

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests" / "fixtures" / "scenarios" / "bad").glob("*.yaml"))
GOOD = ROOT / "scenarios" / "5-hosts.yaml"


def run_scenario(*argv):
    try:
        run_scenario_main([str(a) for a in argv])
    except SystemExit as done:
        return done.code
    raise AssertionError("run-scenario returned without an exit status")


def one_line_naming(capsys, path) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{path}: ") or f" {path}" in lines[0], err
    return lines[0]


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_validate_refuses_each_bad_fixture_in_one_line(path, capsys):
    """novalab validate exits 2 with one line naming the file for every bad fixture."""
    assert validate_files([str(path)]) == 2
    one_line_naming(capsys, path)


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_run_scenario_refuses_each_bad_fixture_in_one_line(path, capsys, tmp_path):
    """run-scenario exits 2 with one line, and writes no run directory."""
    assert run_scenario(path, "--out", tmp_path / "run", "--no-progress") == 2
    one_line_naming(capsys, path)
    assert not (tmp_path / "run").exists()


def special_files(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    return {"symlink loop": (loop, "cannot read"), "fifo": (fifo, "not a regular file"),
            "directory": (directory, "is a directory"), "missing": (tmp_path / "none.yaml", "no such file")}


@pytest.mark.parametrize("kind", ["symlink loop", "fifo", "directory", "missing"])
def test_special_files_are_refused_without_opening_them(kind, tmp_path, capsys):
    """A symlink loop, a FIFO (which would block an open), a directory or a missing file: exit 2, one line."""
    path, expected = special_files(tmp_path)[kind]
    assert validate_files([str(path)]) == 2
    assert expected in one_line_naming(capsys, path)
    assert run_scenario(path, "--no-progress") == 2
    assert expected in one_line_naming(capsys, path)


@pytest.mark.parametrize("make_out, expected", [
    (lambda tmp: tmp / "file", "exists and is not a directory"),
    (lambda tmp: tmp / "file" / "run", "is not a directory"),
    (lambda tmp: "", "not a usable path"),
])
def test_a_bad_out_is_refused_before_the_run(make_out, expected, tmp_path, capsys):
    """--out that can never be a run directory is refused before the simulation starts."""
    (tmp_path / "file").write_text("x")
    assert run_scenario(GOOD, "--out", make_out(tmp_path), "--no-progress") == 2
    line = one_line_naming(capsys, "--out")
    assert expected in line


def test_an_oversized_file_is_refused_by_its_size_before_it_is_read(tmp_path, capsys):
    """A file over the size bound is refused from its stat (it is never read)."""
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(64 << 20)  # sparse: no memory, no disk
    assert validate_files([str(big)]) == 2
    assert "scenario files are at most" in one_line_naming(capsys, big)


def test_several_problems_still_make_one_line(tmp_path, capsys):
    """Many mistakes in one file are reported on one line, the first few named."""
    bad = tmp_path / "many.yaml"
    bad.write_text("name: '?'\ncloud: {hosts: {count: 0}}\nworkload: {arrivals: {rate: -1}, requests: 0}\nx: 1\n")
    assert validate_files([str(bad)]) == 2
    assert "(and " in one_line_naming(capsys, bad)


@pytest.mark.parametrize("argv", [
    ["-m", "real.cli", "validate", "tests/fixtures/scenarios/bad/alias-bomb.yaml"],
    ["-m", "real.cli", "run", "tests/fixtures/scenarios/bad/deep-nesting.yaml", "--no-progress"],
    ["-m", "real.cli", "run", "tests/fixtures/scenarios/bad/trillion-hosts.yaml", "--no-progress"],
])
def test_the_commands_exit_2_with_one_line_as_processes(argv):
    """As a user runs them: exit status 2 and exactly one line on stderr, nothing on stdout."""
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stdout == ""


def test_a_fifo_does_not_block_the_command(tmp_path):
    """novalab validate on a FIFO with no writer exits 2 at once (it would block on open)."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "real.cli", "validate", str(fifo)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (done.returncode, len(done.stderr.splitlines())) == (2, 1), done.stderr
