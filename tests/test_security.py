"""Whoever may trigger a run must not own the worker. Each attack a tester made as a user who may only
trigger carbon_training, replayed through the trigger path (``airflow dags test carbon_training -c``):
refused in the first task, with an error naming the field, before any waiting or training; nothing
runs, nothing is read or sent, nothing is written outside the run's own directory, and no secret or file
content reaches the log or the output folder. (The Carbon page's corrupt-report case is in
test_carbon_page.py, the run-directory collision on the stack in tests/stack/test_stack.py.)"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CARBON_DIR, REPO_ROOT
from tests.fake_provider_server import FakeProviderServer, Reply

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-7f3c9e-do-not-leak"  # what a worker holds: its environment, a connection, a file
NESO = str(CARBON_DIR / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv")
BASE_CONF = {"providers": [{"name": "trace", "path": NESO, "replay_start": "2023-03-01T06:00:00Z"}],
             "job_duration_hours": 1, "deadline_hours": 12, "time_compression": 3600, "baseline": "off",
             "baseline_config": "test.yaml", "optimized_config": "test.yaml"}


class Outcome:
    def __init__(self, process: subprocess.CompletedProcess, output_dir: Path):
        self.log = process.stdout + process.stderr
        self.output_dir = output_dir

    def written(self) -> str:
        """Every file the run left under the output folder, as text."""
        return "\n".join(p.read_text(errors="replace") for p in self.output_dir.rglob("*") if p.is_file())

    def assert_refused(self, *names: str) -> None:
        """Refused, naming each of ``names``, before anything waited or trained: by the first task
        (our checks), or by Airflow itself when the conf breaks the DAG's Param schema (the trigger
        form's own check: no run is created)."""
        at_trigger = "ParamValidationError: Invalid input for param" in self.log
        assert at_trigger or "state=failed" in self.log, self.log[-3000:]
        for name in names:
            assert name in self.log, (name, self.log[-3000:])
        assert "launching " not in self.log and "deferring until" not in self.log
        assert SECRET not in self.log and SECRET not in self.written()


@pytest.fixture
def attack(airflow_db, tmp_path):
    """``attack(conf, **env)``: one triggered run with ``conf`` over the base conf, on a worker whose
    environment holds a secret and whose output folder is the test's own."""
    def run(conf: dict, **env: str) -> Outcome:
        output_dir = tmp_path / "output"
        worker = {**airflow_db, "WORKER_SECRET": SECRET, "CARBON_OUTPUT_DIR": str(output_dir), **env}
        airflow = str(Path(sys.executable).parent / "airflow")
        process = subprocess.run([airflow, "dags", "test", "carbon_training", "-c",
                                  json.dumps({**BASE_CONF, **conf})],
                                 cwd=REPO_ROOT, env=worker, capture_output=True, text=True, timeout=600)
        return Outcome(process, output_dir)
    return run


def test_a_model_named_as_code_runs_nothing(attack, tmp_path):
    marker = tmp_path / "owned"
    attack({"training_overrides": ["model.name=subprocess:Popen"]}).assert_refused(
        "training_overrides", "model.name: expected one of linear, simple_cnn")
    attack({"training_overrides": ["model.name=subprocess:Popen",
                                   f"model.kwargs.args=[sh, -c, 'touch {marker}']"]}).assert_refused(
        "training_overrides")
    assert not marker.exists()


def test_the_trainer_cli_imports_no_model_named_in_a_setting(tmp_path):
    marker = tmp_path / "owned"
    process = subprocess.run(
        [sys.executable, "-m", "training", "--config", "include/configs/test.yaml",
         "--set", "model.name=subprocess:Popen",
         "--set", f"model.kwargs={{args: [sh, -c, 'touch {marker}']}}",
         "--set", f"output.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert process.returncode == 2 and "model.name: expected a registered architecture" in process.stderr
    assert not marker.exists() and "Traceback" not in process.stderr


@pytest.mark.parametrize("path", ["/proc/self/environ", "leak.csv"])
def test_a_trace_outside_the_data_folder_is_never_opened(attack, tmp_path, path):
    data = tmp_path / "data"
    data.mkdir()
    outside = tmp_path / "worker-secrets.csv"
    outside.write_text(f"from,to,forecast,actual,index\n{SECRET},x,1,1,low\n")
    (data / "leak.csv").symlink_to(outside)  # a symlink inside that points out
    outcome = attack({"providers": [{"name": "trace", "path": path}]}, CARBON_DATA_DIR=str(data))
    outcome.assert_refused("providers", "outside")
    assert "root:x:0:0" not in outcome.log and "AIRFLOW_HOME=" not in outcome.log


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../../etc/passwd", "carbon/../../../x.csv"])
def test_every_way_out_of_the_data_folder_is_refused_by_the_same_check(path):
    from carbon_aware.planning.params import ParamsError, validate_params

    with pytest.raises(ParamsError, match=r"providers\[0\]\.path: .* is outside"):
        validate_params({"providers": [{"name": "trace", "path": path}]})


def test_a_trainer_config_outside_the_config_folder_is_never_read(attack, tmp_path):
    outside = tmp_path / "secrets.yaml"
    outside.write_text(f"training:\n  run_name: x\n  epochs: {SECRET}\n")
    attack({"optimized_config": str(outside)}).assert_refused("optimized_config", "outside")
    from carbon_aware.planning.params import ParamsError
    from carbon_aware.planning.plan import check_params

    for name in ("../../../../../etc/passwd", "/proc/self/environ"):  # the same check, in-process
        with pytest.raises(ParamsError, match="optimized_config: .* is outside"):
            check_params({**BASE_CONF, "optimized_config": name})


def test_errors_about_a_config_never_quote_its_values_or_lines(attack, tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(REPO_ROOT / "include" / "configs", configs)
    (configs / "bad_value.yaml").write_text(f"training:\n  run_name: x\n  epochs: {SECRET}\n"
                                            "  batch_size: 8\n  learning_rate: 0.1\n")
    (configs / "bad_yaml.yaml").write_text(f"training: [{SECRET}\n")
    outcome = attack({"optimized_config": "bad_value.yaml"}, CARBON_CONFIG_DIR=str(configs))
    outcome.assert_refused("optimized_config", "training.epochs")
    outcome = attack({"optimized_config": "bad_yaml.yaml"}, CARBON_CONFIG_DIR=str(configs))
    outcome.assert_refused("optimized_config", "not valid YAML (line ")


def test_a_connections_secret_goes_to_no_host_named_in_params(attack):
    database = json.dumps({"conn_type": "postgres", "host": "db", "login": "app", "password": SECRET})
    with FakeProviderServer() as server:
        server.script("/v3/carbon-intensity/forecast", Reply({"zone": "DE", "forecast": []}))
        outcome = attack({"providers": [{"name": "electricitymaps", "zone": "DE", "base_url": server.url,
                                         "conn_id": "prod_db"}]}, AIRFLOW_CONN_PROD_DB=database)
        outcome.assert_refused("providers", "base_url")
        outcome = attack({"providers": [{"name": "electricitymaps", "zone": "DE", "conn_id": "prod_db"}]},
                         AIRFLOW_CONN_PROD_DB=database)
        outcome.assert_refused("providers", "conn_id", "electricitymaps")
        assert server.requests == []


def test_nothing_is_written_outside_the_runs_directory(attack, tmp_path):
    target = tmp_path / "elsewhere"
    for override in (f"training.model_save_path={target}/model.pt", "training.run_name=.."):
        attack({"training_overrides": [override]}).assert_refused("training_overrides")
    assert not target.exists()
    from carbon_aware.planning.params import ParamsError, validate_params

    for override in ("training.model_save_path=../../x.pt", "output.dir=/tmp", "data.root=/etc"):
        with pytest.raises(ParamsError, match="may not be set from params"):  # the same check, in-process
            validate_params({"training_overrides": [override]})


def test_secrets_are_refused_however_spelled_and_never_shown(attack):
    outcome = attack({"providers": [{"name": "electricitymaps", "zone": "DE", "auth-token": SECRET}]})
    outcome.assert_refused("providers", "secrets", "auth-token")
    from carbon_aware.planning.params import ParamsError, validate_params

    for key in ("access_token", "apikey", "API-Key", "Bearer", "clientSecret"):  # in-process
        with pytest.raises(ParamsError, match=f"secrets .{key}.") as refused:
            validate_params({"providers": [{"name": "electricitymaps", "zone": "DE", key: SECRET}]})
        assert SECRET not in str(refused.value)


def test_a_malformed_override_or_trace_is_a_clear_error(attack, tmp_path):
    attack({"training_overrides": ["training.epochs=[1"]}).assert_refused(
        "training_overrides", "training.epochs: the value is not valid YAML")
    data = tmp_path / "data"
    data.mkdir()
    (data / "huge.csv").write_text("from,to,forecast,actual,index\n"
                                   f"2023-01-01T00:00Z,2023-01-01T00:30Z,{SECRET * 10_000},1,low\n")
    outcome = attack({"providers": [{"name": "trace", "path": "huge.csv"}]}, CARBON_DATA_DIR=str(data))
    outcome.assert_refused("providers[0].path", "huge.csv: not a readable")
    assert "field larger than field limit" not in outcome.log


def test_run_directories_are_one_to_one_and_inside_the_output_root(tmp_path, monkeypatch):
    from carbon_aware.outputs import run_dir_for

    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(tmp_path))
    ids = [".", "..", "a:b", "a_b", "a~b", "a+b", "a/b", "../b", "baselines", "%2E", "x" * 250,
           "x" * 249 + "y", "manual__2026-12-02T10:00:00+00:00", "scheduled__2026-12-02T10:00:00+00:00"]
    directories = [run_dir_for(run_id) for run_id in ids]
    assert len(set(directories)) == len(ids)
    for directory in directories:
        assert directory.parent == tmp_path.resolve() and directory.name not in (".", "..", "baselines")
        assert len(directory.name.encode()) <= 255 and "/" not in directory.name
    assert os.sep not in run_dir_for("a/b").name
