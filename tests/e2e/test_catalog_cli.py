"""`mvideo catalog`: add, list and describe feature sets and save a version a training config names."""
import shutil

import pandas as pd

from megatron_video.cli.main import main
from megatron_video.config.loader import load_config
from megatron_video.data.catalog import load_catalog
from megatron_video.data.selection import select_clips


def test_catalog_commands_add_list_describe_and_version(demo_run, tmp_path, capsys):
    _, output = demo_run
    root = tmp_path / "curated"
    shutil.copytree(output, root)
    keys = list(load_catalog(root)["key"])
    scores = tmp_path / "motion.csv"
    pd.DataFrame({"key": keys, "motion_score": [i / len(keys) for i in range(len(keys))]}).to_csv(scores, index=False)

    assert main(["catalog", "add", "motion", str(scores), f"root={root}"]) == 0
    out = capsys.readouterr().out
    assert "no shard was rewritten" in out
    assert f"motion_score             float64    {len(keys)}/{len(keys)} clips" in out

    assert main(["catalog", "version", "calm", "filter=motion_score < 0.5", "description=the calmer half",
                 f"root={root}"]) == 0
    assert f"saved dataset version 'calm': {(len(keys) + 1) // 2} clips" in capsys.readouterr().out

    assert main(["catalog", f"root={root}"]) == 0  # list is the default action
    out = capsys.readouterr().out
    assert f"{len(keys)} clips in" in out and "motion" in out and "calm" in out

    assert main(["catalog", "describe", "calm", f"root={root}"]) == 0
    assert "filter: motion_score < 0.5" in capsys.readouterr().out

    cfg = load_config("demo", [f"data.shards={root}", "data.version=calm"])
    assert len(select_clips(cfg.data).keys) == (len(keys) + 1) // 2

    assert main(["catalog", "describe", "nothing", f"root={root}"]) == 2
    assert "catalog.name" in capsys.readouterr().err
    assert main(["catalog", "version", "typo", "filter=motion_scor < 1", f"root={root}"]) == 2
    assert "motion_scor" in capsys.readouterr().err


def test_view_refuses_a_bad_filter_before_serving(demo_run, tmp_path, capsys):
    _, output = demo_run
    assert main(["view", f"root={output}", "filter=duraton_s > 3", "port=1"]) == 2
    err = capsys.readouterr().err
    assert "data.filter" in err and "unknown column 'duraton_s' (did you mean 'duration_s'?)" in err
    assert main(["view", f"root={tmp_path / 'absent'}"]) == 2
    assert "data.shards" in capsys.readouterr().err
