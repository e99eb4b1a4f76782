"""The chart's alert rules, checked and unit-tested by the real promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from strata.devcluster import ensure_binaries

CHART = Path(__file__).resolve().parents[2] / "helm" / "strata"
RELEASE = "strata"
JOB = f"{RELEASE}-metrics"


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> Path:
    """The rule groups of the chart's PrometheusRule, as a plain Prometheus rules file."""
    tools = ensure_binaries()
    rendered = subprocess.run(
        [str(tools["helm"]), "template", RELEASE, str(CHART), "--kube-version", "v1.36.3",
         "--set", "prometheusRuleEnabled=true", "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, check=True,
    ).stdout
    rule = yaml.safe_load(rendered)
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ensure_binaries()["promtool"]), *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid(rules_file):
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 rules found" in result.stdout


def _run_rule_tests(rules_file: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    test_file = rules_file.parent / "tests.yaml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests,
    }))
    return promtool("test", "rules", str(test_file))


def test_operator_down_fires_after_five_minutes_without_a_healthy_scrape(rules_file):
    rules = {r["alert"]: r for r in yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]}
    result = _run_rule_tests(rules_file, [{
        "interval": "1m",
        "input_series": [{"series": f'up{{job="{JOB}"}}', "values": "1x10 0x20"}],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "StrataOperatorDown", "exp_alerts": []},
            {"eval_time": "13m", "alertname": "StrataOperatorDown", "exp_alerts": []},
            {"eval_time": "17m", "alertname": "StrataOperatorDown", "exp_alerts": [{
                "exp_labels": {"severity": "critical"},
                "exp_annotations": rules["StrataOperatorDown"]["annotations"],
            }]},
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_reconcile_errors_fire_for_the_failing_kind_only(rules_file):
    errors = 'strata_reconcile_errors_total{{job="{job}",kind="{kind}",reason="ApplyFailed"}}'
    result = _run_rule_tests(rules_file, [{
        "interval": "1m",
        "input_series": [
            {"series": errors.format(job=JOB, kind="TrainingJob"), "values": "0+1x40"},
            {"series": errors.format(job=JOB, kind="Dataset"), "values": "0x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "12m", "alertname": "StrataReconcileErrors", "exp_alerts": []},
            {"eval_time": "30m", "alertname": "StrataReconcileErrors", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "kind": "TrainingJob"},
                "exp_annotations": {
                    "summary": "Strata fails to reconcile TrainingJob resources",
                    "description": "10 failed reconciliations of TrainingJob in the last 10 minutes, for 15 "
                                   "minutes. The resources' Degraded condition and the operator's events say why "
                                   "(kubectl get strata -A -o wide).",
                },
            }]},
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_slow_reconciles_fire_on_the_99th_percentile(rules_file):
    bucket = 'strata_reconcile_duration_seconds_bucket{{job="{job}",kind="ModelDeployment",le="{le}"}}'
    # Every reconcile takes between 10 and 30 seconds.
    series = [{"series": bucket.format(job=JOB, le=le), "values": values} for le, values in
              [("5.0", "0x40"), ("10.0", "0x40"), ("30.0", "0+10x40"), ("+Inf", "0+10x40")]]
    result = _run_rule_tests(rules_file, [{
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "StrataReconcileSlow", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "kind": "ModelDeployment"},
                "exp_annotations": {
                    "summary": "Reconciling ModelDeployment takes over 10 s (p99)",
                    "description": "The API server or the operator is overloaded; status updates lag behind.",
                },
            }]},
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_healthy_operator_raises_no_alert(rules_file):
    bucket = 'strata_reconcile_duration_seconds_bucket{{job="{job}",kind="Dataset",le="{le}"}}'
    result = _run_rule_tests(rules_file, [{
        "interval": "1m",
        "input_series": [
            {"series": f'up{{job="{JOB}"}}', "values": "1x40"},
            {"series": f'strata_reconcile_errors_total{{job="{JOB}",kind="Dataset",reason="ApplyFailed"}}',
             "values": "3x40"},
            {"series": f'strata_reconcile_total{{job="{JOB}",kind="Dataset",result="success"}}', "values": "0+5x40"},
            *[{"series": bucket.format(job=JOB, le=le), "values": "0+5x40"} for le in ("0.1", "10.0", "+Inf")],
        ],
        "alert_rule_test": [
            {"eval_time": "40m", "alertname": name, "exp_alerts": []}
            for name in ("StrataOperatorDown", "StrataReconcileErrors", "StrataInvalidSpecs", "StrataReconcileSlow",
                         "StrataFeedbackMonitorBreached")
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_breached_monitor_alerts_after_fifteen_minutes_naming_the_deployment_and_policy(rules_file):
    breached = ('strata_feedback_monitor_breached{{job="{job}",namespace="ml",policy="lm-loop",target="lm",'
                'monitor="{monitor}"}}')
    result = _run_rule_tests(rules_file, [{
        "interval": "1m",
        "input_series": [
            {"series": breached.format(job=JOB, monitor="approval"), "values": "0x10 1x30"},
            {"series": breached.format(job=JOB, monitor="toxicity"), "values": "0x40"},
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "StrataFeedbackMonitorBreached", "exp_alerts": []},
            {"eval_time": "30m", "alertname": "StrataFeedbackMonitorBreached", "exp_alerts": [{
                "exp_labels": {"severity": "warning", "namespace": "ml", "policy": "lm-loop", "target": "lm",
                               "monitor": "approval"},
                "exp_annotations": {
                    "summary": "The approval monitor of ModelDeployment ml/lm is breached",
                    "description": "FeedbackPolicy lm-loop has read its approval monitor as breached for 15 minutes. "
                                   "Its status says the value, the threshold and what it did about it (kubectl "
                                   "describe feedbackpolicy lm-loop -n ml).",
                },
            }]},
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_review_backlog_alerts_after_a_day_with_the_command_that_lists_it(rules_file):
    backlog = f'strata_feedback_review_open{{job="{JOB}",namespace="ml",policy="lm-loop",target="lm"}}'
    result = _run_rule_tests(rules_file, [{
        "interval": "1m",
        "input_series": [{"series": backlog, "values": "0x60 3x1600"}],
        "alert_rule_test": [
            {"eval_time": "12h", "alertname": "StrataFeedbackReviewBacklog", "exp_alerts": []},
            {"eval_time": "26h", "alertname": "StrataFeedbackReviewBacklog", "exp_alerts": [{
                "exp_labels": {"severity": "info", "namespace": "ml", "policy": "lm-loop", "target": "lm"},
                "exp_annotations": {
                    "summary": "Flagged outputs of ModelDeployment ml/lm wait for review",
                    "description": "FeedbackPolicy lm-loop has listed flagged outputs that no one has resolved for "
                                   "a day (3 open now). List and resolve them with strata review list lm-loop -n ml.",
                },
            }]},
        ],
    }])
    assert result.returncode == 0, result.stdout + result.stderr
