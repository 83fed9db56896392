"""The shipped pieces together: default bundle + demo profile + demo run, scored on its truth."""
from pathlib import Path

from inspector.cli import main
from inspector.store import Store
from training.demo_truth import load_truth, score

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo"
TRACK_FAULTS = {"fastener_clip_missing", "rail_break_or_gap", "fishplate_bolt_missing"}


def test_demo_scan_and_report_find_the_known_track_faults(tmp_path, capsys):
    project = tmp_path / "demo-project"
    assert main(["scan", str(DEMO / "demo.mp4"), "--project", str(project), "--report", "-q"]) == 0
    assert (project / "report" / "report.html").stat().st_size > 0
    with Store(project) as store:
        scan = store.scans()[0]
        assert scan.status == "done" and scan.frames_done == 330 and scan.precision == "int8"
        findings = store.findings()
    assert findings and all(f.region == "track" for f in findings)  # no catenary class in the base head
    result = score(findings, load_truth(DEMO / "ground_truth.csv"), TRACK_FAULTS)
    # Baseline bundle measured 6/10 segments found, 5/8 findings right (docs/model-card.md).
    assert result.recall >= 0.5, result
    assert result.precision >= 0.5, result
