"""Where the findings are, drawn for the report: a line diagram (chainage along each line, one row
per run, a mark per finding coloured by fault type) and, where the runs have GPS, a plot of the
track itself with the findings on it (no map tiles: nothing online is assumed). matplotlib, Agg
backend, SVG files beside the report; GeoJSON of the located findings for GIS tools (QGIS)."""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from inspector.status import Review

GEOJSON_PROPERTIES = ("finding_id", "video", "class", "status", "reviewed_class", "score", "best_s", "line",
                      "chainage_m", "mast_span", "region", "crop")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_diagram(rows: Sequence[dict], colours: dict[str, str], out: Path,
                 new: frozenset[int] = frozenset()) -> Path | None:
    """One panel per line: x = chainage (km), one row per run, findings ``new`` since the line's
    reference run ringed; None when no finding has a chainage."""
    located = [r for r in rows if r["line"] is not None and r["chainage_m"] is not None]
    if not located:
        return None
    plt = _pyplot()
    lines = sorted({r["line"] for r in located})
    runs = {line: sorted({Path(r["video"]).name for r in located if r["line"] == line}) for line in lines}
    heights = [0.5 * len(runs[line]) + 1.2 for line in lines]
    figure, axes = plt.subplots(len(lines), 1, figsize=(10, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for ax, line in zip(axes[:, 0], lines):
        names = runs[line]
        for row in (r for r in located if r["line"] == line):
            y = names.index(Path(row["video"]).name)
            rejected = row["status"] == Review.REJECTED
            ax.scatter(row["chainage_m"] / 1000, y, s=60, marker="|" if rejected else "o",
                       color=colours.get(row["class"], "#444"), alpha=0.35 if rejected else 0.9, linewidths=2)
            if row["finding_id"] in new:
                ax.scatter(row["chainage_m"] / 1000, y, s=220, marker="o", facecolors="none", edgecolors="black",
                           linewidths=1.5)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_title(f"line {line}", loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("chainage (km)")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour, label=name)
               for name, colour in sorted(colours.items()) if any(r["class"] == name for r in located)]
    if any(r["finding_id"] in new for r in located):
        handles.append(plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="none", markeredgecolor="black",
                                  markersize=12, label="new since the reference run"))
    figure.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 0.85, 1))
    path = out / "line.svg"
    figure.savefig(path)
    plt.close(figure)
    return path


def track_plot(tracks: dict[str, list[tuple[float, float]]], rows: Sequence[dict], colours: dict[str, str],
               out: Path) -> Path | None:
    """The runs' GPS tracks (lon, lat per run) with the findings on them; None without GPS."""
    located = [r for r in rows if r["lat"] is not None and r["lon"] is not None]
    if not located and not any(tracks.values()):
        return None
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7, 7))
    for name, points in tracks.items():
        if points:
            lon, lat = zip(*points)
            ax.plot(lon, lat, color="#999", linewidth=1.5, label=name)
    by_class: dict[str, list[dict]] = defaultdict(list)
    for row in located:
        by_class[row["class"]].append(row)
    for name, found in sorted(by_class.items()):
        ax.scatter([r["lon"] for r in found], [r["lat"] for r in found], s=40, color=colours.get(name, "#444"),
                   label=name, zorder=3, edgecolors="white", linewidths=0.5)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "track.svg"
    figure.savefig(path)
    plt.close(figure)
    return path


def write_geojson(rows: Sequence[dict], path: Path) -> int:
    """A FeatureCollection of the findings with GPS (points, WGS 84); returns how many."""
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                 "properties": {key: r[key] for key in GEOJSON_PROPERTIES}}
                for r in rows if r["lat"] is not None and r["lon"] is not None]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1), encoding="utf-8")
    return len(features)
