"""Atomic writes and the sweep of temp files that killed writers leave behind."""

from __future__ import annotations

import os
import subprocess
import sys

from valuemech.io import atomic_write_json, load_json, sweep_orphan_temps


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_write_leaves_only_the_file(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert load_json(tmp_path / "a.json") == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_sweep_removes_temps_of_dead_writers_only(tmp_path):
    dead = tmp_path / f".stages.json.{_dead_pid()}.k2j4x9_a.tmp"
    live = tmp_path / f".pvq.json.{os.getppid()}.abcdefgh.tmp"  # a running process (our parent)
    mine = tmp_path / f".pvq.json.{os.getpid()}.abcdefgh.tmp"
    old_style = tmp_path / ".stages.json.abcdefgh.tmp"  # no pid: not ours to judge
    other = tmp_path / "notes.tmp"
    for p in (dead, live, mine, old_style, other):
        p.write_text("partial")
    assert sweep_orphan_temps(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, mine, old_style, other))


def test_opening_a_run_sweeps_its_orphans(tmp_path):
    from valuemech.config import RunConfig
    from valuemech.pipeline import open_run

    (tmp_path / "config.yaml").write_text(RunConfig().to_yaml())
    (tmp_path / "evals").mkdir()
    orphans = [tmp_path / f".stages.json.{_dead_pid()}.abcdefgh.tmp",
               tmp_path / "evals" / f".pvq.json.{_dead_pid()}.abcdefgh.tmp"]
    for p in orphans:
        p.write_text("{")
    open_run(tmp_path)
    assert not any(p.exists() for p in orphans)
