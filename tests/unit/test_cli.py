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


def test_validate_passes_the_examples(capsys):
    assert main(["validate", str(REPO / "examples")]) == 0
    assert capsys.readouterr().out == ""


def test_validate_names_the_file_the_object_and_the_field(tmp_path, capsys):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n---\n"
        "apiVersion: strata.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: lm}\n"
        "spec: {dataset: {name: d}, model: {family: gan, conditioning: prompt}}\n"
    )
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out.strip()
    assert out == (f"{manifest}: TrainingJob/lm: spec.model.conditioning: "
                   "prompt conditioning is only for the transformer family")
