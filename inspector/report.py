"""The morning report: an HTML page (per finding a thumbnail, time, region, class, score and
review status; per-class counts; a timeline per video) and the same findings as CSV.

Thumbnails are cut from the videos at report time (exact seek to each finding's best frame), so
the store stays small; a video that has moved is reported without pictures, not as an error.
"""
from __future__ import annotations

import csv
import html
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

from inspector.anomalies import AnomalyExplainer
from inspector.anomaly import ANOMALY
from inspector.backbone import Backbone
from inspector.compare import Versus, against_references
from inspector.diagrams import line_diagram, track_plot, write_geojson
from inspector.errors import InspectorError, StoreError
from inspector.positions import Location, Locator
from inspector.regions import CropSpec, parse_profile
from inspector.status import Review
from inspector.store import FindingRecord, ScanRecord, Store, VideoRecord
from inspector.video import VideoReader

log = logging.getLogger(__name__)

PALETTE = ("#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f")
THUMB_WIDTH = 320
CSV_COLUMNS = ("video", "scan_id", "finding_id", "class", "region", "crop", "start_s", "end_s", "best_s",
               "best_frame", "score", "frames", "status", "reviewed_class", "line", "chainage_m", "lat", "lon",
               "mast", "mast_span")


@dataclass(frozen=True)
class ReportSummary:
    html: Path
    csv: Path
    findings: int
    videos: int
    missing_videos: tuple[Path, ...]
    geojson: Path | None = None  # with geojson=True
    located: int = 0  # findings with GPS (in the GeoJSON)


def clock(seconds: float) -> str:
    minutes, secs = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:d}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes:02d}:{secs:04.1f}"


def class_colours(names: list[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _thumbnail(reader: VideoReader, finding: FindingRecord, specs: dict[str, CropSpec], out: Path,
               explainer: AnomalyExplainer | None = None) -> tuple[str, str]:
    """Write the best frame (region outlined) and the region crop (an anomaly's with its heatmap);
    return their relative paths."""
    frame = reader.read_frame(finding.best_frame).image
    height, width = frame.shape[:2]
    spec = specs.get(finding.crop)
    crop = frame
    if spec is not None:
        x0, y0, x1, y1 = spec.pixel_box(width, height)
        crop = frame[y0:y1, x0:x1].copy()
        if explainer is not None and finding.class_name == ANOMALY:
            crop = explainer.overlay(finding.region, crop)
            crop = frame[y0:y1, x0:x1].copy() if crop is None else crop
        cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 255), max(2, width // 320))
    scale = THUMB_WIDTH / width
    small = cv2.resize(frame, (THUMB_WIDTH, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    crop_small = cv2.resize(crop, (160, max(1, round(crop.shape[0] * 160 / max(crop.shape[1], 1)))),
                            interpolation=cv2.INTER_AREA)
    frame_name = f"thumbs/finding{finding.id}_frame.jpg"
    crop_name = f"thumbs/finding{finding.id}_crop.jpg"
    cv2.imwrite(str(out / frame_name), small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    cv2.imwrite(str(out / crop_name), crop_small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return frame_name, crop_name


def _timeline_svg(video: VideoRecord, findings: list[FindingRecord], colours: dict[str, str]) -> str:
    classes = sorted({f.class_name for f in findings})
    lane, left, width = 22, 170, 760
    height = lane * max(len(classes), 1) + 30
    duration = video.frame_count / video.fps
    x = lambda frame: left + width * (frame / video.fps) / duration  # noqa: E731
    parts = [f'<svg class="timeline" viewBox="0 0 {left + width + 10} {height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline">']
    for i, name in enumerate(classes):
        y = 4 + i * lane
        parts.append(f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" font-size="12">{html.escape(name)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width}" height="{lane - 6}" fill="#f1f1f1"/>')
        for f in (f for f in findings if f.class_name == name):
            x0, x1 = x(f.start_frame), x(f.end_frame + 1)
            parts.append(f'<a href="#f{f.id}"><rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 2):.1f}" '
                         f'height="{lane - 6}" fill="{colours[name]}" opacity="{0.35 if f.status == Review.REJECTED else 0.9}">'
                         f'<title>{html.escape(name)} {clock(f.start_frame / video.fps)} score {f.best_score:.2f}'
                         f'</title></rect></a>')
    axis_y = height - 8
    for k in range(6):
        t = duration * k / 5
        parts.append(f'<text x="{left + width * k / 5:.1f}" y="{axis_y}" font-size="11" text-anchor="middle">'
                     f'{clock(t)}</text>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{margin-bottom:0} .sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:12px 0;font-size:14px} th,td{border-bottom:1px solid #ddd;padding:6px 10px;
text-align:left;vertical-align:middle} th{background:#f6f6f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.status-confirmed{color:#1a7f37;font-weight:600} .status-rejected{color:#888;text-decoration:line-through}
.status-open{color:#9a6700} img{border-radius:3px;display:block} .timeline{width:100%;max-width:940px}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;border-radius:4px}
img.figure{max-width:940px;width:100%;margin:8px 0}
.new{background:#d62728;color:white;border-radius:3px;padding:1px 6px;font-weight:600}
"""


def build_report(store: Store, out_dir: Path | str, progress: Callable[[int, int], None] | None = None,
                 geojson: bool = False, backbone: Backbone | None = None) -> ReportSummary:
    """Write ``report.html``, ``findings.csv`` and ``thumbs/`` into ``out_dir``; where findings are
    located, the line diagram and the track plot; with ``geojson``, ``findings.geojson``; with a
    ``backbone`` and the project's anomaly models, heatmaps over the anomaly findings' crops."""
    explainer = AnomalyExplainer.for_project(store, backbone) if backbone is not None else None
    out = Path(out_dir)
    try:
        (out / "thumbs").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"report folder {out}: cannot be created ({exc.strerror}); choose another --out") from None
    scans = store.scans()
    findings = store.findings()
    colours = class_colours([f.class_name for f in findings])
    by_scan: dict[int, list[FindingRecord]] = defaultdict(list)
    for f in findings:
        by_scan[f.scan_id].append(f)
    thumbs: dict[int, tuple[str, str]] = {}
    missing: list[Path] = []
    rows: list[dict] = []
    locator = Locator(store)
    locations: dict[int, Location] = {}
    done = 0
    for scan in scans:
        video = store.video(scan.video_id)
        scan_findings = by_scan.get(scan.id, [])
        reader = None
        specs = {s.name: s for s in parse_profile(scan.profile_text).crop_specs()}
        if scan_findings:
            try:
                reader = VideoReader(video.path)
            except InspectorError:
                missing.append(video.path)
        for f in sorted(scan_findings, key=lambda f: f.best_frame):
            if reader is not None:
                try:
                    thumbs[f.id] = _thumbnail(reader, f, specs, out, explainer)
                except InspectorError as exc:
                    log.warning("no thumbnail for finding %d: %s", f.id, exc)
            where = locator.at(video.id, f.best_frame / video.fps) or Location()
            locations[f.id] = where
            rows.append({"video": str(video.path), "scan_id": scan.id, "finding_id": f.id, "class": f.class_name,
                         "region": f.region, "crop": f.crop, "start_s": round(f.start_frame / video.fps, 3),
                         "end_s": round(f.end_frame / video.fps, 3), "best_s": round(f.best_frame / video.fps, 3),
                         "best_frame": f.best_frame, "score": round(f.best_score, 4), "frames": f.frames,
                         "status": f.status, "reviewed_class": f.reviewed_class, "line": where.line,
                         "chainage_m": None if where.chainage_m is None else round(where.chainage_m, 1),
                         "lat": where.lat, "lon": where.lon, "mast": where.mast,
                         "mast_span": "-".join(where.span) if where.span else None})
            done += 1
            if progress:
                progress(done, len(findings))
        if reader is not None:
            reader.close()
    csv_path = out / "findings.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tracks = {store.video(v).path.name: [(fix.lon, fix.lat) for fix in store.positions(v)
                                         if fix.lat is not None and fix.lon is not None]
              for v in dict.fromkeys(s.video_id for s in scans)}
    versus = against_references(store)
    new = frozenset(i for v in versus.values() for i in v.new)
    figures = [p.name for p in (line_diagram(rows, colours, out, new), track_plot(tracks, rows, colours, out)) if p]
    geojson_path = out / "findings.geojson" if geojson else None
    located = write_geojson(rows, geojson_path) if geojson_path else 0
    html_path = out / "report.html"
    html_path.write_text(_render(store, scans, by_scan, colours, thumbs, missing, locations, figures, versus),
                         encoding="utf-8")
    return ReportSummary(html_path, csv_path, len(findings), len({s.video_id for s in scans}), tuple(missing),
                         geojson_path, located)


def _versus_cell(f: FindingRecord, against: Versus | None, thumbs: dict[int, tuple[str, str]]) -> str:
    """'new', or 'persisting' with the reference run's crop of the same fault beside this one's."""
    if against is None:
        return ""
    if f.id in against.new:
        return "<td><span class='new'>new</span></td>"
    earlier = against.persisting.get(f.id)
    if earlier is None:
        return "<td>&ndash;</td>"  # not compared: rejected, or outside the stretch both runs passed
    crop = thumbs.get(earlier.id, ("", ""))[1]
    picture = f"<img src='{crop}' width='80' alt='reference crop'>" if crop else ""
    return f"<td>persisting (finding {earlier.id}){picture}</td>"


def _render(store: Store, scans: list[ScanRecord], by_scan: dict[int, list[FindingRecord]],
            colours: dict[str, str], thumbs: dict[int, tuple[str, str]], missing: list[Path],
            locations: dict[int, Location], figures: list[str], versus: dict[int, Versus]) -> str:
    esc = html.escape
    total = sum(len(v) for v in by_scan.values())
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<title>Inspection report</title>", f"<style>{STYLE}</style></head><body>",
             "<h1>Inspection report</h1>",
             f"<p class='sub'>{len({s.video_id for s in scans})} video(s), {len(scans)} scan(s), {total} finding(s) "
             f"&middot; project {esc(str(store.path.parent))}</p>"]
    for path in missing:
        parts.append(f"<p class='warn'>Video not found at {esc(str(path))}: its findings have no pictures. "
                     "Move it back or rescan it from its new place.</p>")
    counts: dict[str, Counter] = defaultdict(Counter)
    for f in (f for v in by_scan.values() for f in v):
        counts[f.class_name][f.status] += 1
    parts.append("<h2>Faults by class</h2><table><tr><th>class</th><th>findings</th><th>confirmed</th>"
                 "<th>rejected</th><th>to review</th></tr>")
    for name in sorted(counts, key=lambda n: -sum(counts[n].values())):
        c = counts[name]
        parts.append(f"<tr><td><span class='swatch' style='background:{colours[name]}'></span>{esc(name)}</td>"
                     f"<td class='num'>{sum(c.values())}</td><td class='num'>{c['confirmed']}</td>"
                     f"<td class='num'>{c[Review.REJECTED]}</td><td class='num'>{c[Review.OPEN]}</td></tr>")
    if not counts:
        parts.append("<tr><td colspan='5'>No faults found.</td></tr>")
    parts.append("</table>")
    if figures:
        parts.append("<h2>Where on the line</h2>")
        parts += [f"<img class='figure' src='{name}' alt='{name}'>" for name in figures]
    for scan in scans:
        video = store.video(scan.video_id)
        findings = by_scan.get(scan.id, [])
        duration = video.frame_count / video.fps
        parts.append(f"<h2>{esc(video.path.name)}</h2><p class='sub'>{esc(str(video.path))} &middot; "
                     f"{clock(duration)} at {video.fps:g} fps, {video.width}&times;{video.height} &middot; scan "
                     f"{scan.id}: {esc(scan.status)}, {scan.frames_done} frames classified (every {scan.step}), "
                     f"bundle {esc(scan.bundle_name)} ({esc(scan.precision)}), profile {esc(scan.profile_name)}"
                     f"{', ' + str(scan.decode_errors) + ' undecodable frames skipped' if scan.decode_errors else ''}"
                     "</p>")
        if scan.message:
            parts.append(f"<p class='warn'>{esc(scan.message)}</p>")
        if not findings:
            parts.append("<p>No findings.</p>")
            continue
        parts.append(_timeline_svg(video, findings, colours))
        against = versus.get(scan.id)
        if against is not None:
            reference = store.video(against.reference.video_id)
            parts.append(f"<p class='sub'>Compared with the reference run {esc(reference.path.name)} (scan "
                         f"{against.reference.id}): {len(against.new)} new, {len(against.persisting)} persisting, "
                         f"{len(against.gone)} gone.</p>")
        parts.append("<table><tr><th>#</th><th>frame</th><th>crop</th><th>time</th><th>where</th><th>region</th>"
                     "<th>class</th><th>score</th><th>frames</th><th>status</th>"
                     + ("<th>vs reference</th>" if against is not None else "") + "</tr>")
        for f in findings:
            frame_img, crop_img = thumbs.get(f.id, ("", ""))
            pictures = (f"<td><img src='{frame_img}' width='{THUMB_WIDTH}' alt='frame {f.best_frame}'></td>"
                        f"<td><img src='{crop_img}' width='120' alt='crop'></td>") if frame_img else \
                "<td colspan='2'>(video not available)</td>"
            parts.append(
                f"<tr id='f{f.id}'><td class='num'>{f.id}</td>{pictures}"
                f"<td>{clock(f.start_frame / video.fps)}&ndash;{clock((f.end_frame + 1) / video.fps)}<br>"
                f"<small>best {clock(f.best_frame / video.fps)} (frame {f.best_frame})</small></td>"
                f"<td>{esc(locations[f.id].describe()) or '&ndash;'}</td><td>{esc(f.crop)}</td><td><span class='swatch' style='background:{colours[f.class_name]}'></span>"
                f"{esc(f.class_name)}{' &rarr; ' + esc(f.reviewed_class) if f.reviewed_class else ''}</td><td class='num'>{f.best_score:.2f}</td><td class='num'>{f.frames}</td>"
                f"<td class='status-{esc(f.status)}'>{esc(f.status)}</td>{_versus_cell(f, against, thumbs)}</tr>")
        parts.append("</table>")
        if against is not None and against.gone:
            parts.append("<p><b>Gone since the reference run</b> (repaired, or missed this time): "
                         + "; ".join(f"{esc(p.finding.final_class)} at {p.at / 1000:.3f} km (finding {p.finding.id})"
                                     for p in against.gone) + "</p>")
    parts.append("<p class='sub'>Findings as CSV: <a href='findings.csv'>findings.csv</a></p></body></html>")
    return "\n".join(parts)
