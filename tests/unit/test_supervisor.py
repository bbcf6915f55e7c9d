"""The mesh supervisor with real child processes: a dead child is restarted with the same command
line after a backoff, and one that keeps crashing is given up on (and reported), never looped."""

from __future__ import annotations

import sys
from pathlib import Path

from servers.mesh.processes import ManagedProcess, wait_until
from servers.mesh.supervisor import RestartPolicy, Supervisor

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
FAST = RestartPolicy(initial_backoff_seconds=0.05, max_backoff_seconds=0.2, quick_seconds=60, give_up_after=3)


def test_a_killed_child_is_restarted(tmp_path: Path) -> None:
    sleeper = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "s.log"
    )
    lines: list[str] = []
    supervisor = Supervisor(FAST, report=lines.append, interval=0.02)
    supervisor.watch(sleeper.start())
    supervisor.start()
    try:
        first_pid = sleeper.pid
        sleeper.kill()
        wait_until(lambda: supervisor.restarts("sleeper") == 1 and sleeper.alive(), timeout=30, what="a restart")
        assert sleeper.pid != first_pid
        assert "sleeper exited unexpectedly (exit code -9)" in lines[0]
    finally:
        supervisor.stop()
        sleeper.stop()


def test_a_child_that_keeps_crashing_is_given_up_on(tmp_path: Path) -> None:
    crasher = ManagedProcess("crasher", [sys.executable, "-c", "raise SystemExit(3)"], log_path=tmp_path / "c.log")
    lines: list[str] = []
    supervisor = Supervisor(FAST, report=lines.append, interval=0.02)
    supervisor.watch(crasher.start())
    supervisor.start()
    try:
        wait_until(lambda: supervisor.given_up() == ["crasher"], timeout=30, what="giving up")
        assert supervisor.restarts("crasher") == 2  # crashes 1 and 2 restarted, the third ends it
        assert "crashed 3 times in a row (exit code 3)" in lines[-1] and "keeps serving" in lines[-1]
    finally:
        supervisor.stop()


def test_stopping_the_supervisor_first_lets_children_exit_on_purpose(tmp_path: Path) -> None:
    sleeper = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "s.log"
    )
    supervisor = Supervisor(FAST, interval=0.02)
    supervisor.watch(sleeper.start())
    supervisor.start()
    supervisor.stop()
    sleeper.stop()
    assert not sleeper.alive() and supervisor.restarts("sleeper") == 0


def test_a_clean_exit_is_respected(tmp_path: Path) -> None:
    done = ManagedProcess("done", [sys.executable, "-c", "pass"], log_path=tmp_path / "d.log")
    lines: list[str] = []
    supervisor = Supervisor(FAST, report=lines.append, interval=0.02)
    supervisor.watch(done.start())
    supervisor.start()
    try:
        wait_until(lambda: bool(lines), timeout=30, what="the report")
        assert "exited cleanly" in lines[0] and supervisor.restarts("done") == 0
    finally:
        supervisor.stop()
