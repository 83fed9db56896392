import sqlite3

import numpy as np
import pytest

from inspector.errors import StoreError
from inspector.findings import group_findings
from inspector.store import STORE_NAME, DetectionRow, FindingRecord, Store, quick_hash
from inspector.video import probe


def _scan(store, video_path):
    video = store.add_video(probe(video_path))
    return store.open_scan(video.id, "bundle1", "tiny", "fp32", "test", "prof1", "text", 1)


def _rows(frames, fault=True):
    return [DetectionRow(f, "track", "track", "red_fault", 0.9, fault) for f in frames]


def test_store_uses_wal_and_current_schema(tmp_path):
    with Store(tmp_path / "p") as store:
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_store_from_newer_inspector_is_refused(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / STORE_NAME)
    conn.execute("PRAGMA user_version=999")
    conn.close()
    with pytest.raises(StoreError, match="newer inspector"):
        Store(tmp_path)


def test_video_is_identified_by_content(tmp_path, fault_video):
    with Store(tmp_path / "p") as store:
        first = store.add_video(probe(fault_video))
        moved = tmp_path / "moved.mp4"
        moved.write_bytes(fault_video.read_bytes())
        again = store.add_video(probe(moved))
        assert first.id == again.id and again.path == moved.resolve()
        assert quick_hash(fault_video) == quick_hash(moved)


def test_rewriting_a_batch_replaces_never_doubles(tmp_path, fault_video):
    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        store.write_batch(scan.id, _rows(range(0, 10)), [], 10, 10, 0)
        store.write_batch(scan.id, _rows(range(5, 15)), [], 15, 15, 0)
        assert store.detection_count(scan.id) == 15
        assert store.scan(scan.id).next_frame == 15


def test_a_scans_embeddings_come_back_in_chunks_of_that_scan_only(tmp_path, fault_video):
    """Re-classification and the Ray driver read cached embeddings through this, chunk by chunk."""
    with Store(tmp_path / "p") as store:
        first = _scan(store, fault_video).id
        second = store.open_scan(store.videos()[0].id, "bundle2", "tiny", "fp32", "test", "prof1", "text", 1).id
        vectors = {f: np.full(4, f, np.float16).tobytes() for f in range(5)}
        store.write_batch(first, [], [(f, "track", v) for f, v in vectors.items()], 5, 5, 0)
        store.write_batch(second, [], [(9, "track", vectors[0])], 10, 1, 0)
        batches = list(store.scan_embeddings(first, chunk=2))
        assert [len(b) for b in batches] == [2, 2, 1]
        assert sorted((f, c, bytes(v)) for b in batches for f, c, v in b) == [(f, "track", v) for f, v in vectors.items()]
        assert [f for b in store.scan_embeddings(second) for f, _, _ in b] == [9]


def test_same_scan_is_resumed_not_duplicated(tmp_path, fault_video):
    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        store.write_batch(scan.id, _rows(range(4)), [], 4, 4, 1)
        again = _scan(store, fault_video)
        assert again.id == scan.id and again.next_frame == 4 and again.decode_errors == 1
        assert len(store.scans()) == 1


def test_a_failed_write_leaves_nothing_half_done(tmp_path, fault_video):
    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        store.write_batch(scan.id, _rows(range(4)), [], 4, 4, 0)
        bad = _rows(range(4, 8)) + [DetectionRow(9, None, "track", "x", 0.5, False)]  # crop NOT NULL
        with pytest.raises(StoreError):
            store.write_batch(scan.id, bad, [], 10, 10, 0)
        assert store.detection_count(scan.id) == 4
        assert store.scan(scan.id).next_frame == 4


def test_ctrl_c_just_after_a_commit_is_the_interrupt_not_a_crash(tmp_path, fault_video):
    """Python raises KeyboardInterrupt between two steps, so it can land after COMMIT returned:
    what was committed stays, and the interrupt (exit 130 upstream) is what comes out."""
    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        with pytest.raises(KeyboardInterrupt):
            with store.transaction() as conn:
                conn.execute("UPDATE scans SET next_frame=7 WHERE id=?", (scan.id,))
                conn.execute("COMMIT")  # as if the interrupt came right after the context's own COMMIT
                raise KeyboardInterrupt
        assert store.scan(scan.id).next_frame == 7


def test_disk_full_is_one_clear_line_and_keeps_what_was_stored(tmp_path, fault_video):
    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        store.write_batch(scan.id, _rows(range(4)), [], 4, 4, 0)
        pages = store.connection.execute("PRAGMA page_count").fetchone()[0]
        store.connection.execute(f"PRAGMA max_page_count={pages}")  # the disk is now "full"
        blobs = [(f, "track", b"\x00" * 4096) for f in range(4, 200)]
        with pytest.raises(StoreError, match="disk is full; free some space") as info:
            store.write_batch(scan.id, _rows(range(4, 200)), blobs, 200, 200, 0)
        assert "\n" not in str(info.value)
    with Store(tmp_path / "p") as store:
        assert store.detection_count(scan.id) == 4


def test_project_path_that_is_a_file(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        Store(target)


def test_project_folder_that_cannot_be_created(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store(target / "project")


def test_corrupt_store_file(tmp_path):
    (tmp_path / STORE_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        Store(tmp_path)
    assert "\n" not in str(info.value)


def test_findings_keep_their_review_status_when_regrouped(tmp_path, fault_video):
    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        first = [FindingRecord(0, scan.id, "track", "track", "red_fault", 10, 19, 12, 0.9, 10, "open")]
        store.replace_findings(scan.id, first)
        finding = store.findings(scan.id)[0]
        store.set_finding_status(finding.id, "confirmed")
        regrouped = [FindingRecord(0, scan.id, "track", "track", "red_fault", 11, 20, 15, 0.95, 10, "open"),
                     FindingRecord(0, scan.id, "track", "track", "red_fault", 40, 44, 41, 0.9, 5, "open")]
        store.replace_findings(scan.id, regrouped)
        assert [f.status for f in store.findings(scan.id)] == ["confirmed", "open"]
        assert store.findings(scan.id)[0].id == finding.id  # the regrouped finding keeps its id
        with pytest.raises(StoreError, match="review status"):
            store.set_finding_status(finding.id, "maybe")


def test_a_finding_that_joins_reviewed_passages_lists_them_once(tmp_path, fault_video):
    """A refit can close the gap between two confirmed passages: the joined finding carries their
    decision once (not beside a copy of the second); an open one it joins does not override a
    decision, and a different decision is kept apart."""
    def record(start, end):
        return FindingRecord(0, 1, "track", "track", "red_fault", start, end, start, 0.9, end - start + 1, "open")

    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        store.replace_findings(scan.id, [record(0, 17), record(21, 29), record(40, 44), record(47, 50),
                                         record(60, 64), record(66, 70)])
        ids = [f.id for f in store.findings(scan.id)]
        for finding_id, status in zip(ids, ["confirmed", "confirmed", "open", "confirmed", "confirmed", "rejected"]):
            store.set_finding_status(finding_id, status)
        store.replace_findings(scan.id, [record(0, 29), record(40, 50), record(60, 70)])
        after = [(f.id, f.start_frame, f.end_frame, f.status) for f in store.findings(scan.id)]
    assert after == [(ids[0], 0, 29, "confirmed"), (ids[3], 40, 50, "confirmed"), (ids[4], 60, 70, "confirmed"),
                     (ids[5], 66, 70, "rejected")]


def test_regrouping_a_long_run_keeps_ids_and_decisions_and_is_fast(tmp_path, fault_video):
    """20,000 findings regrouped (each shifted a frame, a new one in between, a rejected one gone):
    ids and decisions follow their finding, the dropped rejected one stays, in well under a second."""
    import time

    with Store(tmp_path / "p") as store:
        scan = _scan(store, fault_video)
        old = [FindingRecord(0, scan.id, "track", "track", "red_fault", 10 * k, 10 * k + 4, 10 * k, 0.9, 5, "open")
               for k in range(20_000)]
        store.replace_findings(scan.id, old)
        before = store.findings(scan.id)
        store.set_finding_status(before[7].id, "confirmed")
        store.set_finding_status(before[8].id, "rejected")
        regrouped = [FindingRecord(0, scan.id, "track", "track", "red_fault", 10 * k + 1, 10 * k + 5, 10 * k + 1,
                                   0.9, 5, "open") for k in range(20_000) if k != 8]
        regrouped.append(FindingRecord(0, scan.id, "track", "track", "red_fault", 75, 76, 75, 0.9, 2, "open"))
        started = time.perf_counter()
        store.replace_findings(scan.id, regrouped)
        seconds = time.perf_counter() - started
        after = {f.id: f for f in store.findings(scan.id)}
        assert seconds < 1.0, seconds
        assert all(after[f.id].start_frame == f.start_frame + 1 for f in before if f.id != before[8].id)
        assert after[before[7].id].status == "confirmed"
        assert after[before[8].id].status == "rejected" and after[before[8].id].start_frame == 80  # kept as it was
        assert len(after) == 20_001 and sum(f.status == "open" for f in after.values()) == 19_999


def test_positions_locate_a_time(tmp_path, fault_video):
    from inspector.positions import Fix, Locator, Mast

    with Store(tmp_path / "p") as store:
        video = store.add_video(probe(fault_video))
        store.set_positions(video.id, [Fix(0.0, "L1", 1000.0, mast="12"), Fix(3.0, "L1", 1060.0, mast="13")])
        store.set_masts([Mast("L1", "12", 990.0), Mast("L1", "13", 1050.0), Mast("L1", "14", 1110.0)])
        where = Locator(store).at(video.id, 1.0)
        assert where.chainage_m == 1020.0 and where.mast == "12" and where.span == ("12", "13")
        assert Locator(store).at(video.id, 4.0) is None  # after the track ends


def test_group_findings_joins_runs_across_small_gaps():
    rows = _rows([10, 11, 12, 14, 15]) + _rows([30, 31]) + _rows([20], fault=False)
    rows[1] = DetectionRow(11, "track", "track", "red_fault", 0.99, True)
    findings = group_findings(rows, step=1, max_gap=2)
    assert [(f.start_frame, f.end_frame, f.frames) for f in findings] == [(10, 15, 5), (30, 31, 2)]
    assert findings[0].best_frame == 11


def test_group_findings_splits_by_class_and_crop_and_drops_flicker():
    rows = (_rows([1, 2, 3]) + [DetectionRow(2, "catenary[0]", "catenary", "nest", 0.8, True)]
            + [DetectionRow(f, "track", "track", "other", 0.7, True) for f in (4, 5)])
    findings = group_findings(rows, step=1)
    assert sorted((f.crop, f.class_name) for f in findings) == [
        ("catenary[0]", "nest"), ("track", "other"), ("track", "red_fault")]
    assert len(group_findings(rows, step=1, min_frames=2)) == 2


def test_group_findings_scales_gaps_with_step():
    rows = _rows([0, 5, 10, 25])
    assert [(f.start_frame, f.end_frame) for f in group_findings(rows, step=5, max_gap=1)] == [(0, 10), (25, 25)]
