"""The cached baseline: measured once per (config with overrides, device, dataset, trainer version),
reused while young enough, measured again when too old. Real trainer subprocesses on synthetic data."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from carbon_aware.accounting import baselines
from carbon_aware.accounting.baselines import train_or_reuse_baseline

FAST = [
    "data.dataset=synthetic",
    "data.synthetic_train_size=256",
    "data.synthetic_test_size=64",
    "training.epochs=1",
    "emissions.measure_power_secs=0.2",
]


def _params(**extra):
    params = {
        "baseline": "cached",
        "baseline_max_age_days": 30.0,
        "baseline_config": "baseline.yaml",
        "training_overrides": FAST,
    }
    params.update(extra)
    return params


@pytest.fixture
def output(tmp_path, monkeypatch):
    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(tmp_path))
    return tmp_path


def test_measured_once_then_reused_then_measured_again_when_too_old(output):
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    lines = []
    first = train_or_reuse_baseline(_params(), "manual__1", output / "run1", now=now, emit=lines.append)
    assert first["kind"] == "measured" and (output / "run1" / "baseline" / "summary.json").is_file()
    stored, _ = baselines.lookup(first["key"], 30.0, now)  # from the records database
    assert stored["dag_run_id"] == "manual__1" and stored["summary"]["energy"]["energy_kwh"] > 0
    assert stored["identity"]["config"]["data"]["dataset"] == "synthetic"
    assert "run_name" not in stored["identity"]["config"]["training"]

    second = train_or_reuse_baseline(
        _params(), "manual__2", output / "run2", now=now + timedelta(days=29), emit=lines.append
    )
    assert (
        second["kind"] == "cached" and second["dag_run_id"] == "manual__1" and second["key"] == first["key"]
    )
    assert second["summary"]["energy"]["energy_kwh"] == stored["summary"]["energy"]["energy_kwh"]
    assert not (output / "run2").exists()  # nothing trained
    assert any("measured in run manual__1" in line for line in lines)

    old = train_or_reuse_baseline(
        _params(), "manual__3", output / "run3", now=now + timedelta(days=31), emit=lines.append
    )
    assert old["kind"] == "measured" and any("31.0 days old" in line for line in lines)


def test_the_key_follows_the_overrides_and_every_run_always_measures(output):
    now = datetime(2026, 11, 24, tzinfo=timezone.utc)
    a = train_or_reuse_baseline(_params(), "manual__a", output / "a", now=now)
    other = train_or_reuse_baseline(
        _params(training_overrides=[*FAST, "training.learning_rate=0.002"]),
        "manual__b",
        output / "b",
        now=now,
    )
    assert other["kind"] == "measured" and other["key"] != a["key"]
    again = train_or_reuse_baseline(_params(baseline="every_run"), "manual__c", output / "c", now=now)
    assert again["kind"] == "measured" and again["key"] == a["key"]
    assert train_or_reuse_baseline(_params(baseline="off"), "manual__d", output / "d", now=now) is None


def test_identity_ignores_names_and_places_but_not_the_device():
    config = {
        "training": {"run_name": "x", "resume": True, "epochs": 1},
        "data": {"dataset": "mnist"},
        "output": {"dir": "o"},
    }
    renamed = {
        "training": {"run_name": "y", "resume": False, "epochs": 1},
        "data": {"dataset": "mnist"},
        "output": {"dir": "p"},
    }
    key = baselines.key_of(baselines.identity(config, "cpu A", "2"))
    assert key == baselines.key_of(baselines.identity(renamed, "cpu A", "2"))
    assert key != baselines.key_of(baselines.identity(config, "NVIDIA H100", "2"))
    assert key != baselines.key_of(baselines.identity(config, "cpu A", "3"))


def test_a_dag_runs_baseline_is_measured_into_the_records_and_found_by_any_worker(output, monkeypatch):
    from carbon_aware.records.jobs import RecordsEnergyLog, summary_of

    measured = baselines.baseline_for_run(_params(), "carbon_training", "manual__r1")
    readings = RecordsEnergyLog("carbon_training", "manual__r1", "baseline").read()
    assert len(readings) >= 2 and readings[-1]["kwh"] == measured["summary"]["energy"]["energy_kwh"]
    assert summary_of("carbon_training", "manual__r1", "baseline") == json.loads(json.dumps(
        measured["summary"]))
    # Another worker (its own output folder) finds the stored measurement: nothing to train.
    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(output / "elsewhere"))
    reused = baselines.baseline_for_run(_params(), "carbon_training", "manual__r2")
    assert reused["kind"] == "cached" and reused["dag_run_id"] == "manual__r1"
    assert RecordsEnergyLog("carbon_training", "manual__r2", "baseline").read() == []
