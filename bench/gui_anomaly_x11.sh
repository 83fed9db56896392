#!/usr/bin/env bash
# Anomaly mode in a real X11 window (Xvfb + xdotool), by keys only: the demo opened, nine seconds
# forward (frame 90), Ctrl+L learns the catenary's normal look from 75 frames, Ctrl+R scans in the
# background, R reviews: the first finding is an anomaly with its heatmap in the zoom. Screenshots in $OUT.
# Needs: apt-get install xvfb xdotool imagemagick; the project venv in .venv.
set -e
cd "$(dirname "$0")/.."
. .venv/bin/activate
OUT=${OUT:-/tmp/inspector-x11-anomaly}
rm -rf "$OUT" && mkdir -p "$OUT"
cp assets/demo/demo.mp4 "$OUT/"
export DISPLAY=:79
Xvfb :79 -screen 0 1440x900x24 >/dev/null 2>&1 &
XVFB=$!
sleep 2
HOME="$OUT" inspector gui "$OUT/demo.mp4" >"$OUT/gui.log" 2>&1 &
APP=$!
sleep 12
WIN=$(xdotool search --onlyvisible --name "inspector" | tail -1)
xdotool windowfocus --sync "$WIN"; sleep 0.5
for _ in 1 2 3 4 5 6 7 8 9; do xdotool key shift+Right; sleep 0.2; done
xdotool key Tab; sleep 0.3   # the next region: a catenary tile
xdotool key ctrl+l; sleep 1.5
import -window root "$OUT/ctrl_l_dialog.png"
xdotool key ctrl+a; xdotool type 75; xdotool key Return; sleep 8
import -window root "$OUT/after_fit.png"
xdotool windowfocus --sync "$WIN"; sleep 0.5
xdotool key ctrl+r; sleep 3
import -window root "$OUT/scanning.png"
sleep 40   # the background scan of the demo
xdotool key r; sleep 2
import -window root "$OUT/review_anomaly.png"
kill $APP; sleep 1; kill $XVFB
grep -i -E "error|traceback" "$OUT/gui.log" || echo "no errors in the app's log"
echo "screenshots in $OUT"
