"""The trainer on CPU: exact accumulation, resume, config errors, failure paths, real MNIST."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from training.config import ConfigError, build_config, load_config
from training.data import DataError
from training.summary import validate_summary
import tests.helpers  # noqa: F401  (registers the nan_after model)
from training.trainer import NonFiniteLossError, RunExistsError, TrainingError, TrainingInterrupted, train
from tests.conftest import REPO_ROOT


def make_config(tmp_path, **blocks):
    raw = {
        "training": {"run_name": "t", "epochs": 2, "batch_size": 64, "gradient_accumulation_steps": 1,
                     "learning_rate": 0.01, "optimizer": "sgd", "precision": "fp32", "device": "cpu",
                     "seed": 3},
        "data": {"dataset": "synthetic", "synthetic_train_size": 220, "synthetic_test_size": 64},
        "model": {"name": "simple_cnn", "kwargs": {"width": 4, "hidden": 16}},
        "emissions": {"enabled": False},
        "output": {"dir": str(tmp_path)},
    }
    for block, values in blocks.items():
        raw[block].update(values)
    return build_config(raw)


def final_weights(summary):
    return torch.load(summary["model_path"], weights_only=False)["model"]


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=1e-4, msg=f"parameter {name} differs")


@pytest.mark.parametrize("micro, steps", [(16, 4), (8, 8), (32, 2)])
def test_accumulation_equals_the_large_batch(tmp_path, micro, steps):
    # 220 samples / 64 per step: three full steps and a partial last one of 28 samples per epoch,
    # which splits into fewer and smaller micro-batches (16 + 12 for micro=16).
    full = train(make_config(tmp_path, training={"run_name": "full"}))
    accumulated = train(make_config(tmp_path, training={"run_name": f"acc{micro}", "batch_size": micro,
                                                        "gradient_accumulation_steps": steps}))
    assert accumulated["effective_batch_size"] == micro * steps
    assert_same_weights(final_weights(full), final_weights(accumulated), atol=1e-5)


def test_per_micro_batch_mean_loss_would_not_be_exact(tmp_path):
    """Guards the test above: a different effective batch gives clearly different weights."""
    full = train(make_config(tmp_path, training={"run_name": "full"}))
    other = train(make_config(tmp_path, training={"run_name": "b32", "batch_size": 32}))
    diff = max((final_weights(full)[k] - final_weights(other)[k]).abs().max().item()
               for k in final_weights(full))
    assert diff > 1e-3


def test_dataloader_path_matches_device_resident_path(tmp_path):
    resident = train(make_config(tmp_path, training={"run_name": "res"}, data={"device_resident": "always"}))
    loader = train(make_config(tmp_path, training={"run_name": "dl"},
                               data={"device_resident": "never", "num_workers": 2}))
    assert resident["data"]["device_resident"] and not loader["data"]["device_resident"]
    assert_same_weights(final_weights(resident), final_weights(loader), atol=1e-6)


def test_sigterm_then_resume_ends_with_the_same_weights(tmp_path):
    # Dropout consumes the global RNG, so this also checks the RNG state is restored.
    model = {"kwargs": {"width": 4, "hidden": 16, "dropout": 0.3}}
    uninterrupted = train(make_config(tmp_path, training={"run_name": "straight", "epochs": 3}, model=model))

    interrupted = make_config(tmp_path, training={"run_name": "stopped", "epochs": 3}, model=model)

    def terminate_at_step_6(global_step):  # the middle of epoch 2 (4 steps per epoch)
        if global_step == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="epoch 2, step 2"):
        train(interrupted, on_step=terminate_at_step_6)
    checkpoint = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=False)
    assert (checkpoint["state"]["epoch"], checkpoint["state"]["step"]) == (1, 2)

    resumed = train(interrupted.model_copy(
        update={"training": interrupted.training.model_copy(update={"resume": True})}))
    assert resumed["attempts"] == 2
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert_same_weights(final_weights(uninterrupted), final_weights(resumed), atol=1e-6)


def test_a_second_run_with_the_same_name_does_not_overwrite_the_first(tmp_path):
    config = make_config(tmp_path, training={"epochs": 1})
    first = train(config)
    with pytest.raises(RunExistsError, match="training.run_name"):
        train(config)
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["finished_at"] == first["finished_at"]


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    config = make_config(tmp_path, training={"epochs": 3},
                         model={"name": "nan_after", "kwargs": {"good_calls": 5}})
    with pytest.raises(NonFiniteLossError, match="loss became nan in epoch 2"):
        train(config)
    checkpoint = torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert not (tmp_path / "t" / "summary.json").exists()


def test_cpu_fallback_and_forced_cuda_without_a_gpu(tmp_path):
    summary = train(make_config(tmp_path, training={"device": "auto", "precision": "auto", "epochs": 1}))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert summary["device"]["type"] == expected
    if not torch.cuda.is_available():
        cpu_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # this project's CPU has AVX512-BF16
        assert (
            summary["precision"] == ("bf16" if cpu_bf16 else "fp32")
            and summary["peak_memory_kind"] == "cpu_peak_rss"
        )
        with pytest.raises(TrainingError, match="training.device"):
            train(make_config(tmp_path, training={"run_name": "c", "device": "cuda"}))


def test_bf16_autocast_on_cpu_runs(tmp_path):
    summary = train(make_config(tmp_path, training={"precision": "bf16", "epochs": 1}))
    assert summary["precision"] == "bf16" and not summary["grad_scaler"]


def test_codecarbon_failure_keeps_training_and_says_why(tmp_path, monkeypatch):
    # a real misconfiguration CodeCarbon rejects
    monkeypatch.setenv("CODECARBON_TRACKING_MODE", "no-such-mode")
    summary = train(make_config(tmp_path, training={"epochs": 1}, emissions={"enabled": True}))
    assert summary["energy"] is None
    assert "CodeCarbon could not start" in summary["energy_error"]
    assert summary["energy_timeline"] == []


def test_a_registered_model_trains_and_an_import_path_is_refused(tmp_path):
    summary = train(make_config(tmp_path, training={"epochs": 1},
                                model={"name": "linear", "kwargs": {"num_classes": 10}}))
    assert summary["config"]["model"] == {"name": "linear", "kwargs": {"num_classes": 10}}
    for name in ("tests.helpers:Linear", "subprocess:Popen", "os:system"):
        with pytest.raises(ConfigError, match="model.name: expected a registered architecture"):
            make_config(tmp_path, model={"name": name})
    with pytest.raises(ConfigError, match="kwargs.args: unknown setting"):
        make_config(tmp_path, model={"name": "simple_cnn", "kwargs": {"args": ["sh", "-c", "id"]}})


@pytest.mark.parametrize("override, key, expected", [
    ("training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps",
     "greater than or equal to 1"),
    ("training.batch_size=0", "training.batch_size", "greater than or equal to 1"),
    ("training.precision=fp8", "training.precision", "'fp32', 'fp16', 'bf16' or 'auto'"),
    ("training.epochs=three", "training.epochs", "valid integer"),
    ("training.learning_rte=0.1", "training.learning_rte", "unknown key"),
    ("model.name=resnet", "model.name", "registered architecture"),
    ("model.kwargs.width=0", "kwargs.width", "greater than or equal to 1"),
    ("training.model_save_path=/tmp/x.pt", "training.model_save_path", "inside the run's directory"),
    ("training.run_name=..", "training.run_name", "should match pattern"),
])
def test_config_errors_name_the_key(override, key, expected):
    with pytest.raises(ConfigError) as error:
        load_config(REPO_ROOT / "include/configs/optimized.yaml", [override])
    assert key in str(error.value) and expected in str(error.value)


def test_shipped_configs_are_valid_and_match_their_description():
    baseline = load_config(REPO_ROOT / "include/configs/baseline.yaml")
    optimized = load_config(REPO_ROOT / "include/configs/optimized.yaml")
    test = load_config(REPO_ROOT / "include/configs/test.yaml")
    assert (baseline.training.precision, baseline.training.batch_size,
            baseline.training.gradient_accumulation_steps) == ("fp32", 64, 1)
    assert (optimized.training.batch_size, optimized.training.gradient_accumulation_steps) == (
        "auto",
        "auto",
    )
    assert optimized.training.effective_batch_size == baseline.training.effective_batch_size == 64
    assert (
        optimized.training.epochs < baseline.training.epochs and optimized.training.lr_schedule == "onecycle"
    )
    assert optimized.training.precision == "auto" and test.training.epochs == 1 and test.data.train_subset


@pytest.mark.parametrize("target, expected", [(64, (64, 1)), (256, (64, 4)), (100, (50, 2)), (48, (48, 1))])
def test_auto_batch_on_cpu_takes_the_largest_fast_micro_batch_and_accumulates_the_rest(
    tmp_path, target, expected
):
    config = make_config(tmp_path, training={"batch_size": "auto", "gradient_accumulation_steps": "auto",
                                             "effective_batch_size": target, "epochs": 1})
    summary = train(config)
    assert (summary["micro_batch_size"], summary["gradient_accumulation_steps"]) == expected
    assert summary["effective_batch_size"] == expected[0] * expected[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.batch_size=auto"], "expected both 'auto' or both numbers"),
        (
            ["training.batch_size=auto", "training.gradient_accumulation_steps=auto"],
            "effective_batch_size: required",
        ),
        (["training.effective_batch_size=100"], "is not batch_size x gradient_accumulation_steps (64)"),
    ],
)
def test_batch_keys_must_agree(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(REPO_ROOT / "include/configs/baseline.yaml", overrides)


def test_cli_rejects_a_bad_config_before_training(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training", "--config", "include/configs/optimized.yaml",
                             "--set", "training.batch_size=-4"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "training.batch_size" in result.stderr


def test_missing_and_corrupt_mnist_files_list_what_is_expected(tmp_path, mnist_dir):
    config = make_config(tmp_path, data={"dataset": "mnist", "root": str(tmp_path / "empty")})
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        train(config)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in os.listdir(mnist_dir):
        (broken / name).symlink_to(mnist_dir / name)
    (broken / "t10k-labels-idx1-ubyte.gz").unlink()
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes(
        (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is unreadable|truncated"):
        train(make_config(tmp_path, training={"run_name": "b"},
                          data={"dataset": "mnist", "root": str(broken)}))


@pytest.mark.integration
def test_real_mnist_subset_one_epoch_over_90_percent_with_energy(tmp_path, mnist_dir):
    result = subprocess.run(
        [sys.executable, "-m", "training", "--config", "include/configs/test.yaml",
         "--set", f"output.dir={tmp_path}", "--set", f"data.root={mnist_dir}",
         "--set", "training.device=cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch 1/1 | loss" in result.stdout  # the progress line a task log shows
    summary = json.loads((tmp_path / "test" / "summary.json").read_text())
    validate_summary(summary)
    assert summary["final_test_accuracy_pct"] > 90.0
    assert summary["data"]["train_samples"] == 6000
    assert summary["energy"]["energy_kwh"] > 0
    kwh = [point["kwh"] for point in summary["energy_timeline"]]
    assert kwh == sorted(kwh) and kwh[-1] == pytest.approx(summary["energy"]["energy_kwh"])
    assert (tmp_path / "test" / "emissions.csv").is_file()


def test_on_device_settings_apply_only_on_that_device_and_the_callers_overrides_win(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("training: {run_name: r, epochs: 1, batch_size: auto, "
                      "gradient_accumulation_steps: auto,\n"
                      "           effective_batch_size: 64, learning_rate: 0.003, device: cpu}\n"
                      "on_device:\n"
                      "  cuda: ['training.effective_batch_size=512', 'training.learning_rate=0.006']\n")
    on_cpu = load_config(config)
    assert (on_cpu.training.effective_batch_size, on_cpu.training.learning_rate) == (64, 0.003)
    on_gpu = load_config(config, ["training.device=cuda"])
    assert (on_gpu.training.effective_batch_size, on_gpu.training.learning_rate) == (512, 0.006)
    mine = load_config(config, ["training.device=cuda", "training.learning_rate=0.01"])
    assert (mine.training.effective_batch_size, mine.training.learning_rate) == (512, 0.01)
    config.write_text(config.read_text().replace("  cuda:", "  tpu:"))
    with pytest.raises(ConfigError, match="on_device"):
        load_config(config)
