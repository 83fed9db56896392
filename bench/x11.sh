# Shared by the bench/gui_*_x11.sh scripts (source it): a virtual X11 screen, the app in it, and
# the window focused for xdotool. Needs: apt-get install xvfb xdotool imagemagick.

# x11_start N: an Xvfb screen :N (1440x900) for what follows.
x11_start() {
  export DISPLAY=":$1"
  Xvfb "$DISPLAY" -screen 0 1440x900x24 >/dev/null 2>&1 &
  XVFB=$!
  sleep 2
}

# app_start LOG ARGS...: 'inspector gui ARGS' with HOME=$OUT (fresh settings), output to LOG; waits
# for the window and focuses it (WIN). APP is its pid.
app_start() {
  local log=$1; shift
  HOME="$OUT" inspector gui "$@" >"$log" 2>&1 &
  APP=$!
  sleep 12
  WIN=$(xdotool search --onlyvisible --name "inspector" | tail -1)
  if [ -n "$WIN" ]; then xdotool windowfocus --sync "$WIN"; sleep 0.5; fi
}

# shot NAME: a screenshot of the whole screen, $OUT/NAME.png.
shot() { import -window root "$OUT/$1.png"; }

app_stop() { kill "$APP"; sleep 1; }
x11_stop() { kill "$XVFB"; }
