"""The session's leak check (megatron_video/testing/leaks.py, run by tests/conftest.py at the end of
every session): an orphaned descendant is found, a live child is not, nor another session's orphan."""
import os
import subprocess
import sys
import uuid

from megatron_video.testing import leaks


def _orphan(mark: str) -> int:
    """A sleeper started in the background by a shell that exits at once: orphaned, marked."""
    shell = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], env={**os.environ, leaks.MARK: mark},
                           capture_output=True, text=True, check=True)
    return int(shell.stdout)


def test_an_orphaned_descendant_is_found_and_a_live_child_is_not():
    mark = f"test-{uuid.uuid4().hex}"
    orphan, elsewhere = _orphan(mark), _orphan(f"other-{uuid.uuid4().hex}")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, leaks.MARK: mark})
    try:
        lost = leaks.orphans(mark)
        assert list(lost) == [orphan] and "sleep 60" in lost[orphan]
        leaks.kill_orphans(lost)
        assert leaks.wait_for_orphans(mark, grace_s=10) == {}
        assert child.poll() is None
    finally:
        leaks.kill_orphans({orphan: "", elsewhere: ""})
        child.kill()
        child.wait()
