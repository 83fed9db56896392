"""The project's fault library: fault types made from a handful of labelled examples.

An example is a crop: a region (or tile) of a video frame, a box drawn on a frame, or a box on a
picture (labelme). Its pixels are saved under ``PROJECT/examples/`` and its embedding in the
store. Each change (a type added, removed, an old version restored) refits one head over every
class, the bundle's base classes included, and stores it as a new head version; the change and
its head are written in one transaction, so a failed addition leaves the library as it was.
Reviews teach it too: a confirmed finding's crop is an example of its class, a rejected one's a
normal example of its region. Examples files are read by ``inspector.examples``; heads are
fitted by ``inspector.adapt``.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from inspector.adapt import AdaptationError, ClassSpec, Quality, adapt, adaptation_for, embed_support
from inspector.anomaly import ANOMALY
from inspector.backbone import Backbone
from inspector.bundle import Bundle
from inspector.errors import FaultLibraryError, InspectorError
from inspector.examples import LabelledExample, crop_box
from inspector.heads import Head
from inspector.regions import CropSpec, RegionProfile, parse_profile, video_profile
from inspector.status import Review
from inspector.store import ExampleRow, FindingRecord, Store
from inspector.video import VideoReader

log = logging.getLogger(__name__)
T = TypeVar("T")

NORMAL = "normal"
AUTO_NORMAL_FRAMES = 12  # frames per video sampled for normal examples when none are given
AUTO_NORMAL_MARGIN_S = 2.0  # keep sampled normal frames this far from any labelled frame (or finding)
UNFLAGGED_PER_RUN = 24  # unflagged crops per region and run a refit adds to the normal bank
BASE_HEAD_VERSION = 0  # the bundle's own head, before the project has fault types of its own
ANY_REGION = "*"  # examples drawn as boxes or on pictures: the fault type applies to every region


@dataclass(frozen=True)
class LibraryChange:
    version: int
    head: Head
    quality: Quality
    examples: dict[str, int]
    seconds: float


def can_name_a_type(name: str) -> bool:
    """Whether a name may be given to a fault type: not empty, and not one the app reserves
    (``normal`` examples, ``anomaly`` findings)."""
    return bool(name.strip()) and name.strip().lower() not in (NORMAL, ANOMALY)


class FaultLibrary:
    """Adds, removes and restores fault types of one project, for one bundle."""

    def __init__(self, store: Store, bundle: Bundle, backbone: Backbone, tta: bool = False) -> None:
        self.store = store
        self.bundle = bundle
        self.backbone = backbone
        self.tta = tta
        self.project = store.path.parent
        self._digest = bundle.digest
        self._pending_images: dict[str, np.ndarray] = {}  # crops written only with the change itself

    # the head in force ----------------------------------------------------------------------
    def active_head(self) -> Head:
        """The project's current head, or the bundle's base head for a project without one."""
        return active_head(self.store, self.bundle)

    # changes --------------------------------------------------------------------------------
    def add(self, name: str, examples: list[LabelledExample], profile: RegionProfile | None = None,
            auto_normal: bool = True) -> LibraryChange:
        """A fault type from labelled examples (rows labelled ``normal`` are normal examples). Adding
        to a type that exists (or was removed: it comes back with its old examples) extends it; a
        crop already in the library is not added twice."""
        started = time.perf_counter()
        self._pending_images.clear()
        name = name.strip()
        if not can_name_a_type(name):
            raise FaultLibraryError(f"{name!r} cannot name a fault type; choose a name such as bird_nest")
        if not examples:
            raise FaultLibraryError("no examples given; label at least one example of the new fault type")
        if name in self._base_classes():
            raise FaultLibraryError(f"{name} comes with the model bundle; name the new fault type differently")
        known = {t.name: t for t in self.store.fault_types(include_removed=True)}
        labels = {e.label for e in examples}
        wrong = labels - {name, NORMAL}
        if wrong:
            raise FaultLibraryError(f"examples are labelled {', '.join(sorted(wrong))}; when adding {name} "
                                    f"label rows {name} or {NORMAL}")
        if name not in labels:
            raise FaultLibraryError(f"none of the examples is labelled {name}; label at least one")
        kept = self.store.examples() + (self.store.examples([name]) if name in known and known[name].removed_at
                                         else [])
        rows = self._example_rows(examples, profile)
        if not any(r.fault_type == name for r in rows):
            raise FaultLibraryError(f"every example of {name} given is already in the library; label other frames")
        if auto_normal and NORMAL not in labels and not any(r.fault_type == NORMAL for r in kept):
            rows += self._sample_normal(examples, rows, profile)
        active = [t.name for t in self.store.fault_types()]
        new_types = [(name, False)]
        if any(r.fault_type == NORMAL for r in rows) and NORMAL not in active:
            new_types.append((NORMAL, True))
        fault_types = active + [n for n, _ in new_types if n not in active]
        head, quality = self._fit(kept + rows, judged_types={name})
        count = sum(r.fault_type == name for r in rows)
        if name not in known:
            note = f"added {name} ({count} examples)"
        else:
            note = f"{count} more examples of {name}" + (" (brought back)" if known[name].removed_at else "")
        version = self._save(note, head, quality, fault_types, new_types=new_types, new_examples=rows)
        return LibraryChange(version, head.with_version(version), quality,
                             {t: sum(r.fault_type == t for r in rows) for t in sorted({r.fault_type for r in rows})},
                             time.perf_counter() - started)

    def remove(self, name: str) -> LibraryChange:
        started = time.perf_counter()
        active = [t.name for t in self.store.fault_types()]
        if name in self._base_classes():
            raise FaultLibraryError(f"{name} comes with the model bundle and cannot be removed")
        if name not in active:
            raise FaultLibraryError(f"no fault type named {name}; 'inspector faults list' shows them")
        if name == NORMAL and len(active) > 1:
            raise FaultLibraryError("the normal class is needed while operator fault types exist; remove those first")
        remaining = [t for t in active if t != name]
        head, quality = self._fit([e for e in self.store.examples() if e.fault_type != name], judged_types=set())
        version = self._save(f"removed {name}", head, quality, remaining, remove=[name])
        return LibraryChange(version, head.with_version(version), quality, {}, time.perf_counter() - started)

    def remove_example(self, example_id: int) -> LibraryChange:
        """Take a wrong example out of its fault type (it stays in the store, marked) and refit."""
        started = time.perf_counter()
        examples = self.store.examples()
        target = next((e for e in examples if e.id == example_id), None)
        if target is None:
            raise FaultLibraryError(f"no example {example_id} in the library; 'inspector faults list' shows the types")
        rest = [e for e in examples if e.id != example_id]
        if not any(e.fault_type == target.fault_type for e in rest):
            raise FaultLibraryError(f"example {example_id} is the last of {target.fault_type}; "
                                    f"remove the fault type instead ('inspector faults remove {target.fault_type}')")
        head, quality = self._fit(rest, judged_types={target.fault_type})
        version = self._save(f"took example {example_id} out of {target.fault_type}", head, quality,
                             [t.name for t in self.store.fault_types()], remove_examples=[example_id])
        return LibraryChange(version, head.with_version(version), quality, {}, time.perf_counter() - started)

    def rename(self, old: str, new: str) -> LibraryChange:
        """Rename a fault type of the project: its examples, its findings and a new head version."""
        started = time.perf_counter()
        new = new.strip()
        active = [t.name for t in self.store.fault_types()]
        if old in self._base_classes():
            raise FaultLibraryError(f"{old} comes with the model bundle and cannot be renamed")
        if old not in active or old == NORMAL:
            raise FaultLibraryError(f"no fault type named {old} to rename; 'inspector faults list' shows them")
        taken = {t.name for t in self.store.fault_types(include_removed=True)} | set(self._base_classes())
        if not can_name_a_type(new) or new in taken:
            raise FaultLibraryError(f"{new!r} cannot be the new name: it is empty, reserved ('normal', 'anomaly') "
                                    "or taken")
        rows = [replace(e, fault_type=new) if e.fault_type == old else e for e in self.store.examples()]
        head, quality = self._fit(rows, judged_types={new})
        version = self._save(f"renamed {old} to {new}", head, quality, [new if t == old else t for t in active],
                             rename=(old, new))
        return LibraryChange(version, head.with_version(version), quality, {}, time.perf_counter() - started)

    def record_review(self, finding_id: int, status: str, reviewed_class: str | None = None) -> ExampleRow | None:
        """A review decision, and what it teaches: the finding's best crop becomes an example of its
        (corrected) class when confirmed, a normal example of its region when rejected; reopening
        takes that example out again. The head follows at the next ``refit``."""
        finding = self.store.finding(finding_id)
        if finding is None:
            raise FaultLibraryError(f"no finding {finding_id} in the project; 'inspector findings' lists them")
        scan = self.store.scan(finding.scan_id)
        if scan.bundle_digest != self._digest:
            raise FaultLibraryError(f"finding {finding.id} was scanned with model bundle {scan.bundle_name}; "
                                    "review it with that bundle (--bundle)")
        label = {Review.CONFIRMED: reviewed_class or finding.class_name, Review.REJECTED: NORMAL}.get(status)
        head = self.active_head()
        if finding.class_name == ANOMALY and label == ANOMALY:
            label = None  # a confirmed anomaly teaches no class until it is named (--as NEW_TYPE)
        elif finding.class_name == ANOMALY and label not in (None, NORMAL) and label not in head.classes:
            if not can_name_a_type(label):  # naming a confirmed anomaly: the first example of a new type
                raise FaultLibraryError(f"{label!r} cannot name a fault type; choose a name such as broken_dropper")
        elif label not in (None, NORMAL) and label not in head.classes:
            raise FaultLibraryError(f"{label} is not a fault type of the project; known: "
                                    f"{', '.join(head.fault_classes)}")
        rows = [] if label is None else [self._review_example(finding, label)]
        types = {t.name: t for t in self.store.fault_types(include_removed=True)}
        normal_of = dict(zip(head.classes, head.normal))
        new_types = [(r.fault_type, normal_of.get(r.fault_type, r.fault_type == NORMAL)) for r in rows
                     if r.fault_type not in types or types[r.fault_type].removed_at]
        self._with_crops(lambda: self.store.set_finding_status(finding_id, status, reviewed_class,
                                                               learned=(self._digest, new_types, rows)))
        return rows[0] if rows else None

    def _review_example(self, finding: FindingRecord, label: str) -> ExampleRow:
        """The finding's best crop as an example: cut from its video, or (the video gone) taken
        from the scan's cached embedding."""
        scan = self.store.scan(finding.scan_id)
        video = self.store.video(scan.video_id)
        profile = parse_profile(scan.profile_text, f"profile of scan {scan.id}")
        if video.path.is_file():
            example = LabelledExample(finding.id, label, video.path, finding.best_frame, finding.crop)
            return replace(self._example_rows([example], profile, source="review", keep_known=True)[0],
                           finding_id=finding.id)
        cached = self.store.cached_embeddings(video.id, self._digest, [(finding.best_frame, finding.crop)])
        embedding = cached.get((finding.best_frame, finding.crop))
        if embedding is None:
            raise FaultLibraryError(f"finding {finding.id}: its video {video.path} is gone and its crop was not cached "
                                    "with this bundle; put the video back to review it")
        reference = f"review:{video.id}:{finding.best_frame}:{finding.crop}"
        return ExampleRow(label, "review", video.id, finding.best_frame, finding.crop, finding.region, None, "",
                          hashlib.sha256(reference.encode()).hexdigest()[:24], embedding, finding_id=finding.id)

    def refit(self, sample_normals: bool = False) -> LibraryChange:
        """Adapt the head again from every example (the reviews' included), as a new head version.
        With ``sample_normals`` the normal bank grows first by crops of the scanned runs that
        nothing was flagged on (``UNFLAGGED_PER_RUN`` per region and run, away from findings). Off
        by default: on the demo it cut the bird nests' precision after ten reviews from 1.00 to
        0.62 (docs/benchmarks.md); the reviewed and labelled normals do the work."""
        started = time.perf_counter()
        sampled = self._unflagged_normals() if sample_normals else []
        rows = self.store.examples() + sampled
        reviews = sum(r.source == "review" for r in rows)
        new_types = [(NORMAL, True)] if sampled and NORMAL not in {t.name for t in self.store.fault_types()} else []
        head, quality = self._fit(rows, judged_types=set())
        note = f"refit from {len(rows)} examples ({reviews} from reviews, {len(sampled)} unflagged crops added)"
        version = self._save(note, head, quality, [t.name for t in self.store.fault_types()]
                             + [n for n, _ in new_types], new_types=new_types, new_examples=sampled)
        return LibraryChange(version, head.with_version(version), quality,
                             {NORMAL: len(sampled)} if sampled else {}, time.perf_counter() - started)

    def _unflagged_normals(self) -> list[ExampleRow]:
        """Crops of this bundle's scans that no class flagged, in regions some fault type applies
        to, spread over each run and kept ``AUTO_NORMAL_MARGIN_S`` away from every finding (a
        missed fault next to a found one is not taught as normal); from the cached embeddings."""
        head = self.active_head()
        faults = [r for r, n in zip(head.regions, head.normal) if not n]
        stored = {e.pixels_hash for e in self.store.all_examples() if e.fault_type == NORMAL}
        sampled: list[ExampleRow] = []
        for scan in self.store.scans():
            if scan.bundle_digest != self._digest:
                continue
            video = self.store.video(scan.video_id)
            margin = AUTO_NORMAL_MARGIN_S * video.fps
            near = [(f.crop, f.start_frame - margin, f.end_frame + margin) for f in self.store.findings(scan.id)]
            quiet: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for d in self.store.detections(scan.id):
                if (not d.is_fault and any(not scope or d.region in scope for scope in faults)
                        and not any(c == d.crop and lo <= d.frame <= hi for c, lo, hi in near)):
                    quiet[d.region].append((d.frame, d.crop))
            for region, crops in quiet.items():
                spread = np.linspace(0, len(crops) - 1, min(UNFLAGGED_PER_RUN, len(crops))).astype(int)
                picks = [crops[i] for i in spread]
                cached = self.store.cached_embeddings(video.id, self._digest, picks)
                for frame, crop in picks:
                    digest = hashlib.sha256(f"{video.id}:{frame}:{crop}".encode()).hexdigest()[:24]
                    if (frame, crop) in cached and digest not in stored:
                        stored.add(digest)
                        sampled.append(ExampleRow(NORMAL, "auto-normal", video.id, frame, crop, region, None, "",
                                                  digest, cached[(frame, crop)]))
        return sampled

    def set_threshold(self, name: str, value: float | None) -> LibraryChange:
        """The alarm threshold of a fault type (a calibrated score in (0, 1)); ``None``: back to
        the default. A new head version (the default comes from a refit)."""
        started = time.perf_counter()
        head = self.active_head()
        if name not in head.classes or head.normal[head.classes.index(name)]:
            raise FaultLibraryError(f"no fault type named {name}; known: {', '.join(head.fault_classes)}")
        if value is not None and not 0.0 < value < 1.0:
            raise FaultLibraryError(f"a threshold is a score between 0 and 1 (exclusive), not {value:g}")
        overrides = self.store.thresholds()
        overrides.pop(name, None)
        if value is not None:
            overrides[name] = value
        head, quality = self._fit(self.store.examples(), judged_types=set(), thresholds=overrides)
        note = f"alarm threshold of {name} " + (f"set to {value:g}" if value is not None else "reset")
        version = self._save(note, head, quality, [t.name for t in self.store.fault_types()], threshold=(name, value))
        return LibraryChange(version, head.with_version(version), quality, {}, time.perf_counter() - started)

    def restore(self, version: int) -> LibraryChange:
        """Make an earlier head version current again (as a new version, so nothing is lost)."""
        started = time.perf_counter()
        head_json, head_npz, digest = self.store.head_parts(version)
        if digest != self._digest:
            raise FaultLibraryError(f"head version {version} was made with another model bundle; "
                                    "restore it with that bundle (--bundle)")
        target = next(h for h in self.store.head_versions() if h.version == version)
        active = {t.name for t in self.store.fault_types()}
        wanted = set(target.fault_types)
        head = Head.from_parts(head_json, head_npz)
        quality = Quality(**target.quality) if target.quality else Quality(None, {}, ())
        new = self._save(f"restored version {version}", head, quality, sorted(wanted),
                         remove=sorted(active - wanted), reactivate=sorted(wanted - active))
        return LibraryChange(new, head.with_version(new), quality, {}, time.perf_counter() - started)

    # helpers ----------------------------------------------------------------------------------
    def _base_classes(self) -> list[str]:
        if self.bundle.head_stem is None:
            return []
        return list(Head.load(self.bundle.path, self.bundle.head_stem).classes)

    def _fit(self, rows: list[ExampleRow], judged_types: set[str],
             thresholds: dict[str, float] | None = None) -> tuple[Head, Quality]:
        normal_types = {t.name for t in self.store.fault_types(include_removed=True) if t.normal} | {NORMAL}
        return fit_library_head(self.bundle, rows, normal_types, judged_types,
                                self.store.thresholds() if thresholds is None else thresholds)

    def _save(self, note: str, head: Head, quality: Quality, fault_types: list[str], **change) -> int:
        """The change and its head as a new head version, in one transaction (with its crops)."""
        quality_json = {"loo_accuracy": quality.loo_accuracy, "examples": quality.examples,
                        "warnings": list(quality.warnings)}
        return self._with_crops(lambda: self.store.save_library_change(
            note, self._digest, head.to_json(), head.to_npz(), fault_types, quality_json, **change))

    def _with_crops(self, write: Callable[[], T]) -> T:
        """Write the new examples' crops, then ``write`` the store; if anything fails, remove the
        crops again: a failed change leaves nothing behind."""
        written: list[Path] = []
        try:
            for relative, crop in self._pending_images.items():
                path = self.project / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
                    raise FaultLibraryError(f"cannot save example crops under {path.parent}; check the project folder")
                written.append(path)
            return write()
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        finally:
            self._pending_images.clear()

    def _example_rows(self, examples: list[LabelledExample], profile: RegionProfile | None,
                      source: str = "operator", keep_known: bool = False) -> list[ExampleRow]:
        """Cut, check, save and embed every example; any problem stops all before anything is kept.
        Crops already in the library are left out unless ``keep_known`` (a review re-teaches one)."""
        size = self.bundle.input_size
        crops, meta = [], []
        readers: dict[Path, VideoReader] = {}
        try:
            for ex in examples:
                where = f"example {ex.row} ({ex.label})"
                if ex.image is not None:
                    image = cv2.imread(str(ex.image), cv2.IMREAD_COLOR)
                    if image is None:
                        raise FaultLibraryError(f"{where}: picture {ex.image} cannot be read")
                    try:
                        crop = crop_box(image, ex.box, size)
                    except ValueError as exc:
                        raise FaultLibraryError(f"{where}: {exc}") from None
                    crops.append(crop)
                    meta.append((ex, None, None, ANY_REGION))
                    continue
                if ex.video not in readers:
                    readers[ex.video] = VideoReader(ex.video)
                reader = readers[ex.video]
                if not 0 <= ex.frame < reader.info.frame_count:
                    raise FaultLibraryError(f"{where}: frame {ex.frame} is outside {ex.video.name} "
                                            f"(frames 0..{reader.info.frame_count - 1})")
                video = self.store.add_video(reader.info)
                frame = reader.read_frame(ex.frame).image
                if ex.box is not None:
                    try:
                        crop = crop_box(frame, ex.box, size)
                    except ValueError as exc:
                        raise FaultLibraryError(f"{where}: {exc}") from None
                    crops.append(crop)
                    meta.append((ex, video.id, None, ANY_REGION))
                    continue
                specs = {s.name: s for s in video_profile(self.store, video.id, profile).crop_specs()}
                spec = specs.get(ex.crop)
                if spec is None:
                    raise FaultLibraryError(f"{where}: no region {ex.crop!r} in the profile "
                                            f"(it has {', '.join(specs)})")
                crops.append(crop_box(frame, spec.pixel_box(frame.shape[1], frame.shape[0]), size))
                meta.append((ex, video.id, spec.name, spec.region))
        except InspectorError as exc:
            if isinstance(exc, FaultLibraryError):
                raise
            raise FaultLibraryError(f"examples: {exc}") from None
        finally:
            for reader in readers.values():
                reader.close()
        # An example is its source (video, frame, region or box; or picture and box) and its pixels:
        # listing one twice is a duplicate; a static scene giving equal pixels on two frames is not.
        hashes = [hashlib.sha256(f"{vid}|{ex.image}|{ex.frame}|{ex.crop}|{ex.box}|".encode() + c.tobytes())
                  .hexdigest()[:24] for (ex, vid, *_), c in zip(meta, crops)]
        stored = {(e.fault_type, e.pixels_hash) for e in self.store.all_examples()}
        first: dict[tuple[str, str], int] = {}
        keep = []
        for i, ((ex, *_), digest) in enumerate(zip(meta, hashes)):
            key = (ex.label, digest)
            if key in first and source == "operator":
                raise FaultLibraryError(f"examples {first[key]} and {ex.row} are the same crop; remove the duplicate")
            if key not in first and (keep_known or key not in stored):  # kept examples are not added twice
                keep.append(i)
            first.setdefault(key, ex.row)
        crops, meta, hashes = [crops[i] for i in keep], [meta[i] for i in keep], [hashes[i] for i in keep]
        if not crops:
            return []
        embeddings = embed_support(self.backbone, np.stack(crops), self.tta)
        rows = []
        for (ex, video_id, crop_name, region), crop, digest, embedding in zip(meta, crops, hashes, embeddings):
            relative = Path("examples") / ex.label / f"{digest}.png"
            self._pending_images[str(relative)] = crop
            rows.append(ExampleRow(ex.label, source, video_id, ex.frame, crop_name, region, ex.box,
                                   str(relative), digest, embedding))
        return rows

    def _sample_normal(self, examples: list[LabelledExample], rows: list[ExampleRow],
                       profile: RegionProfile | None) -> list[ExampleRow]:
        """Normal examples from frames of the same videos that carry no label: the same regions,
        frames spread over the video and away from every labelled frame. Taken from the scan's
        cached embeddings where the video was scanned with this bundle (no decoding), else cut."""
        by_video: dict[Path, list[LabelledExample]] = defaultdict(list)
        for ex in examples:
            if ex.video is not None:
                by_video[ex.video].append(ex)
        regions = {r.region for r in rows if r.crop}
        sampled: list[ExampleRow] = []
        to_cut: list[LabelledExample] = []
        for video, labelled in by_video.items():
            with VideoReader(video) as reader:
                info = reader.info
            video_id = self.store.add_video(info).id
            specs: list[CropSpec] = [s for s in video_profile(self.store, video_id, profile).crop_specs() if s.region in regions]
            margin = round(AUTO_NORMAL_MARGIN_S * info.fps)
            busy = [e.frame for e in labelled]
            candidates = self.store.scanned_frames(video_id, self._digest) or range(info.frame_count)
            free = [f for f in candidates if all(abs(f - b) > margin for b in busy)]
            if not free or not specs:
                continue
            picks = [(free[i], specs[k % len(specs)]) for k, i in
                     enumerate(np.linspace(0, len(free) - 1, min(AUTO_NORMAL_FRAMES, len(free))).astype(int))]
            cached = self.store.cached_embeddings(video_id, self._digest, [(f, s.name) for f, s in picks])
            for frame, spec in picks:
                embedding = cached.get((frame, spec.name))
                if embedding is None:
                    to_cut.append(LabelledExample(-len(to_cut) - 1, NORMAL, video, frame, spec.name))
                    continue
                reference = f"{video_id}:{frame}:{spec.name}"
                sampled.append(ExampleRow(NORMAL, "auto-normal", video_id, frame, spec.name, spec.region, None,
                                          "", hashlib.sha256(reference.encode()).hexdigest()[:24], embedding))
        stored = {(e.fault_type, e.pixels_hash) for e in self.store.all_examples()}
        sampled = [r for r in sampled if (r.fault_type, r.pixels_hash) not in stored]
        if to_cut:
            sampled += self._example_rows(to_cut, profile, source="auto-normal")
        log.info("sampled %d normal examples from unlabelled frames", len(sampled))
        return sampled


def fit_library_head(bundle: Bundle, rows: list[ExampleRow], normal_types: set[str], judged_types: set[str],
                     thresholds: dict[str, float]) -> tuple[Head, Quality]:
    """One head over the bundle's base classes (from its base examples) and the library's classes
    (from ``rows``), with the bundle's adaptation: what every library change refits, and, with no
    rows, the head a project starts with."""
    base_embeddings, base_labels = bundle.load_base_examples()
    specs: list[ClassSpec] = []
    if bundle.head_stem is not None:
        base = Head.load(bundle.path, bundle.head_stem)
        missing = set(base.classes) - set(base_labels)
        if missing:
            raise FaultLibraryError(f"bundle {bundle.path}: has no base examples for "
                                    f"{', '.join(sorted(missing))}, so its classes cannot be kept; re-export it")
        specs = [ClassSpec(c, n, r) for c, n, r in zip(base.classes, base.normal, base.regions)]
    regions: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        regions[row.fault_type].add(row.region)
    # A normal class with no fault type left in its regions (its last one was removed) has
    # nothing to be told apart from: it sits out of the head; its examples stay in the library.
    for name in [n for n in regions if n in normal_types]:
        rivals = [s.name for s in specs if not s.regions or set(s.regions) & regions[name]]
        rivals += [n for n in regions if n != name and (ANY_REGION in regions[n] or regions[n] & regions[name])]
        if not rivals:
            del regions[name]
            rows = [r for r in rows if r.fault_type != name]
    base = {spec.name: spec for spec in specs}
    for name in [n for n in regions if n in base]:  # reviewed crops of the bundle's own classes
        outside = regions[name] - set(base[name].regions) if base[name].regions else set()
        if outside:
            raise FaultLibraryError(f"examples of {name} lie in {', '.join(sorted(outside))}, where the bundle's "
                                    f"{name} does not apply; take them out ('inspector faults examples {name}')")
    specs += [ClassSpec(name, name in normal_types,
                        () if ANY_REGION in regions[name] else tuple(sorted(regions[name])))
              for name in regions if name not in base]
    embeddings = np.concatenate([base_embeddings] + [r.embedding[None] for r in rows]) if rows else base_embeddings
    labels = base_labels + [r.fault_type for r in rows]
    scopes = {spec.name: spec.regions for spec in specs}
    where = [scopes[label][0] if scopes[label] else "*" for label in base_labels] + [r.region for r in rows]
    judged = np.array([False] * len(base_labels) + [r.fault_type in judged_types or
                                                     (r.fault_type == NORMAL and r.source == "operator")
                                                     for r in rows])
    try:
        head, quality = adapt(embeddings, labels, specs, adaptation_for(bundle), where, judged=judged,
                              info={"bundle_digest": bundle.digest},
                              thresholds=thresholds)
    except AdaptationError as exc:
        raise FaultLibraryError(str(exc)) from None
    return head, quality


_BASE_HEADS: dict[str, Head] = {}  # bundle digest -> its base head as a project fits it


def base_head(bundle: Bundle) -> Head:
    """The head a project without fault types of its own scans with: the bundle's base classes
    fitted from its base examples exactly as every later library change refits them (same
    adaptation, calibration and thresholds), so adding a fault type elsewhere leaves their
    decisions as they were. Bundles without base examples: their stored head."""
    if bundle.base_examples is None:
        return Head.load(bundle.path, bundle.head_stem).with_version(BASE_HEAD_VERSION)
    if bundle.digest not in _BASE_HEADS:
        _BASE_HEADS[bundle.digest] = fit_library_head(bundle, [], {NORMAL}, set(), {})[0]
    return _BASE_HEADS[bundle.digest].with_version(BASE_HEAD_VERSION)


def active_head(store: Store, bundle: Bundle) -> Head:
    """The project's active head for this bundle; the bundle's base head if it has none yet."""
    version = store.active_head_version()
    if version is None:
        if bundle.head_stem is None:
            raise FaultLibraryError(f"bundle {bundle.path}: has no base head and the project no fault types; "
                                    "add one with 'inspector faults add'")
        return base_head(bundle)
    head_json, head_npz, digest = store.head_parts(version)
    if digest != bundle.digest:
        raise FaultLibraryError(f"the project's fault types (head version {version}) were made with another model "
                                "bundle; scan with that bundle (--bundle), or start a new project for this one")
    return Head.from_parts(head_json, head_npz).with_version(version)
