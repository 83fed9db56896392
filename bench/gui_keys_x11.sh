#!/usr/bin/env bash
# Keys pressed in a real X11 window (Xvfb + xdotool, no window manager): the demo scanned, the app
# opened on it, R starts the review queue, C, X, S, F1; screenshots and the review counts in $OUT.
# Needs: apt-get install xvfb xdotool imagemagick; the project venv in .venv.
set -e
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p ${OUT:-/tmp/inspector-x11} && rm -rf ${OUT:-/tmp/inspector-x11}/demo && mkdir -p ${OUT:-/tmp/inspector-x11}/demo && cp assets/demo/demo.mp4 ${OUT:-/tmp/inspector-x11}/demo/
inspector scan ${OUT:-/tmp/inspector-x11}/demo/demo.mp4 --project ${OUT:-/tmp/inspector-x11}/demo/demo.inspector -q >/dev/null 2>&1
export DISPLAY=:77
Xvfb :77 -screen 0 1440x900x24 >/dev/null 2>&1 &
XVFB=$!
sleep 2
HOME=${OUT:-/tmp/inspector-x11} inspector gui ${OUT:-/tmp/inspector-x11}/demo/demo.mp4 >${OUT:-/tmp/inspector-x11}/gui.log 2>&1 &
APP=$!
sleep 12
WIN=$(xdotool search --onlyvisible --name "inspector" | tail -1)
xdotool windowfocus --sync $WIN; sleep 0.5
xdotool key r; sleep 1.5
xdotool key c; sleep 1.5
xdotool key x; sleep 1.5
xdotool key s; sleep 1.5
import -window root ${OUT:-/tmp/inspector-x11}/after_keys.png
xdotool key F1; sleep 1.5
import -window root ${OUT:-/tmp/inspector-x11}/f1.png
kill $APP; sleep 1; kill $XVFB
inspector findings --project ${OUT:-/tmp/inspector-x11}/demo/demo.inspector --json | python -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
print({s: sum(r['status'] == s for r in rows) for s in ('open', 'confirmed', 'rejected')})"
