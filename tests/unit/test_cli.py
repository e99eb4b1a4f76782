from pathlib import Path

from strata.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_crds_check_passes_on_the_committed_crds(capsys):
    assert main(["crds", "--check", "--out", str(REPO / "crds")]) == 0


def test_crds_check_fails_on_drift_and_prints_the_fix(tmp_path, capsys):
    main(["crds", "--out", str(tmp_path)])
    stale = tmp_path / "strata.dev_trainingjobs.yaml"
    stale.write_text(stale.read_text().replace("zeroStage", "zero_stage"))
    assert main(["crds", "--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "regenerate with: strata crds" in out and "zero_stage" in out
