from pathlib import Path

import pytest

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


def test_validate_passes_the_examples_with_a_line_per_file_and_a_total(capsys):
    assert main(["validate", str(REPO / "examples")]) == 0
    # The Argo CD Applications and Kueue queues beside them are read too, and hold no Strata object.
    assert capsys.readouterr().out.splitlines() == [
        f"{REPO / 'examples' / 'argocd' / 'strata-chart.yaml'}: 0 Strata objects valid",
        f"{REPO / 'examples' / 'argocd' / 'strata-examples.yaml'}: 0 Strata objects valid",
        f"{REPO / 'examples' / 'audio' / 'keywords.yaml'}: 1 Strata object valid",
        f"{REPO / 'examples' / 'images' / 'pets-vae.yaml'}: 2 Strata objects valid",
        f"{REPO / 'examples' / 'kueue' / 'kueue.yaml'}: 0 Strata objects valid",
        f"{REPO / 'examples' / 'loop' / 'loop.yaml'}: 4 Strata objects valid",
        f"{REPO / 'examples' / 's3' / 'model-store.yaml'}: 3 Strata objects valid",
        f"{REPO / 'examples' / 'support-lm.yaml'}: 4 Strata objects valid",
        f"{REPO / 'examples' / 'training' / 'tiny-lm.yaml'}: 2 Strata objects valid",
        "Checked 9 files, 16 Strata objects: all valid.",
    ]


def test_validate_names_the_file_the_object_and_the_field(tmp_path, capsys):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ignored}\n---\n"
        "apiVersion: strata.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: lm}\n"
        "spec: {dataset: {name: d}, model: {family: vae, size: {layers: 2}}}\n"
    )
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{manifest}: TrainingJob/lm: spec.model.size.layers: layers applies only to the transformer family",
        "Checked 1 file, 1 Strata object: 1 problem.",
    ]


def test_validate_reports_every_broken_rule_at_once_as_the_api_server_does(tmp_path, capsys):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "apiVersion: strata.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: lm}\nspec:\n"
        "  dataset: {name: d}\n"
        "  model: {family: transformer, size: {hidden: 100, heads: 12}}\n"
        "  deepspeed: {zeroStage: 0, offload: cpu}\n"
        "  hyperparameters: {warmupSteps: 10, maxSteps: 10}\n"
        "  validation: {earlyStopping: {metric: perplexity}, fraction: 2}\n"
    )
    assert main(["validate", str(manifest)]) == 1
    out = capsys.readouterr().out
    for field in ("spec.model.size.heads", "spec.deepspeed.offload", "spec.hyperparameters.warmupSteps",
                  "spec.validation.fraction"):
        assert f"TrainingJob/lm: {field}: " in out, out
    assert out.endswith("Checked 1 file, 1 Strata object: 4 problems.\n")


@pytest.mark.parametrize(
    "header, expected",
    [
        pytest.param("apiVersion: strata.dev/v1beta9\nkind: TrainingJob\nmetadata: {name: lm}\n",
                     'no matches for kind "TrainingJob" in version "strata.dev/v1beta9"', id="an unknown version is refused"),
        pytest.param("apiVersion: strata.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: Bad_Name}\n",
                     'metadata.name: Invalid value: "Bad_Name"', id="a name that is no DNS subdomain is refused"),
        pytest.param("apiVersion: strata.dev/v1alpha1\nkind: TrainingJob\nmetadata: {}\n",
                     "metadata.name: Required value", id="a missing name is refused"),
        pytest.param("apiVersion: strata.dev/v1alpha1\nkind: Training\nmetadata: {name: lm}\n",
                     'no matches for kind "Training"', id="an unknown kind is refused"),
    ],
)
def test_validate_refuses_what_the_api_server_would_not_serve(tmp_path, capsys, header, expected):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(header + "spec: {dataset: {name: d}, model: {family: vae}}\n")
    assert main(["validate", str(manifest)]) == 1
    assert expected in capsys.readouterr().out
