"""The ``inspector`` command line.

Exit codes: 0 done; 1 the job failed (the message says why and what to do); 2 bad usage;
3 some videos of a batch failed (named on stderr), the others were scanned; 130 interrupted
(run the same command again to resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TextIO

from inspector import __version__
from inspector.errors import InspectorError
from inspector.status import Review, ScanState

log = logging.getLogger("inspector")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ProgressBar:
    """One redrawn line on a terminal; a line every 10 % (or 30 s) when output is a log file."""

    def __init__(self, stream=sys.stderr, width: int = 28) -> None:
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._last_note = 0.0
        self._last_decile = -1
        self._lock = threading.Lock()

    def update(self, label: str, done: int, total: int, rate: float, eta: float | None) -> None:
        fraction = min(done / total, 1.0) if total else 0.0
        eta_text = "--:--" if eta is None else time.strftime("%H:%M:%S" if eta >= 3600 else "%M:%S", time.gmtime(eta))
        filled = round(self.width * fraction)
        line = (f"{label} {fraction:4.0%} |{'#' * filled}{'.' * (self.width - filled)}| "
                f"{done}/{total} frames {rate:6.1f} fps ETA {eta_text}")
        with self._lock:
            if self.tty:
                self.stream.write("\r" + line + "\x1b[K")
                self.stream.flush()
                return
            decile = int(fraction * 10)
            if decile != self._last_decile or time.monotonic() - self._last_note > 30:
                self._last_decile, self._last_note = decile, time.monotonic()
                self.stream.write(line + "\n")
                self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _evaluation_arguments(parser: argparse.ArgumentParser, episodes: int, result: str, classes: str) -> None:
    """What both dataset evaluations (few-shot, anomaly) take: the dataset, shots, episodes, seed,
    the data subset, the bundle and JSON output."""
    parser.add_argument("dataset", type=Path, metavar="DATASET")
    parser.add_argument("--shot", type=_positive_int, required=True, metavar="K")
    parser.add_argument("--episodes", type=_positive_int, default=episodes, metavar="E", help=f"(default {episodes})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-column", default="group", help="manifest column that groups images")
    parser.add_argument("--classes", metavar="A,B,...", help=classes)
    parser.add_argument("--bundle", type=Path, metavar="DIR")
    parser.add_argument("--json", action="store_true",
                        help=f"print the result as one JSON line ({result} and ci95 in %%); the summary goes to stderr")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspector", description="Railway catenary and track inspection from recorded video. "
                                      "Without a command, opens the desktop app.",
        epilog="Run 'inspector COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (model provider, resumes)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gui = sub.add_parser("gui", help="the desktop app (also: inspector with no command)")
    gui.add_argument("target", nargs="?", type=Path, metavar="VIDEO|PROJECT", help="a video or a project folder")

    scan = sub.add_parser("scan", help="scan recorded videos for faults (resumable)",
                          description="Scan videos into a project. Rerun the same command after an "
                                      "interruption to continue where it stopped.")
    scan.add_argument("videos", nargs="*", type=Path, metavar="VIDEO")
    scan.add_argument("--project", type=Path, required=True, metavar="DIR", help="project folder (created if new)")
    scan.add_argument("--bundle", type=Path, metavar="DIR", help="model bundle folder (default: the shipped one)")
    scan.add_argument("--profile", metavar="NAME|FILE",
                      help="region profile: shipped name or TOML file (default: the shipped profile drawn for the "
                           "video's frame size, else the generic full-frame tiling, said on the video's first line)")
    rate = scan.add_mutually_exclusive_group()
    rate.add_argument("--step", type=_positive_int, default=1, metavar="N", help="classify every N-th frame (default 1)")
    rate.add_argument("--fps", type=_positive_float, metavar="F", help="classify about F frames per second of video")
    scan.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto",
                      help="backbone precision (auto: int8 when the bundle has it)")
    scan.add_argument("--threads", type=_positive_int, metavar="N", help="inference threads (default: all cores)")
    scan.add_argument("--no-embeddings", action="store_true",
                      help="do not cache crop embeddings (saves space; new fault types then need a rescan)")
    scan.add_argument("--reclassify", action="store_true",
                      help="classify every scanned run of the project again with its current fault types, "
                           "from cached embeddings (seconds, no decoding)")
    scan.add_argument("--report", action="store_true", help="write the report when the scan ends")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    scan.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                      help="scan the videos as tasks on a Ray cluster (videos and bundle on storage every node "
                           "sees): 'auto' or ray://HOST:10001, or no ADDRESS for a local instance")
    scan.add_argument("--workers", type=_positive_int, metavar="N",
                      help="with --ray and no ADDRESS: CPUs of the local instance (default: all)")

    report = sub.add_parser("report", help="write the HTML and CSV report of a project")
    report.add_argument("--project", type=Path, required=True, metavar="DIR")
    report.add_argument("--out", type=Path, metavar="DIR", help="report folder (default: PROJECT/report)")
    report.add_argument("--bundle", type=Path, metavar="DIR",
                        help="model bundle for anomaly heatmaps (default: the shipped one)")
    report.add_argument("--geojson", action="store_true",
                        help="also write findings.geojson (findings with GPS, as points) for GIS tools such as QGIS")

    faults = sub.add_parser("faults", help="the project's fault types: list, add from examples, remove, restore")
    faults_sub = faults.add_subparsers(dest="faults_command", metavar="ACTION", required=True)
    listing = faults_sub.add_parser("list", help="fault types, their examples and the head versions")
    add = faults_sub.add_parser("add", help="a new fault type from a few labelled examples",
                                description="Add a fault type from labelled examples: a CSV with columns video, "
                                            "frame, region (or box 'x0 y0 x1 y1') and label, or a labelme JSON. "
                                            "Rows labelled 'normal' are normal examples; without any, normal "
                                            "examples are sampled from unlabelled frames of the same videos.")
    add.add_argument("name", help="name of the new fault type, e.g. bird_nest")
    add.add_argument("--examples", type=Path, required=True, metavar="FILE", help="CSV or labelme JSON")
    add.add_argument("--no-auto-normal", action="store_true",
                     help="do not sample normal examples from unlabelled frames")
    add.add_argument("--tta", action="store_true",
                     help="embed each example as the mean of flipped/brightened/shifted views")
    remove = faults_sub.add_parser("remove", help="remove a fault type (a new head version; restorable)")
    remove.add_argument("name")
    restore = faults_sub.add_parser("restore", help="make an earlier head version current again")
    restore.add_argument("version", type=_positive_int)
    rename = faults_sub.add_parser("rename", help="rename a fault type (its examples and findings follow)")
    rename.add_argument("name")
    rename.add_argument("new_name")
    examples = faults_sub.add_parser("examples", help="a fault type's examples with their ids and crop pictures")
    examples.add_argument("name")
    drop = faults_sub.add_parser("drop-example", help="take a wrong example out (a new head version)")
    drop.add_argument("example_id", type=_positive_int, metavar="EXAMPLE_ID", help="an id from 'faults examples'")
    refit = faults_sub.add_parser("refit", help="adapt the head again from every example, the reviews' included",
                                  description="Each review teaches the library an example (confirmed: of its class; "
                                              "rejected: a normal crop of its region); refit makes a new head "
                                              "version from all of them.")
    refit.add_argument("--sample-normals", action="store_true",
                       help="also add crops of the scanned runs that nothing was flagged on (away from findings) "
                            "to the normal examples (off by default: it cost precision on the demo)")
    threshold = faults_sub.add_parser(
        "threshold", help="the alarm threshold of a fault type (a calibrated score; default: the one fitted)",
        description="A finding is raised when a crop's calibrated score for a fault type reaches its alarm "
                    "threshold. By default each type's threshold lets at most 1%% of the labelled crops of other "
                    "classes in its regions through (never below 0.5); raise it for fewer false alarms, lower it "
                    "for fewer misses.")
    threshold.add_argument("name")
    level = threshold.add_mutually_exclusive_group(required=True)
    level.add_argument("value", nargs="?", type=float, help="a score between 0 and 1")
    level.add_argument("--default", action="store_true", help="back to the fitted default")
    for p_ in (listing, add, remove, restore, rename, examples, drop, refit, threshold):
        p_.add_argument("--project", type=Path, required=True, metavar="DIR")
        p_.add_argument("--bundle", type=Path, metavar="DIR", help="model bundle folder (default: the shipped one)")
    add.add_argument("--profile", metavar="NAME|FILE",
                     help="region profile the regions refer to (default: the one the video was scanned with)")
    for p_ in (add, remove, restore, rename, drop, refit, threshold):
        p_.add_argument("--reclassify", action="store_true", help="then classify every scanned run again")

    fewshot = sub.add_parser(
        "evaluate-fewshot", help="N-way K-shot accuracy of a bundle on a dataset (the app's own code path)",
        description="Mean accuracy with a 95 % confidence interval over N-way K-shot episodes of a folder-per-class "
                    "dataset, through the app's ONNX embedding and adaptation. With a manifest.csv the held-out "
                    "part can be chosen by group (--holdout-groups) or by class (--holdout-classes).")
    _evaluation_arguments(fewshot, episodes=600, result="accuracy", classes="use only these classes")
    fewshot.add_argument("--way", type=_positive_int, required=True, metavar="N")
    fewshot.add_argument("--queries", type=_positive_int, default=15, metavar="Q", help="per class (default 15)")
    fewshot.add_argument("--holdout-groups", type=float, metavar="F",
                         help="evaluate on the held-out groups only (the fraction training held out, e.g. 0.3)")
    fewshot.add_argument("--holdout-classes", type=float, metavar="F", help="evaluate on held-out classes only")
    fewshot.add_argument("--split-seed", type=int, default=0, help="seed of the group/class split (default 0)")
    fewshot.add_argument("--tta", action="store_true",
                         help="test-time augmentation of the support images (as 'faults add --tta')")

    anomaly = sub.add_parser("anomaly", help="anomaly mode: flag what differs from a region's normal look, "
                             "with no fault examples at all")
    anomaly_sub = anomaly.add_subparsers(dest="anomaly_command", required=True)
    fit = anomaly_sub.add_parser(
        "fit", help="fit a region's anomaly model from normal frames (active for every later scan)",
        description="Learn what a region looks like when nothing is wrong, from a stretch of normal video or an "
                    "examples file. Scans then flag crops of that region that no fault type explains but that "
                    "differ from normal, as findings of class 'anomaly'. Runs already scanned are scanned again.")
    fit.add_argument("--project", type=Path, required=True, metavar="DIR")
    fit.add_argument("--region", required=True, metavar="NAME", help="a region of the profile, e.g. catenary")
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", type=Path, metavar="VIDEO", help="a video with normal frames (with --frames)")
    source.add_argument("--examples", type=Path, metavar="CSV", help="an examples file of normal crops")
    fit.add_argument("--frames", metavar="A-B", help="with --video: the range of normal frames (default: all)")
    fit.add_argument("--profile", metavar="NAME|FILE", help="region profile (default: as the video is scanned)")
    fit.add_argument("--false-alarms", type=_positive_float, default=0.01, metavar="RATE",
                     help="share of normal crops allowed above the alarm threshold (default 0.01)")
    fit.add_argument("--bank-size", type=_positive_int, default=512, metavar="N",
                     help="patches kept by coreset selection (default 512; larger: finer, slower scans)")
    fit.add_argument("--bundle", type=Path, metavar="DIR")
    anomaly_sub.add_parser("list", help="the anomaly models of the project, by version").add_argument(
        "--project", type=Path, required=True, metavar="DIR")
    off = anomaly_sub.add_parser("remove", help="switch anomaly mode off for a region (its versions stay)")
    off.add_argument("--project", type=Path, required=True, metavar="DIR")
    off.add_argument("--region", required=True, metavar="NAME")

    evaluate = sub.add_parser(
        "evaluate-anomaly", help="AUROC of anomaly mode when K normal images are the only training data",
        description="Image-level AUROC (mean and 95 % CI over episodes) of the bundle's anomaly mode on a "
                    "folder-per-class dataset: each episode fits a bank on K normal images (distinct groups) and "
                    "scores normal images of other groups against anomalous ones (every other class).")
    _evaluation_arguments(evaluate, episodes=50, result="auroc",
                          classes="use only these classes (the normal one among them)")
    evaluate.add_argument("--normal-class", required=True, metavar="NAME")

    findings = sub.add_parser("findings", help="list a project's findings (for scripts: --json)")
    findings.add_argument("--project", type=Path, required=True, metavar="DIR")
    findings.add_argument("--status", choices=tuple(Review), help="only findings with this status")
    findings.add_argument("--json", action="store_true", help="one JSON object per line")

    review = sub.add_parser("review", help="confirm or reject a finding (as C / X in the app)")
    review.add_argument("finding", type=_positive_int, metavar="FINDING_ID", help="an id from 'inspector findings'")
    decision = review.add_mutually_exclusive_group(required=True)
    decision.add_argument("--confirm", action="store_true", help="it is a fault")
    decision.add_argument("--reject", action="store_true", help="it is not a fault (a false alarm)")
    decision.add_argument("--reopen", action="store_true", help="undo a review: the finding is open again")
    review.add_argument("--as", dest="as_class", metavar="CLASS", help="with --confirm: it is a fault of this class")
    review.add_argument("--project", type=Path, required=True, metavar="DIR")
    review.add_argument("--bundle", type=Path, metavar="DIR", help="model bundle folder (default: the shipped one)")

    positions = sub.add_parser("positions", help="where the train was: position tracks and mast registers")
    positions_sub = positions.add_subparsers(dest="positions_command", metavar="ACTION", required=True)
    track = positions_sub.add_parser(
        "import", help="a video's position track (CSV or GPX)",
        description="Read where the train was during a video: a CSV with 't' (seconds) or 'frame' and any of "
                    "line, chainage_m, lat, lon, mast; or a GPX track (times taken from --start or the GPX's "
                    "metadata time). Positions are interpolated between samples; longer gaps stay unknown.")
    track.add_argument("video", type=Path, metavar="VIDEO")
    track.add_argument("file", type=Path, metavar="FILE", help="CSV or GPX")
    track.add_argument("--offset", type=float, default=0.0, metavar="S",
                       help="seconds to add to the track's times to match the video's (default 0)")
    track.add_argument("--start", metavar="ISO8601", help="GPX only: when the video started, e.g. 2026-05-01T22:14:03Z")
    masts = positions_sub.add_parser("masts", help="a mast register: CSV of line, mast, chainage_m[, lat, lon]")
    masts.add_argument("file", type=Path, metavar="FILE")
    reference = positions_sub.add_parser(
        "reference", help="make a run the reference of its line: the report marks later runs' findings new or "
                          "persisting and lists what is gone")
    reference.add_argument("run", metavar="RUN", help="a scanned video's path or file name, or a scan id")
    reference.add_argument("--line", help="the line (default: the one its position track names)")
    for p_ in (track, masts, reference):
        p_.add_argument("--project", type=Path, required=True, metavar="DIR")

    compare = sub.add_parser("compare", help="what changed between two runs of the same line: new, gone, persisting",
                             description="Match the findings of two runs by line, chainage and fault type. A run is "
                                         "a scanned video's path or file name, or a scan id.")
    compare.add_argument("--project", type=Path, required=True, metavar="DIR")
    compare.add_argument("--run", action="append", required=True, metavar="RUN", help="give twice: the earlier run "
                                                                                      "(A), then the later one (B)")
    compare.add_argument("--tolerance-m", type=_positive_float, default=10.0, metavar="M",
                         help="how far apart the same fault may be located in the two runs (default 10)")
    compare.add_argument("--by-time", action="store_true",
                         help="without positions: match by time in the video (runs recorded alike)")
    compare.add_argument("--tolerance-s", type=_positive_float, default=1.0, metavar="S",
                         help="with --by-time: how far apart in time (default 1)")
    compare.add_argument("--json", action="store_true", help="counts and the matched findings as JSON")

    bundle = sub.add_parser("bundle", help="inspect model bundles")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    info = bundle_sub.add_parser("info", help="what a bundle is: classes, input size, provenance")
    info.add_argument("bundle", type=Path, nargs="?", metavar="DIR", help="bundle folder (default: the shipped one)")
    info.add_argument("--json", action="store_true", help="print bundle.json and the head as JSON")
    return parser


def _open_project(path: Path):
    from inspector.store import Store

    store = Store(path)
    handler = logging.FileHandler(path / "inspector.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return store


def cmd_scan(args: argparse.Namespace) -> int:
    from inspector.bundle import load_bundle
    from inspector.faults import active_head

    if not args.videos and not args.reclassify:
        raise InspectorError("nothing to do: name the videos to scan, or pass --reclassify")
    bundle = load_bundle(args.bundle)
    store = _open_project(args.project)
    try:
        head = active_head(store, bundle)
        if not args.videos:
            _reclassify(store, head)
            if args.report:
                return cmd_report(argparse.Namespace(project=args.project, out=None, geojson=False, bundle=args.bundle))
            return EXIT_OK
        return _scan_videos(args, bundle, store, head)
    finally:
        store.close()


def _reclassify(store, head) -> None:
    from inspector.scan import reclassify

    result = reclassify(store, head)
    print(f"classified {result.crops} cached crops of {result.scans} scan(s) again with head version {head.version} "
          f"in {result.seconds:.1f} s: {result.findings} findings", file=sys.stderr)
    for scan_id in result.skipped:
        print(f"inspector: warning: scan {scan_id} has no cached embeddings (scanned with --no-embeddings); "
              "rescan it to apply new fault types", file=sys.stderr)


def _scan_videos(args: argparse.Namespace, bundle, store, head) -> int:
    from inspector.backbone import Backbone
    from inspector.regions import GENERIC_PROFILE, load_profile
    from inspector.scan import Scanner, ScanResult, scan_many
    from inspector.video import VideoReader

    profile = load_profile(args.profile) if args.profile else None
    backbone = Backbone(bundle, args.precision, args.threads)
    scanner = Scanner(store, backbone, head, profile, step=args.step, target_fps=args.fps,
                      keep_embeddings=not args.no_embeddings)
    regions = (f"profile {profile.name}, {len(profile.crop_specs())} crops per frame" if profile else
               "profile by frame size (no --profile)")
    anomaly = (", anomaly mode on " + ", ".join(f"{r} (v{m.version})" for r, m in sorted(scanner.anomaly.items()))
               if scanner.anomaly else "")
    print(f"bundle {bundle.name} ({backbone.precision}, {backbone.provider}), {regions}{anomaly}, "
          f"project {args.project}", file=sys.stderr)
    bar = ProgressBar()
    total = len(args.videos)
    current = 0  # number of the video being scanned, for the bar's label

    def progress(p) -> None:
        if not args.quiet:
            bar.update(f"[{current}/{total}] {p.video.name}", p.frame, p.frame_count,
                       p.frames_per_second, p.eta_seconds)

    def on_result(result: ScanResult) -> None:
        if not args.quiet and result.samples:
            bar.finish()
        if result.status == ScanState.SKIPPED:
            line = f"{result.video}: {result.message} ({result.findings} findings)"
        else:
            line = (f"{result.video}: {result.status}, {result.samples} frames classified, "
                    f"{result.findings} findings, {result.seconds:.1f} s")
            if result.message:
                line += f" ({result.message})"
        print(line, file=sys.stderr)

    def on_error(path: Path, exc: InspectorError) -> None:
        print(f"inspector: error: {exc}", file=sys.stderr)

    def on_start(index: int, path: Path) -> None:
        nonlocal current
        current = index + 1
        if profile is not None:
            return
        try:
            with VideoReader(path) as reader:
                info = reader.info
        except InspectorError:
            return  # the scan itself names the bad file
        chosen = scanner.profile_of(info)
        if chosen.name == GENERIC_PROFILE:
            print(f"inspector: warning: {path.name}: no shipped profile is drawn for {info.width}x{info.height} "
                  f"footage; scanning the whole frame in {len(chosen.crop_specs())} tiles ({GENERIC_PROFILE}); "
                  "give --profile with your camera's catenary and track regions", file=sys.stderr)
        else:
            print(f"{path.name}: profile {chosen.name} (drawn for {info.width}x{info.height})", file=sys.stderr)

    try:
        if args.ray:
            from inspector.fleet import scan_on_ray

            address = None if args.ray == "local" else args.ray
            results, failed = scan_on_ray(scanner, bundle.path, args.videos, address, args.workers, args.threads or 1,
                                          on_result, on_error)
        else:
            results, failed = scan_many(scanner, args.videos, progress, None, on_start, on_result, on_error)
    except KeyboardInterrupt:
        bar.finish()
        print("inspector: interrupted; everything classified so far is stored, run the same command "
              "again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.reclassify:
        _reclassify(store, head)
    findings = sum(r.findings for r in results)
    print(f"scanned {len(results) - sum(r.status == 'partial' for r in results)} of {total} video(s) fully, "
          f"{findings} findings; report: inspector report --project {args.project}", file=sys.stderr)
    if args.report:
        report_code = cmd_report(argparse.Namespace(project=args.project, out=None, geojson=False, bundle=args.bundle))
        if report_code:
            return report_code
    if failed:
        print("inspector: these videos were not scanned fully: " + ", ".join(str(p) for p in failed),
              file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from inspector.report import build_report
    from inspector.store import STORE_NAME, Store

    if not (args.project / STORE_NAME).is_file():
        raise InspectorError(f"project {args.project}: no project store there; scan videos into it first "
                             f"with 'inspector scan VIDEO --project {args.project}'")
    out = args.out or args.project / "report"
    with Store(args.project) as store:
        summary = build_report(store, out, geojson=args.geojson, backbone=_heatmap_backbone(store, args.bundle))
    for path in summary.missing_videos:
        print(f"inspector: warning: video {path} not found; its findings have no pictures", file=sys.stderr)
    print(f"report: {summary.html} ({summary.findings} findings in {summary.videos} video(s)); csv: {summary.csv}")
    if summary.geojson is not None:
        print(f"geojson: {summary.geojson} ({summary.located} findings with GPS)")
        if not summary.located and summary.findings:
            print("inspector: warning: no finding has a GPS position; import a position track with lat and lon "
                  "('inspector positions import')", file=sys.stderr)
    return EXIT_OK


def _heatmap_backbone(store, bundle_dir: Path | None):
    """A backbone for the report's anomaly heatmaps, where the project has anomaly models (else
    None: no ONNX session is opened for nothing)."""
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle

    return Backbone(load_bundle(bundle_dir)) if store.anomaly_versions() else None


def _existing_project(path: Path):
    from inspector.store import STORE_NAME, Store

    if not (path / STORE_NAME).is_file():
        raise InspectorError(f"project {path}: no project store there; scan videos into it first "
                             f"with 'inspector scan VIDEO --project {path}'")
    return Store(path)


def cmd_findings(args: argparse.Namespace) -> int:
    from inspector.positions import Locator

    with _existing_project(args.project) as store:
        locator = Locator(store)
        videos = {v.id: v for v in store.videos()}
        scans = {s.id: s for s in store.scans()}
        for f in store.findings():
            if args.status and f.status != args.status:
                continue
            video = videos[scans[f.scan_id].video_id]
            where = locator.at(video.id, f.best_frame / video.fps)
            row = {"id": f.id, "scan": f.scan_id, "video": str(video.path), "start_frame": f.start_frame,
                   "end_frame": f.end_frame, "best_frame": f.best_frame, "region": f.region, "crop": f.crop,
                   "class": f.class_name, "reviewed_class": f.reviewed_class, "score": round(f.best_score, 4),
                   "status": f.status,
                   "line": where.line if where else None,
                   "chainage_m": round(where.chainage_m, 1) if where and where.chainage_m is not None else None,
                   "lat": where.lat if where else None, "lon": where.lon if where else None,
                   "mast_span": "-".join(where.span) if where and where.span else None}
            if args.json:
                print(json.dumps(row))
            else:
                place = where.describe() if where else ""
                print(f"{f.id:>6}  {video.path.name}  frames {f.start_frame}-{f.end_frame}  {f.crop:<12} "
                      f"{f.final_class:<24} {f.best_score:.2f}  {f.status:<9} {place}")
    return EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    """A review decision; the library keeps the crop as an example ('faults refit' applies it)."""
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from inspector.faults import FaultLibrary
    from inspector.store import StoreError

    if args.as_class and not args.confirm:
        raise InspectorError("--as CLASS goes with --confirm: a rejected finding is no fault of any class")
    status = Review.CONFIRMED if args.confirm else Review.REJECTED if args.reject else Review.OPEN
    bundle = load_bundle(args.bundle)
    with _existing_project(args.project) as store:
        finding = store.finding(args.finding)
        if finding is None:
            raise StoreError(f"project {args.project}: no finding {args.finding}; 'inspector findings --project "
                             f"{args.project}' lists them")
        library = FaultLibrary(store, bundle, Backbone(bundle))
        learned = library.record_review(finding.id, status,
                                        args.as_class if args.as_class != finding.class_name else None)
    taught = f"; learned a {learned.fault_type} example of {learned.region}" if learned else ""
    print(f"finding {finding.id} ({finding.class_name}): {status}" + (f" as {args.as_class}" if args.as_class else "")
          + taught)
    return EXIT_OK


def cmd_positions(args: argparse.Namespace) -> int:
    from datetime import datetime

    from inspector.positions import PositionError, check_track, read_gpx, read_masts, read_track_csv
    from inspector.video import VideoReader

    with _existing_project(args.project) as store:
        if args.positions_command == "masts":
            masts = read_masts(args.file)
            store.set_masts(masts)
            print(f"{len(masts)} masts of {len({m.line for m in masts})} line(s) in the register")
            return EXIT_OK
        if args.positions_command == "reference":
            from inspector.compare import resolve_run

            scan = resolve_run(store, args.run)
            lines = sorted({f.line for f in store.positions(scan.video_id) if f.line and f.chainage_m is not None})
            line = args.line or (lines[0] if len(lines) == 1 else None)
            if line is None or line not in lines:
                raise PositionError(f"run {args.run} has positions on {', '.join(lines) or 'no line'}; "
                                    + ("import its position track first" if not lines else "name one with --line"))
            store.set_reference(line, scan.id)
            print(f"scan {scan.id} ({store.video(scan.video_id).path.name}) is the reference run of line {line}")
            return EXIT_OK
        with VideoReader(args.video) as reader:
            info = reader.info
        video = store.add_video(info)
        if args.file.suffix.lower() == ".gpx":
            start = None
            if args.start:
                try:
                    start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
                except ValueError:
                    raise PositionError(f"--start {args.start!r} is not an ISO 8601 time") from None
                if start.tzinfo is None:
                    raise PositionError(f"--start {args.start!r} has no time zone; add Z for UTC")
            fixes = read_gpx(args.file, start)
        else:
            fixes = read_track_csv(args.file, info.fps)
        if args.offset:
            from dataclasses import replace

            fixes = check_track([replace(f, t=f.t + args.offset) for f in fixes], str(args.file))
        inside = [f for f in fixes if 0 <= f.t <= info.duration]
        if not inside:
            raise PositionError(f"{args.file}: no sample falls within the video's {info.duration:.0f} s; "
                                "check the times, --offset or --start")
        store.set_positions(video.id, fixes)
        fields = [name for name in ("line", "chainage_m", "lat", "lon", "mast")
                  if any(getattr(f, name) is not None for f in fixes)]
        print(f"{len(fixes)} positions for {info.path.name} ({', '.join(fields)}), "
              f"{len(inside)} within the video")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from inspector.compare import CompareError, compare_runs

    if len(args.run) != 2:
        raise CompareError("give exactly two runs: --run EARLIER --run LATER")
    with _existing_project(args.project) as store:
        result, scan_a, scan_b = compare_runs(store, args.run[0], args.run[1], args.tolerance_m, args.by_time,
                                              args.tolerance_s)
        unit = "s" if args.by_time else "m"

        def item(p) -> dict:
            return {"finding": p.finding.id, "class": p.finding.final_class, "line": p.line,
                    ("t_s" if args.by_time else "chainage_m"): round(p.at, 1)}

        if args.json:
            print(json.dumps({**result.counts(), "run_a": scan_a.id, "run_b": scan_b.id,
                              "new_findings": [item(p) for p in result.new],
                              "gone_findings": [item(p) for p in result.gone],
                              "persisting_findings": [{"a": item(a), "b": item(b)} for a, b in result.persisting]}))
            return EXIT_OK
        counts = result.counts()
        print(f"run A scan {scan_a.id}, run B scan {scan_b.id}: {counts['new']} new, {counts['gone']} gone, "
              f"{counts['persisting']} persisting" + (f", {counts['unlocated']} without a position" if
                                                      counts["unlocated"] else "")
              + (f", {counts['uncovered']} where the other run did not pass" if counts["uncovered"] else ""))
        for label, group in (("new", result.new), ("gone", result.gone)):
            for p in group:
                print(f"  {label:<10} {p.finding.final_class:<24} {p.line or '':<8} {p.at:10.1f} {unit}")
        for a, b in result.persisting:
            print(f"  persisting {b.finding.final_class:<24} {b.line or '':<8} {b.at:10.1f} {unit} (A: {a.at:.1f})")
    return EXIT_OK


def _print_quality(change) -> None:
    q = change.quality
    counts = ", ".join(f"{k} {v}" for k, v in sorted(q.examples.items()))
    loo = "n/a (too few examples)" if q.loo_accuracy is None else f"{q.loo_accuracy:.0%}"
    print(f"quality: leave-one-out accuracy {loo}; examples per class: {counts}")
    for warning in q.warnings:
        print(f"inspector: warning: {warning}", file=sys.stderr)


def cmd_faults(args: argparse.Namespace) -> int:
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from inspector.examples import read_examples
    from inspector.faults import NORMAL, FaultLibrary, active_head
    from inspector.regions import load_profile
    from inspector.store import STORE_NAME

    if args.faults_command != "add" and not (args.project / STORE_NAME).is_file():
        raise InspectorError(f"project {args.project}: no project store there; scan videos into it first")
    bundle = load_bundle(args.bundle)
    store = _open_project(args.project)
    try:
        if args.faults_command == "list":
            return _list_faults(store, bundle)
        if args.faults_command == "examples":
            rows = [e for e in store.examples() if e.fault_type == args.name]
            if not rows:
                raise InspectorError(f"no examples of {args.name}; 'inspector faults list' shows the fault types")
            for e in rows:
                where = f"frame {e.frame} {e.crop or ''}".strip() if e.frame is not None else "picture"
                print(f"{e.id:>6}  {e.source:<11} {where:<28} {args.project / e.image}")
            return EXIT_OK
        backbone = Backbone(bundle) if args.faults_command == "add" else None
        library = FaultLibrary(store, bundle, backbone, tta=getattr(args, "tta", False))
        if args.faults_command == "add":
            examples = read_examples(args.examples)
            profile = load_profile(args.profile) if args.profile else None
            change = library.add(args.name, examples, profile, auto_normal=not args.no_auto_normal)
            added = ", ".join(f"{v} {k}" for k, v in change.examples.items())
            print(f"added {args.name} as head version {change.version} in {change.seconds:.2f} s ({added} examples)")
            _print_quality(change)
        elif args.faults_command == "remove":
            change = library.remove(args.name)
            print(f"removed {args.name}: head version {change.version}")
        elif args.faults_command == "rename":
            change = library.rename(args.name, args.new_name)
            print(f"renamed {args.name} to {args.new_name}: head version {change.version}")
        elif args.faults_command == "refit":
            change = library.refit(sample_normals=args.sample_normals)
            added = f", {change.examples[NORMAL]} unflagged crops added as normal" if change.examples else ""
            print(f"refitted: head version {change.version} in {change.seconds:.2f} s{added}")
            _print_quality(change)
        elif args.faults_command == "threshold":
            change = library.set_threshold(args.name, None if args.default else args.value)
            level = change.head.threshold_of(change.head.classes.index(args.name))
            print(f"alarm threshold of {args.name}: {float(level):.3g}" + (" (default)" if args.default else "")
                  + f": head version {change.version}")
        elif args.faults_command == "drop-example":
            change = library.remove_example(args.example_id)
            print(f"took example {args.example_id} out: head version {change.version}")
            _print_quality(change)
        else:
            change = library.restore(args.version)
            print(f"restored version {args.version} as head version {change.version}")
        if args.reclassify:
            _reclassify(store, active_head(store, bundle))
        elif store.scans():
            print(f"apply it to the scanned runs: inspector scan --reclassify --project {args.project}")
        return EXIT_OK
    finally:
        store.close()


def _list_faults(store, bundle) -> int:
    from inspector.faults import active_head
    from inspector.heads import Head

    head = active_head(store, bundle)
    types = {t.name: t for t in store.fault_types()}
    base = set(Head.load(bundle.path, bundle.head_stem).classes) if bundle.head_stem else set()
    print(f"head version {store.active_head_version() or 'bundle base head'} — classes (alarm threshold):")
    for k, (name, normal, scope) in enumerate(zip(head.classes, head.normal, head.regions)):
        record = types.get(name)
        origin = " + ".join((["from the bundle"] if name in base else [])
                            + ([f"{record.examples} examples"] if record else []))
        where = ", ".join(scope) if scope else "all regions"
        alarm = "" if normal else f"{float(head.threshold_of(k)):.2f}"
        print(f"  {'normal' if normal else 'fault '} {name:<26} {alarm:>5}  {where:<22} {origin}")
    versions = store.head_versions()
    if versions:
        print("versions:")
        active = store.active_head_version()
        for v in versions:
            loo = v.quality.get("loo_accuracy") if v.quality else None
            loo_text = f", leave-one-out {loo:.0%}" if loo is not None else ""
            mark = "*" if v.version == active else " "
            print(f" {mark}{v.version:>3}  {v.created_at}  {v.note}{loo_text}")
    return EXIT_OK


def _summary_stream(args: argparse.Namespace) -> TextIO:
    """Where a command's one-line summary goes: stdout, or stderr when stdout carries ``--json``."""
    return sys.stderr if args.json else sys.stdout


def cmd_evaluate_fewshot(args: argparse.Namespace) -> int:
    from inspector.adapt import adaptation_for
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from inspector.fewshot import eligible_classes, embed_items, evaluate, held_out, load_items

    bundle = load_bundle(args.bundle)
    backbone = Backbone(bundle)
    only = [c.strip() for c in args.classes.split(",")] if args.classes else None
    items = held_out(load_items(args.dataset, args.group_column), args.holdout_groups, args.holdout_classes,
                     args.split_seed, only)
    if not items:
        raise InspectorError(f"dataset {args.dataset}: nothing left after the hold-out split; check the fractions")
    eligible_classes([i.label for i in items], args.way, args.shot, args.queries)  # fail before embedding
    started = time.monotonic()
    embeddings = embed_items(backbone, items)
    support = embed_items(backbone, items, tta=True) if args.tta else None
    labels = [i.label for i in items]
    bar = ProgressBar()
    result = evaluate(embeddings, labels, args.way, args.shot, args.queries, args.episodes, adaptation_for(bundle),
                      args.seed, None if args.json else lambda n, total: bar.update("episodes", n, total, 0, None),
                      support)
    if not args.json:
        bar.finish()
    print(f"{args.way}-way {args.shot}-shot, {args.queries} queries, {args.episodes} episodes on {len(items)} images "
          f"of {len(set(labels))} classes ({time.monotonic() - started:.1f} s): "
          f"accuracy {result.accuracy:.2f} % +- {result.ci95:.2f} % (95 % CI)", file=_summary_stream(args))
    if args.json:
        print(json.dumps({**result.as_json(), "bundle": bundle.name, "images": len(items), "tta": args.tta}))
    return EXIT_OK


def _frame_range(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 2**62
    first, sep, last = text.partition("-")
    try:
        return (int(first), int(last)) if sep else (int(first), int(first))
    except ValueError:
        raise InspectorError(f"--frames {text!r}: give a range of frame numbers such as 0-250") from None


def cmd_anomaly(args: argparse.Namespace) -> int:
    from inspector.anomalies import fit_region, normal_crops_from_examples, normal_crops_from_video
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from inspector.regions import load_profile

    if args.anomaly_command == "list":
        with _existing_project(args.project) as store:
            versions = store.anomaly_versions()
            if not versions:
                print("no anomaly models; fit one with 'inspector anomaly fit'")
            for v in versions:
                mark = "*" if v.active else " "
                state = f"removed {v.removed_at}" if v.removed_at else f"threshold {v.threshold:.3g}"
                print(f" {mark}{v.version:>3}  {v.region:<12} {v.created_at}  {state}  {v.note}")
        return EXIT_OK
    if args.anomaly_command == "remove":
        with _existing_project(args.project) as store:
            if not store.remove_anomaly_models(args.region):
                raise InspectorError(f"region {args.region!r} has no active anomaly model; "
                                     "'inspector anomaly list' shows them")
        print(f"anomaly mode off for region {args.region}; the next scans flag no anomalies there")
        return EXIT_OK
    if args.frames and not args.video:
        raise InspectorError("--frames goes with --video")
    bundle = load_bundle(args.bundle)
    backbone = Backbone(bundle)
    profile = load_profile(args.profile) if args.profile else None
    with _open_project(args.project) as store:
        if args.video:
            first, last = _frame_range(args.frames)
            crops, frames = normal_crops_from_video(store, args.video, first, last, args.region,
                                                    bundle.input_size, profile)
            source = f"{args.video.name} frames {args.frames}" if args.frames else args.video.name
        else:
            crops = normal_crops_from_examples(store, args.examples, args.region, bundle.input_size, profile)
            frames, source = len(crops), args.examples.name
        fit = fit_region(store, backbone, args.region, crops, frames, source, args.bank_size, args.false_alarms)
    print(f"anomaly model v{fit.version} of region {args.region}: {len(fit.model.bank)} patches from "
          f"{fit.model.normals} normal crops, alarm threshold {fit.model.threshold:.3g} "
          f"({fit.model.threshold_basis(args.false_alarms)}), {fit.seconds:.1f} s; "
          "scans from now on flag anomalies there")
    return EXIT_OK


def cmd_evaluate_anomaly(args: argparse.Namespace) -> int:
    import numpy as np

    from inspector.anomaly import AnomalyFitError, evaluate_anomaly
    from inspector.backbone import Backbone
    from inspector.bundle import load_bundle
    from inspector.fewshot import held_out, load_crop, load_items

    bundle = load_bundle(args.bundle)
    backbone = Backbone(bundle)
    if not backbone.has_patches:
        raise InspectorError(f"bundle {bundle.name} has no patch features; add them with "
                             "'python -m training add-patch-features'")
    only = [c.strip() for c in args.classes.split(",")] if args.classes else None
    items = held_out(load_items(args.dataset, args.group_column), only=only)
    normal = np.array([i.label == args.normal_class for i in items])
    if not normal.any():
        known = ", ".join(sorted({i.label for i in items}))
        raise InspectorError(f"dataset {args.dataset}: no class {args.normal_class!r} (classes: {known})")
    started = time.monotonic()
    crops = np.stack([load_crop(i.path, bundle.input_size) for i in items])
    _, patches = backbone.embed_patches(crops)
    try:
        result = evaluate_anomaly(patches, normal, [i.group for i in items], args.shot, args.episodes, args.seed)
    except AnomalyFitError as exc:
        raise InspectorError(f"dataset {args.dataset}: {exc}") from None
    print(f"{args.shot} normal image(s), {args.episodes} episodes on {len(items)} images ({int(normal.sum())} normal, "
          f"{time.monotonic() - started:.1f} s): image AUROC {result.auroc:.2f} % +- {result.ci95:.2f} % (95 % CI)",
          file=_summary_stream(args))
    if args.json:
        print(json.dumps({**result.as_json(), "bundle": bundle.name, "normal_class": args.normal_class,
                          "images": len(items)}))
    return EXIT_OK


def cmd_bundle_info(args: argparse.Namespace) -> int:
    from inspector.bundle import load_bundle
    from inspector.heads import Head

    bundle = load_bundle(args.bundle)
    head = Head.load(bundle.path, bundle.head_stem) if bundle.head_stem else None
    if args.json:
        raw = json.loads((bundle.path / "bundle.json").read_text(encoding="utf-8"))
        if head is not None:
            raw["head_classes"] = [{"name": c, "normal": n, "regions": list(r)}
                                   for c, n, r in zip(head.classes, head.normal, head.regions)]
        print(json.dumps(raw, indent=2))
        return EXIT_OK
    print(f"bundle     {bundle.name}  ({bundle.path})")
    pre = bundle.preprocessing
    print(f"input      {pre.size}x{pre.size} RGB, mean {pre.mean}, std {pre.std}")
    pooled = bundle.provenance.get("embedding")
    print(f"embedding  {bundle.embedding_size}-d" + (f" ({pooled})" if pooled else ""))
    for key, file in sorted(bundle.backbones.items()):
        print(f"backbone   {key}: {file.name} ({file.stat().st_size / 1e6:.1f} MB)")
    print(f"adaptation {bundle.adaptation.describe()}")
    print(f"patches    {bundle.patch_features.describe() if bundle.patch_features else 'none (no anomaly mode)'}")
    if head is None:
        print("head       none (fault types come from the project)")
    else:
        print(f"head       v{head.version}, threshold {head.threshold:g}:")
        for name, normal, scope in zip(head.classes, head.normal, head.regions):
            kind = "normal" if normal else "fault "
            print(f"             {kind} {name}" + (f"  [regions: {', '.join(scope)}]" if scope else ""))
    prov = bundle.provenance
    for key in ("algorithm", "initialised_from", "data", "trained", "notes"):
        if prov.get(key):
            print(f"{key:<10} {prov[key] if isinstance(prov[key], str) else json.dumps(prov[key])}")
    for name, value in prov.get("evaluation", {}).items():
        if isinstance(value, dict):  # few-shot figures: one line per setting
            for setting, cell in value.items():
                print(f"evaluation {name} {setting}: {cell['accuracy']:.1f} % ± {cell['ci95']:.1f}")
        else:
            print(f"evaluation {name}: {value}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command in (None, "gui"):
        from inspector.gui.app import run

        return run(getattr(args, "target", None))
    handlers = {"scan": cmd_scan, "report": cmd_report, "faults": cmd_faults,
                "evaluate-fewshot": cmd_evaluate_fewshot, "bundle": cmd_bundle_info, "findings": cmd_findings,
                "positions": cmd_positions, "compare": cmd_compare, "review": cmd_review, "anomaly": cmd_anomaly,
                "evaluate-anomaly": cmd_evaluate_anomaly}
    try:
        return handlers[args.command](args)
    except InspectorError as exc:
        print(f"inspector: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("inspector: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (inspector ... | head): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug: keep the details for the report, show one line
        log.debug("unexpected error", exc_info=True)
        detail = "".join(traceback.format_exception(exc))
        crash = Path.home() / ".inspector-crash.log"
        try:
            crash.write_text(detail, encoding="utf-8")
            where = f"details in {crash}"
        except OSError:
            where = "run with -v for details"
        print(f"inspector: unexpected error: {type(exc).__name__}: {exc} ({where}); please report it",
              file=sys.stderr)
        return EXIT_FAILED
