"""The ``inspector`` command line.

Exit codes: 0 done; 1 the job failed (the message says why and what to do); 2 bad usage;
3 some videos of a batch failed (named on stderr), the others were scanned; 130 interrupted
(run the same command again to resume).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import traceback
from pathlib import Path

from inspector import __version__
from inspector.errors import InspectorError

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
        prog="inspector", description="Railway catenary and track inspection from recorded video.",
        epilog="Run 'inspector COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (model provider, resumes)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    scan = sub.add_parser("scan", help="scan recorded videos for faults (resumable)",
                          description="Scan videos into a project. Rerun the same command after an "
                                      "interruption to continue where it stopped.")
    scan.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    scan.add_argument("--project", type=Path, required=True, metavar="DIR", help="project folder (created if new)")
    scan.add_argument("--bundle", type=Path, metavar="DIR", help="model bundle folder (default: the shipped one)")
    scan.add_argument("--profile", metavar="NAME|FILE", help="region profile: shipped name or TOML file (default: demo)")
    rate = scan.add_mutually_exclusive_group()
    rate.add_argument("--step", type=_positive_int, default=1, metavar="N", help="classify every N-th frame (default 1)")
    rate.add_argument("--fps", type=_positive_float, metavar="F", help="classify about F frames per second of video")
    scan.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto",
                      help="backbone precision (auto: int8 when the bundle has it)")
    scan.add_argument("--threads", type=_positive_int, metavar="N", help="inference threads (default: all cores)")
    scan.add_argument("--no-embeddings", action="store_true",
                      help="do not cache crop embeddings (saves space; new fault types then need a rescan)")
    scan.add_argument("--report", action="store_true", help="write the report when the scan ends")
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    report = sub.add_parser("report", help="write the HTML and CSV report of a project")
    report.add_argument("--project", type=Path, required=True, metavar="DIR")
    report.add_argument("--out", type=Path, metavar="DIR", help="report folder (default: PROJECT/report)")

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


def _load_head(bundle):
    from inspector.errors import BundleError
    from inspector.heads import Head

    if bundle.head_stem is None:
        raise BundleError(f"bundle {bundle.path}: has no base head; add fault types to the project first")
    return Head.load(bundle.path, bundle.head_stem)


def cmd_scan(args: argparse.Namespace) -> int:
    from inspector.model import Backbone, load_bundle
    from inspector.regions import load_profile
    from inspector.scan import Scanner, ScanResult, scan_many

    bundle = load_bundle(args.bundle)
    profile = load_profile(args.profile)
    head = _load_head(bundle)
    backbone = Backbone(bundle, args.precision, args.threads)
    store = _open_project(args.project)
    scanner = Scanner(store, backbone, head, profile, step=args.step, target_fps=args.fps,
                      keep_embeddings=not args.no_embeddings)
    print(f"bundle {bundle.name} ({backbone.precision}, {backbone.provider}), profile {profile.name}, "
          f"{len(scanner.specs)} crops per frame, project {args.project}", file=sys.stderr)
    bar = ProgressBar()
    total = len(args.videos)
    position = {"n": 0}

    def progress(p) -> None:
        if not args.quiet:
            bar.update(f"[{position['n']}/{total}] {p.video.name}", p.frame, p.frame_count,
                       p.frames_per_second, p.eta_seconds)

    def on_result(result: ScanResult) -> None:
        if not args.quiet and result.samples:
            bar.finish()
        if result.status == "skipped":
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
        position["n"] = index + 1

    try:
        results, failed = scan_many(scanner, args.videos, progress, None, on_start, on_result, on_error)
    except KeyboardInterrupt:
        bar.finish()
        print("inspector: interrupted; everything classified so far is stored, run the same command "
              "again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        store.close()
    findings = sum(r.findings for r in results)
    print(f"scanned {len(results) - sum(r.status == 'partial' for r in results)} of {total} video(s) fully, "
          f"{findings} findings; report: inspector report --project {args.project}", file=sys.stderr)
    if args.report:
        report_code = cmd_report(argparse.Namespace(project=args.project, out=None))
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
        summary = build_report(store, out)
    for path in summary.missing_videos:
        print(f"inspector: warning: video {path} not found; its findings have no pictures", file=sys.stderr)
    print(f"report: {summary.html} ({summary.findings} findings in {summary.videos} video(s)); csv: {summary.csv}")
    return EXIT_OK


def cmd_bundle_info(args: argparse.Namespace) -> int:
    from inspector.heads import Head
    from inspector.model import load_bundle

    bundle = load_bundle(args.bundle)
    head = Head.load(bundle.path, bundle.head_stem) if bundle.head_stem else None
    if args.json:
        raw = json.loads((bundle.path / "bundle.json").read_text(encoding="utf-8"))
        if head is not None:
            raw["head_classes"] = [{"name": c, "normal": n, "regions": list(r)}
                                   for c, n, r in zip(head.classes, head.normal, head.regions)]
        print(json.dumps(raw, indent=2))
        return EXIT_OK
    a = bundle.adaptation
    print(f"bundle     {bundle.name}  ({bundle.path})")
    print(f"input      {bundle.input_size}x{bundle.input_size} RGB, mean {bundle.mean}, std {bundle.std}")
    print(f"embedding  {bundle.embedding_size}-d")
    for key, file in sorted(bundle.backbones.items()):
        print(f"backbone   {key}: {file.name} ({file.stat().st_size / 1e6:.1f} MB)")
    print(f"adaptation {a.inner_steps} inner steps, step sizes {', '.join(f'{s:g}' for s in a.step_sizes)}, "
          f"logit scale {a.logit_scale:g}")
    if head is None:
        print("head       none (fault types come from the project)")
    else:
        print(f"head       v{head.version}, threshold {head.threshold:g}:")
        for name, normal, scope in zip(head.classes, head.normal, head.regions):
            kind = "normal" if normal else "fault "
            print(f"             {kind} {name}" + (f"  [regions: {', '.join(scope)}]" if scope else ""))
    prov = bundle.provenance
    for key in ("algorithm", "data", "trained", "notes"):
        if key in prov:
            print(f"{key:<10} {prov[key] if isinstance(prov[key], str) else json.dumps(prov[key])}")
    for name, value in prov.get("evaluation", {}).items():
        print(f"evaluation {name}: {value}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    handlers = {"scan": cmd_scan, "report": cmd_report, "bundle": cmd_bundle_info}
    try:
        return handlers[args.command](args)
    except InspectorError as exc:
        print(f"inspector: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("inspector: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
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
