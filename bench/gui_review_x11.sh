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
. bench/x11.sh
OUT=${OUT:-/tmp/inspector-x11-review}
rm -rf "$OUT" && mkdir -p "$OUT/pair"
cp assets/demo/demo.mp4 assets/demo/demo2.mp4 "$OUT/pair/"
P="$OUT/pair/demo2.inspector"
inspector scan "$OUT/pair/demo.mp4" "$OUT/pair/demo2.mp4" --project "$P" -q >/dev/null 2>&1
for run in demo demo2; do
  inspector positions import "$OUT/pair/$run.mp4" "assets/demo/${run}_positions.csv" --project "$P" >/dev/null
done
inspector positions reference demo.mp4 --project "$P" >/dev/null
x11_start 78
app_start "$OUT/gui.log" "$OUT/pair/demo2.mp4"
xdotool key r; sleep 1.5
shot review_first
for _ in 1 2 3 4 5; do xdotool key x; sleep 1; done
sleep 6  # the background refit and reclassification
shot after_five_reviews
xdotool key F5; sleep 6
shot after_f5
app_stop
printf 'not a video' > "$OUT/bad.mp4"
app_start "$OUT/gui_bad.log" "$OUT/bad.mp4"
shot bad_file
app_stop; x11_stop
python - "$P" <<'PY'
import sys
from inspector.store import Store
with Store(sys.argv[1]) as store:
    print("head versions:", [(h.version, h.note) for h in store.head_versions()])
    print("examples from reviews:", sum(e.source == "review" for e in store.examples()))
    print("reviewed:", {s: sum(f.status == s for f in store.findings()) for s in ("open", "confirmed", "rejected")})
PY
