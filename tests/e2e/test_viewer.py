"""`mvideo view` against the training loader: for several filters, the count the page shows in
headless Chromium is the number of samples the loader yields; a bad filter is named on the page."""
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest

from megatron_video.config.run import DataConfig
from megatron_video.data.catalog import add_feature_set, load_catalog
from megatron_video.data.dataset import ClipDataset
from megatron_video.data.versions import save_version
from megatron_video.viewer.app import create_app

VAL_FRACTION = 0.25
FILTERS = [  # (version, filter)
    ("", ""),
    ("", "duration_s >= 4"),
    ("", "aesthetic_score > 0.5 and duration_s < 8"),
    ("", "caption contains 'clip number' or aesthetic_score < 0.2"),
    ("long", ""),
    ("long", "aesthetic_score > 0.3"),
]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _score(key: str) -> float:
    """A stand-in aesthetic score: fixed per key, spread over [0, 1)."""
    # md5, not the validation split's sha1: a score that predicted the split would hide it.
    return int(hashlib.md5(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF


@pytest.fixture(scope="module")
def curated(demo_run, tmp_path_factory):
    """A copy of the demo curation with two feature sets and a dataset version added."""
    _, output = demo_run
    root = tmp_path_factory.mktemp("viewer") / "curated"
    shutil.copytree(output, root)
    keys = list(load_catalog(root)["key"])
    add_feature_set(root, "aesthetic", pd.DataFrame({"key": keys, "aesthetic_score": [_score(k) for k in keys]}))
    add_feature_set(root, "captions", pd.DataFrame({"key": keys[::3], "caption": [f"clip number {i}"
                                                                                 for i in range(len(keys[::3]))]}))
    save_version(root, "long", "duration_s >= 4", None)
    return root


@pytest.fixture(scope="module")
def server(curated):
    import uvicorn

    app = create_app(curated, val_fraction=VAL_FRACTION, page_size=12)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the viewer did not start"
        time.sleep(0.05)
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def loader_counts(curated) -> dict[tuple[str, str], tuple[int, int]]:
    """(train, validation) samples the training loader yields for each (version, filter)."""
    counts = {}
    for version, expression in FILTERS:
        cfgs = [DataConfig(shards=str(curated), frames=1, height=16, width=16, num_workers=0,
                           val_fraction=VAL_FRACTION, filter=expression, version=version) for _ in range(2)]
        counts[(version, expression)] = tuple(sum(1 for _ in ClipDataset(cfg, split, seed=0, repeat=False))
                                              for cfg, split in zip(cfgs, ("train", "val")))
    return counts


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _page_url(base: str, version: str, expression: str) -> str:
    return f"{base}/?" + urllib.parse.urlencode({"filter": expression, "version": version})


def _browser(*args: str, profile) -> str:
    result = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio",
                             f"--user-data-dir={profile}", "--virtual-time-budget=20000", *args],
                            capture_output=True, text=True, timeout=180, check=True)
    return result.stdout


def test_the_api_counts_what_the_loader_yields(server, loader_counts):
    validations = []
    for version, expression in FILTERS:
        status, body = _get(f"{server}/api/clips?" + urllib.parse.urlencode({"filter": expression,
                                                                              "version": version}))
        assert status == 200, body
        shown = json.loads(body)
        assert (shown["train"], shown["validation"]) == loader_counts[(version, expression)], expression
        assert shown["count"] == shown["train"] + shown["validation"] > 0
        validations.append(shown["validation"])
    assert any(validations), "the split should be exercised: some filter should keep validation clips"
    status, body = _get(f"{server}/api/clips?filter=aesthetc_score+%3E+1")
    assert status == 400 and "aesthetc_score" in json.loads(body)["error"]


def test_clips_ledger_and_read_only_routes(server, curated, demo_run):
    summary, _ = demo_run
    clips = json.loads(_get(f"{server}/api/clips?limit=2")[1])["clips"]
    row = load_catalog(curated).set_index("key").loc[clips[0]["key"]]
    with tarfile.open(curated / "shards" / row["shard"]) as tar:
        expected = tar.extractfile(f"{clips[0]['key']}.mp4").read()
    status, served = _get(f"{server}/clip/{clips[0]['key']}.mp4")
    assert status == 200 and served == expected
    assert clips[0]["scores"]["aesthetic_score"] == pytest.approx(_score(clips[0]["key"]))
    assert _get(f"{server}/clip/no_such_clip.mp4")[0] == 404

    ledger = json.loads(_get(f"{server}/api/ledger")[1])
    assert ledger["inputs_by_status"] == summary.inputs_by_status
    assert sum(f["inputs"] for f in ledger["failures"]) == sum(
        n for status, n in summary.inputs_by_status.items() if status != "done")

    request = urllib.request.Request(f"{server}/api/clips", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 405


@pytest.mark.skipif(BROWSER is None, reason="needs Chromium: apt-get install chromium (scripts/install.sh)")
def test_the_page_in_chromium_shows_the_loaders_count(server, loader_counts, tmp_path):
    for version, expression in FILTERS[::2] + FILTERS[-1:]:  # a browser start per page: four pages
        dom = _browser("--dump-dom", _page_url(server, version, expression), profile=tmp_path / "profile")
        assert 'data-state="ready"' in dom, dom[-2000:]
        count = int(re.search(r'<b id="count">(\d+)</b>', dom).group(1))
        train, val = map(int, re.search(r'<span id="splits">train (\d+), validation (\d+)</span>', dom).groups())
        assert (train, val) == loader_counts[(version, expression)], (version, expression)
        assert count == train + val
        assert dom.count('class="card"') == min(count, 12)  # one page of clips
    dom = _browser("--dump-dom", _page_url(server, "", "aesthetc_score > 0.5"), profile=tmp_path / "profile")
    assert 'data-state="error"' in dom
    assert "unknown column 'aesthetc_score' (did you mean 'aesthetic_score'?)" in dom

    shot = tmp_path / "viewer.png"
    _browser(f"--screenshot={shot}", "--window-size=1400,1000", _page_url(server, "", "duration_s >= 4"),
             profile=tmp_path / "profile")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(set(image.convert("L").getdata())) > 50, "the screenshot should show a rendered page"
