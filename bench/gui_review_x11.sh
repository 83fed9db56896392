#!/usr/bin/env bash
# The review desk of issues 12 and 14 with keys in a real X11 window (Xvfb + xdotool): the demo pair
# scanned, positions and the reference run set, the app opened on demo2; R starts the review queue,
# X five times (the app learns from the five reviews in the background: a refit), F5 once more;
# screenshots in $OUT, then the head versions and the examples learned from the reviews. Last, the
# app started on an unreadable file: its error dialog, screenshot.
# Needs: apt-get install xvfb xdotool imagemagick; the project venv in .venv.
set -e
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${OUT:-/tmp/inspector-x11-review}
rm -rf "$OUT" && mkdir -p "$OUT/pair"
cp assets/demo/demo.mp4 assets/demo/demo2.mp4 "$OUT/pair/"
P="$OUT/pair/demo2.inspector"
inspector scan "$OUT/pair/demo.mp4" "$OUT/pair/demo2.mp4" --project "$P" -q >/dev/null 2>&1
for run in demo demo2; do
  inspector positions import "$OUT/pair/$run.mp4" "assets/demo/${run}_positions.csv" --project "$P" >/dev/null
done
inspector positions reference demo.mp4 --project "$P" >/dev/null
export DISPLAY=:78
Xvfb :78 -screen 0 1440x900x24 >/dev/null 2>&1 &
XVFB=$!
sleep 2
HOME="$OUT" inspector gui "$OUT/pair/demo2.mp4" >"$OUT/gui.log" 2>&1 &
APP=$!
sleep 12
WIN=$(xdotool search --onlyvisible --name "inspector" | tail -1)
xdotool windowfocus --sync "$WIN"; sleep 0.5
xdotool key r; sleep 1.5
import -window root "$OUT/review_first.png"
for _ in 1 2 3 4 5; do xdotool key x; sleep 1; done
sleep 6  # the background refit and reclassification
import -window root "$OUT/after_five_reviews.png"
xdotool key F5; sleep 6
import -window root "$OUT/after_f5.png"
kill $APP; sleep 1
printf 'not a video' > "$OUT/bad.mp4"
HOME="$OUT" inspector gui "$OUT/bad.mp4" >"$OUT/gui_bad.log" 2>&1 &
APP=$!
sleep 10
import -window root "$OUT/bad_file.png"
kill $APP; sleep 1; kill $XVFB
python - "$P" <<'PY'
import sys
from inspector.store import Store
with Store(sys.argv[1]) as store:
    print("head versions:", [(h.version, h.note) for h in store.head_versions()])
    print("examples from reviews:", sum(e.source == "review" for e in store.examples()))
    print("reviewed:", {s: sum(f.status == s for f in store.findings()) for s in ("open", "confirmed", "rejected")})
PY
