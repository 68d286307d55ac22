"""kill -9 in the middle of a run, then rerun: exactly the clips of an uninterrupted run, once each."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from curator.run import curate

RUN_SCRIPT = textwrap.dedent("""
    import sys, yaml
    from curator.config import CurateConfig
    from curator.run import curate
    fields = yaml.safe_load(open(sys.argv[3]))
    curate(CurateConfig(input=sys.argv[1], output=sys.argv[2], **fields), progress=False)
""")


def committed_shards(ledger_path) -> int:
    if not os.path.exists(ledger_path):
        return 0
    try:
        with sqlite3.connect(ledger_path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM shards").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


def test_kill_9_then_resume_is_exactly_once(footage, demo_run, make_config, read_shards, tmp_path):
    _, reference_output = demo_run
    reference_keys = sorted(key for key, _, _ in read_shards(reference_output))
    output = tmp_path / "out"
    recipe = os.path.join(os.path.dirname(__file__), "..", "..", "recipes", "curate", "demo.yaml")
    process = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(footage), str(output), recipe],
                               cwd=os.path.dirname(recipe) + "/../..")
    ledger = output / "ledger.sqlite"
    deadline = time.time() + 240
    while committed_shards(ledger) == 0:
        assert process.poll() is None, "the run ended before its first shard could be interrupted"
        assert time.time() < deadline, "no shard committed within 240 s"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with sqlite3.connect(ledger) as db:
        unfinished = 5 - db.execute("SELECT COUNT(*) FROM inputs WHERE status = 'done'").fetchone()[0]
    assert unfinished > 0, "the kill came after the last input finished: nothing was resumed"

    summary = curate(make_config(footage, output), progress=False)
    assert summary.inputs_by_status == {"done": 5}
    keys = [key for key, _, _ in read_shards(output)]
    assert len(keys) == len(set(keys)), "a clip was written twice"
    assert sorted(keys) == reference_keys
    assert not [p for p in (output / "shards").iterdir() if p.name.endswith(".tmp")]
