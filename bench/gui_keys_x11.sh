#!/usr/bin/env bash
# Keys pressed in a real X11 window (Xvfb + xdotool, no window manager): the demo scanned, the app
# opened on it, R starts the review queue, C, X, S, F1; screenshots and the review counts in $OUT.
# Needs: apt-get install xvfb xdotool imagemagick; the project venv in .venv.
set -e
cd "$(dirname "$0")/.."
. .venv/bin/activate
. bench/x11.sh
OUT=${OUT:-/tmp/inspector-x11}
rm -rf "$OUT/demo" && mkdir -p "$OUT/demo" && cp assets/demo/demo.mp4 "$OUT/demo/"
inspector scan "$OUT/demo/demo.mp4" --project "$OUT/demo/demo.inspector" -q >/dev/null 2>&1
x11_start 77
app_start "$OUT/gui.log" "$OUT/demo/demo.mp4"
xdotool key r; sleep 1.5
xdotool key c; sleep 1.5
xdotool key x; sleep 1.5
xdotool key s; sleep 1.5
shot after_keys
xdotool key F1; sleep 1.5
shot f1
app_stop; x11_stop
inspector findings --project "$OUT/demo/demo.inspector" --json | python -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
print({s: sum(r['status'] == s for r in rows) for s in ('open', 'confirmed', 'rejected')})"
