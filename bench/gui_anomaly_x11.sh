#!/usr/bin/env bash
# Anomaly mode in a real X11 window (Xvfb + xdotool), by keys only: the demo opened, nine seconds
# forward (frame 90), Ctrl+L learns the catenary's normal look from 75 frames, Ctrl+R scans in the
# background, R reviews: the first finding is an anomaly with its heatmap in the zoom. Screenshots in $OUT.
# Needs: apt-get install xvfb xdotool imagemagick; the project venv in .venv.
set -e
cd "$(dirname "$0")/.."
. .venv/bin/activate
. bench/x11.sh
OUT=${OUT:-/tmp/inspector-x11-anomaly}
rm -rf "$OUT" && mkdir -p "$OUT"
cp assets/demo/demo.mp4 "$OUT/"
x11_start 79
app_start "$OUT/gui.log" "$OUT/demo.mp4"
for _ in 1 2 3 4 5 6 7 8 9; do xdotool key shift+Right; sleep 0.2; done
xdotool key Tab; sleep 0.3   # the next region: a catenary tile
xdotool key ctrl+l; sleep 1.5
shot ctrl_l_dialog
xdotool key ctrl+a; xdotool type 75; xdotool key Return; sleep 8
shot after_fit
xdotool windowfocus --sync "$WIN"; sleep 0.5
xdotool key ctrl+r; sleep 3
shot scanning
sleep 40   # the background scan of the demo
xdotool key r; sleep 2
shot review_anomaly
app_stop; x11_stop
grep -i -E "error|traceback" "$OUT/gui.log" || echo "no errors in the app's log"
echo "screenshots in $OUT"
