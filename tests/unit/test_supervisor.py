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


# Once its SIGTERM handler is set it writes <own>.ready. On SIGTERM (a second one counts too) it
# marks its own file, then exits 0 once the other child's mark exists: exit 0 from both shows the two
# were told at once; 3: it waited for the other's in vain.
DRAINS_WITH = """
import pathlib, signal, sys, time
own, other = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def stop(*_):
    own.write_text(own.read_text() + "x" if own.exists() else "x")
signal.signal(signal.SIGTERM, stop)
pathlib.Path(str(own) + ".ready").touch()
while not own.exists():
    time.sleep(0.01)
deadline = time.monotonic() + 10
while not other.exists():
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)
sys.exit(0)
"""


def test_stop_together_tells_every_child_at_once_and_only_once(tmp_path: Path) -> None:
    from servers.mesh.processes import stop_together

    a, b = tmp_path / "a.mark", tmp_path / "b.mark"
    children = [
        ManagedProcess(name, [sys.executable, "-c", DRAINS_WITH, str(own), str(peer)], log_path=tmp_path / name)
        for name, own, peer in (("a", a, b), ("b", b, a))
    ]
    for child in children:
        child.start()
    wait_until(lambda: all(Path(f"{own}.ready").exists() for own in (a, b)), timeout=30, what="both handlers")
    stop_together(children, timeout=30)
    assert [child.returncode() for child in children] == [0, 0]
    assert a.read_text() == "x" and b.read_text() == "x"  # one SIGTERM each
