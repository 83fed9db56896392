"""inspector: railway overhead-line and track inspection from recorded video."""
import os

# FFmpeg prints a line per damaged frame; the reader counts and reports those itself.
# Set before cv2 opens any file; an operator can still ask for FFmpeg's log by setting it.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
