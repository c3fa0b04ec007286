"""The training bundle end to end on a tiny cache: every mode and entry point, the run directory, resume, errors, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from monai.bundle import ConfigParser

from pipeline.cli.main import main
from pipeline.core.errors import ConfigError
from pipeline.training.workflow import (
    GPU_CONFIG,
    MULTI_GPU_CONFIG,
    TRAIN_CONFIG,
    WORKFLOW_NAME,
    TrainingWorkflow,
    build_lr_scheduler,
    build_optimizer,
    fold_case_ids,
    lr_step_transform,
    parse_overrides,
    training_config_files,
)
from tiny_training import TINY_DETERMINISTIC

REPO = Path(__file__).resolve().parents[2]

#: Small, fast settings shared by every run here.
TINY = [*TINY_DETERMINISTIC, "patch_size=[16, 16, 8]"]


@pytest.fixture(scope="module")
def tiny_run_data(tiny_datalist: Path, tiny_cache: Path) -> tuple[Path, Path]:
    """(data list, cache) of the tiny synthetic cohort: 6 labelled cases in 2 folds, 2 test cases."""
    return tiny_datalist, tiny_cache


def _bundle_overrides(settings: list[str]) -> list[str]:
    """``--set`` settings as ``monai.bundle run`` arguments (fire reads Python literals)."""
    literal = {"true": "True", "false": "False"}
    return [f"--{key}={literal.get(value, value.replace(' ', ''))}" for key, value in (s.split("=", 1) for s in settings)]


def _cli_train(datalist: Path, cache: Path, out: Path, mode: str, epochs: int, *extra: str, settings: list[str] = TINY):
    args = ["train", "--datalist", str(datalist), "--cache", str(cache), "--mode", mode, "--epochs", str(epochs), "--out", str(out), *extra]
    for setting in settings:
        args += ["--set", setting]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _check_run_dir(run_dir: Path, mode: str) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    assert config["mode"] == mode and config["channels"] == [4, 8, 16]
    parser = ConfigParser(config)
    assert parser.get_parsed_content("network_def").spatial_divisor == 4  # the stored config rebuilds the network
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["seed"] == 0 and len(provenance["datalist_sha256"]) == 64
    assert provenance["versions"]["monai"] and provenance["versions"]["torch"]
    assert provenance["command_line"]
    best = torch.load(run_dir / "models" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in best.values())  # a plain state_dict
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(best)
    latest = torch.load(run_dir / "models" / "latest.pt", weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "epoch", "iteration", "rng", "best_metric"} <= set(latest)
    assert 0.0 <= latest["best_metric"] <= 1.0
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "logs" / "train.log").read_text()
    inference = json.loads((run_dir / "inference.json").read_text())  # the run's own inference config
    assert inference["mode"] == mode and inference["channels"] == [4, 8, 16] and inference["bundle_root"] == str(run_dir.absolute())
    assert ConfigParser(inference).get_parsed_content("checkpoint") == str(run_dir.absolute() / "models" / "model.pt")
    from pipeline.inference.model import load_model

    assert load_model(run_dir).inferer.mode == mode  # the run folder loads through it


def _tensorboard_scalars(run_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    for events in (run_dir / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
        if accumulator.Tags()["images"]:
            scalars.setdefault("images", []).append(len(accumulator.Tags()["images"]))
    return scalars


# ----------------------------------------------------------------------------- the pieces train.yaml calls


def _parameters() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


@pytest.mark.parametrize(("name", "kind"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name: str, kind: type) -> None:
    optimizer = build_optimizer(name, _parameters(), learning_rate="2e-3", weight_decay=1e-5)
    assert type(optimizer) is kind
    assert optimizer.param_groups[0]["lr"] == 2e-3 and optimizer.param_groups[0]["weight_decay"] == 1e-5


def test_build_optimizer_refuses_an_unknown_name() -> None:
    with pytest.raises(ConfigError, match="optimizer_name: unknown optimizer 'sgd'; choose one of adam, adamw"):
        build_optimizer("sgd", _parameters(), learning_rate=1e-3)


def test_warmup_cosine_rises_for_the_warmup_then_decays_to_zero() -> None:
    optimizer = build_optimizer("adam", _parameters(), learning_rate=1.0)
    scheduler = build_lr_scheduler("warmup_cosine", optimizer, epochs=4, iterations_per_epoch=5, warmup_epochs=1.0)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = rates.index(max(rates))
    assert peak == 5  # the warmup lasts one epoch of 5 iterations
    assert rates[:peak] == sorted(rates[:peak]) and rates[0] < rates[peak]
    assert rates[peak:] == sorted(rates[peak:], reverse=True) and rates[-1] < 0.05


def test_warmup_longer_than_the_run_is_cut_short() -> None:
    optimizer = build_optimizer("adam", _parameters(), learning_rate=1.0)
    scheduler = build_lr_scheduler("warmup_cosine", optimizer, epochs=1, iterations_per_epoch=4, warmup_epochs=3.0)
    assert scheduler.warmup_steps == 3 and scheduler.t_total == 4


def test_plateau_halves_the_rate_when_the_validation_dice_stalls() -> None:
    optimizer = build_optimizer("adam", _parameters(), learning_rate=1.0)
    scheduler = build_lr_scheduler("plateau", optimizer, epochs=10, iterations_per_epoch=5, patience=2)
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and scheduler.mode == "max"
    for dice in (0.5, 0.6, 0.6, 0.6):
        scheduler.step(dice)
    assert optimizer.param_groups[0]["lr"] == 1.0  # two epochs without improvement: within the patience
    scheduler.step(0.6)
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_build_lr_scheduler_refuses_an_unknown_name() -> None:
    optimizer = build_optimizer("adam", _parameters(), learning_rate=1.0)
    with pytest.raises(ConfigError, match="lr_schedule: unknown schedule 'step'"):
        build_lr_scheduler("step", optimizer, epochs=1, iterations_per_epoch=1)


def test_lr_step_transform_passes_the_dice_only_to_plateau() -> None:
    class Evaluator:
        state = type("State", (), {"metrics": {"val_mean_dice": 0.75}})()

    assert lr_step_transform("plateau", Evaluator())(None) == 0.75
    assert lr_step_transform("warmup_cosine", Evaluator())(None) == ()


def test_parse_overrides_reads_values_as_yaml() -> None:
    overrides = parse_overrides(
        ["batch_size=32", "learning_rate=0.001", "weight_decay=1e-5", "channels=[4, 8, 16]", "amp=false", " name = run 1", "empty=", "expr=$@a + 1", "colon=a: b: c", "pair=a=b"]
    )
    assert overrides == {
        "batch_size": 32,
        "learning_rate": 0.001,
        "weight_decay": "1e-5",  # YAML 1.1 has no float without a dot; the builders convert with float()
        "channels": [4, 8, 16],
        "amp": False,
        "name": "run 1",
        "empty": "",
        "expr": "$@a + 1",
        "colon": "a: b: c",  # not YAML: kept as written
        "pair": "a=b",
    }


@pytest.mark.parametrize("pair", ["batch_size", "=32", " =1"])
def test_parse_overrides_refuses_a_pair_without_a_key(pair: str) -> None:
    with pytest.raises(ConfigError, match=f"--set: expected key=value, got {pair!r}"):
        parse_overrides([pair])


def test_fold_case_ids_are_the_folds_cases_each_in_the_cache(tiny_run_data: tuple[Path, Path]) -> None:
    datalist, cache = tiny_run_data
    payload = json.loads(datalist.read_text())
    pool = {entry["case_id"]: entry["fold"] for split in ("training", "validation") for entry in payload[split]}
    seen = set()
    for fold in range(payload["num_folds"]):
        training, validation = fold_case_ids(datalist, fold, cache)
        assert set(validation) == {case for case, case_fold in pool.items() if case_fold == fold}
        assert set(training) == set(pool) - set(validation)
        seen |= set(validation)
    assert seen == set(pool)
    with pytest.raises(ConfigError, match="fold 2 does not exist; this data list has 2 folds"):
        fold_case_ids(datalist, 2, cache)


def test_fold_case_ids_refuses_a_case_missing_from_the_cache(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    datalist, cache = tiny_run_data
    partial = Path(shutil.copytree(cache, tmp_path / "cache"))
    _, validation = fold_case_ids(datalist, 0, cache)
    shutil.rmtree(partial / validation[0])
    with pytest.raises(ConfigError, match=f"case {validation[0]} of {datalist.name} is not in the cache"):
        fold_case_ids(datalist, 0, partial)


# ----------------------------------------------------------------------------- training runs


def test_cli_trains_2d(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 1, settings=[s for s in TINY if not s.startswith("progress")])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "samples/s" in result.output  # the tqdm bar
    _check_run_dir(tmp_path / "run", "2d")
    scalars = _tensorboard_scalars(tmp_path / "run")
    for tag in ("train_loss", "learning_rate", "samples_per_second", "val_mean_dice", "val_dice_NEC", "val_dice_ED", "val_dice_ET", "val_dice_WT", "val_dice_TC"):
        assert tag in scalars, tag
    assert scalars.get("images"), "no prediction overlay"


@pytest.mark.slow
def test_cli_tracks_the_run_in_mlflow(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """`train --tracking mlflow`: the training loss and the per-structure validation Dice land in RUN_DIR/mlruns.db."""
    from mlflow.tracking import MlflowClient

    datalist, cache = tiny_run_data
    out = tmp_path / "run"
    result = _cli_train(datalist, cache, out, "2d", 2, "--tracking", "mlflow")
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("monai_experiment")
    runs = client.search_runs([experiment.experiment_id])
    metrics = {key for run in runs for key in run.data.metrics}
    for key in ("train_loss", "val_mean_dice", "val_dice_NEC", "val_dice_ED", "val_dice_ET", "val_dice_WT", "val_dice_TC"):
        assert key in metrics, (key, sorted(metrics))
    history = [m.value for run in runs for m in client.get_metric_history(run.info.run_id, "val_dice_WT")]
    assert len(history) == 2 and all(0.0 <= value <= 1.0 for value in history)  # one value per validated epoch
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("config_")) == []  # the run's config.json is the artifact

    result = _cli_train(datalist, cache, tmp_path / "other", "2d", 1, "--tracking", "wandb")
    assert result.exit_code == 1 and "--tracking: choose mlflow or a tracking-settings file" in result.output
    assert not (tmp_path / "other").exists()


def test_cli_trains_3d_regions(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "3d", 1, settings=[*TINY, "output_mode=regions"])
    assert result.exit_code == 0, result.output
    _check_run_dir(tmp_path / "run", "3d")
    best = torch.load(tmp_path / "run" / "models" / "model.pt", weights_only=True)
    final_bias = [v for k, v in best.items() if k.endswith("bias")][-1]
    assert final_bias.shape == (3,)  # TC, WT, ET


def test_other_architecture_optimizer_and_schedule(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    choices = ["network_name=attention_unet", "optimizer_name=adamw", "lr_schedule=plateau", "grad_clip_norm=1.0", "tta=true"]
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 1, settings=[*TINY, *choices])
    assert result.exit_code == 0, result.output
    latest = torch.load(tmp_path / "run" / "models" / "latest.pt", weights_only=True)
    assert any("attention" in key.lower() or "psi" in key for key in latest["network"])
    assert "best" in latest["lr_scheduler"] and latest["optimizer"]["param_groups"][0]["weight_decay"] == pytest.approx(1e-5)


def test_deeply_supervised_dynunet_trains_and_its_run_loads_for_inference(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    from pipeline.inference.model import load_model

    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "2.5d", 1, settings=[*TINY, "network_name=dynunet", "deep_supervision=1"])
    assert result.exit_code == 0, result.output
    inference = json.loads((tmp_path / "run" / "inference.json").read_text())
    assert inference["network_name"] == "dynunet" and inference["deep_supervision"] == 1
    network = load_model(tmp_path / "run").network  # the deep supervision heads load with the rest
    assert any(key.startswith("deep_supervision_heads") for key in network.state_dict())
    assert network(torch.zeros(1, 20, 32, 32)).shape == (1, 4, 32, 32)  # eval: the full-resolution output only


@pytest.mark.slow
def test_monai_bundle_run_trains_2_5d(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """`python -m monai.bundle run training` runs the same definition and lays out the same run directory."""
    datalist, cache = tiny_run_data
    out = tmp_path / "run"
    overrides = _bundle_overrides(TINY)
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--workflow_name", WORKFLOW_NAME, "--config_file", str(TRAIN_CONFIG),
               "--datalist", str(datalist), "--dataset_dir", str(cache), "--output_dir", str(out), "--epochs", "1", *overrides]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    _check_run_dir(out, "2.5d")
    assert ConfigParser(json.loads((out / "config.json").read_text())).get_parsed_content("network_def").model[0].conv.in_channels == 20


def test_plain_config_workflow_stops_before_writing_and_names_the_workflow(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """Without --workflow_name, `monai.bundle run training` cannot see its parser: one clear line, no run folder."""
    from monai.bundle import ConfigWorkflow

    datalist, cache = tiny_run_data
    settings = {"datalist": str(datalist), "dataset_dir": str(cache), "output_dir": str(tmp_path / "run"), "epochs": 1}
    workflow = ConfigWorkflow(config_file=str(TRAIN_CONFIG), workflow_type="train", run_id="training", logging_file=False, **settings)
    with pytest.raises(Exception) as raised:  # MONAI wraps the expression's error; ours is its cause
        workflow.initialize()
    causes = [raised.value]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    assert any(isinstance(c, ConfigError) and f"add --workflow_name {WORKFLOW_NAME}" in str(c) for c in causes)
    assert not (tmp_path / "run").exists()
    assert issubclass(TrainingWorkflow, ConfigWorkflow) and f"{TrainingWorkflow.__module__}.{TrainingWorkflow.__name__}" == WORKFLOW_NAME


@pytest.mark.slow
@pytest.mark.parametrize("augment_on", ["worker", "device"])
def test_resume_gives_the_same_weights(tiny_run_data: tuple[Path, Path], tmp_path: Path, augment_on: str) -> None:
    datalist, cache = tiny_run_data
    settings = [*TINY, f"augment_on={augment_on}"]
    assert _cli_train(datalist, cache, tmp_path / "straight", "2.5d", 2, settings=settings).exit_code == 0
    assert _cli_train(datalist, cache, tmp_path / "resumed", "2.5d", 2, settings=[*settings, "stop_after_epoch=1"]).exit_code == 0
    first = torch.load(tmp_path / "resumed" / "models" / "latest.pt", weights_only=True)
    assert first["epoch"] == 1
    result = _cli_train(datalist, cache, tmp_path / "resumed", "2.5d", 2, "--resume", settings=settings)
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output and "epoch 1 of 2" in result.output
    straight = torch.load(tmp_path / "straight" / "models" / "latest.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "models" / "latest.pt", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 2 and resumed["iteration"] == straight["iteration"] == 4
    for key, value in straight["network"].items():
        assert torch.equal(value, resumed["network"][key]), key
    assert any(not torch.equal(v, first["network"][k]) for k, v in resumed["network"].items())  # epoch 2 did train


@pytest.mark.slow
def test_cli_trains_every_fold_and_skips_a_finished_one(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """`train --folds all`: OUT/fold0 and OUT/fold1 (the tiny data list's 2 folds); a rerun trains only what is missing."""
    datalist, cache = tiny_run_data
    runs = [tmp_path / "folds" / "fold0", tmp_path / "folds" / "fold1"]
    result = _cli_train(datalist, cache, tmp_path / "folds", "2d", 1, "--folds", "all")
    assert result.exit_code == 0, result.output
    for fold, run in enumerate(runs):
        assert json.loads((run / "config.json").read_text())["fold"] == fold
        assert torch.load(run / "models" / "latest.pt", weights_only=True)["epoch"] == 1
    assert f"--model {runs[0]} --model {runs[1]}" in result.output  # how to predict with their ensemble
    finished = (runs[0] / "models" / "latest.pt").stat().st_mtime_ns
    import shutil

    shutil.rmtree(runs[1])
    again = _cli_train(datalist, cache, tmp_path / "folds", "2d", 1, "--folds", "all")
    assert again.exit_code == 0, again.output
    assert (runs[0] / "models" / "latest.pt").stat().st_mtime_ns == finished  # fold 0 was skipped
    assert (runs[1] / "models" / "model.pt").is_file()  # fold 1 trained again


def test_checkpoint_errors(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    out = tmp_path / "run"
    result = _cli_train(datalist, cache, out, "2d", 1, "--resume")
    assert result.exit_code == 1 and "latest.pt: checkpoint not found" in result.output
    assert _cli_train(datalist, cache, out, "2d", 1).exit_code == 0
    finished = torch.load(out / "models" / "latest.pt", weights_only=True)
    same = _cli_train(datalist, cache, out, "2d", 1)  # the same command again resumes the (finished) run
    assert same.exit_code == 0 and "resuming from" in same.output and "epoch 1 of 1" in same.output
    assert torch.load(out / "models" / "latest.pt", weights_only=True)["iteration"] == finished["iteration"]
    other = _cli_train(datalist, cache, out, "2d", 2)  # another configuration is refused
    assert other.exit_code == 1 and "already holds a checkpoint" in other.output
    wider = [s for s in TINY if not s.startswith("channels")] + ["channels=[4, 8, 32]"]
    mismatch = _cli_train(datalist, cache, out, "2d", 2, "--resume", settings=wider)
    assert mismatch.exit_code == 1
    assert f"error: {out / 'models' / 'latest.pt'}: checkpoint does not match the configured network" in mismatch.output
    assert "(32," in mismatch.output and "(16," in mismatch.output


def test_bad_options_are_one_line_errors(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 1, "--fold", "5")
    assert result.exit_code == 1 and "fold 5 does not exist" in result.output
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 1, settings=["optimizer_name=sgd"])
    assert result.exit_code == 1 and "unknown optimizer 'sgd'" in result.output


@pytest.mark.slow
def test_ddp_gloo_two_processes(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """multi_gpu_train.yaml under torchrun: 2 CPU processes on gloo share the draws, rank 0 writes the run."""
    datalist, cache = tiny_run_data
    out = tmp_path / "run"
    overrides = _bundle_overrides([s for s in TINY if not s.startswith("deterministic")])
    configs = f"['{TRAIN_CONFIG}','{MULTI_GPU_CONFIG}']"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run", "training",
               "--workflow_name", WORKFLOW_NAME, "--config_file", configs, "--datalist", str(datalist), "--dataset_dir", str(cache), "--output_dir", str(out), "--epochs", "1", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    latest = torch.load(out / "models" / "latest.pt", weights_only=True)
    assert latest["epoch"] == 1 and latest["iteration"] == 1  # 8 samples over 2 ranks of batch 4: one step each
    config = json.loads((out / "config.json").read_text())
    assert config["backend"] == "$'nccl' if torch.cuda.is_available() else 'gloo'"
    assert json.loads((out / "provenance.json").read_text())["world_size"] == 2


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_train_the_same_weights_as_one_node(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """torchrun on 2 "nodes" of 1 process (c10d rendezvous on 127.0.0.1) = 1 node of 2 processes: same global batch, seed and weights."""
    datalist, cache = tiny_run_data
    overrides = _bundle_overrides([*(s for s in TINY if not s.startswith("deterministic")), "val_interval=2"])  # no validation: weights only
    configs = f"['{TRAIN_CONFIG}','{MULTI_GPU_CONFIG}']"

    def launch(layout: list[str], out: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", *layout, "--max-restarts=0", "-m", "monai.bundle", "run", "training", "--workflow_name", WORKFLOW_NAME,
                   "--config_file", configs, "--datalist", str(datalist), "--dataset_dir", str(cache), "--output_dir", str(out), "--epochs", "1", *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def finish(processes: list[subprocess.Popen]) -> None:
        try:
            outputs = [process.communicate(timeout=120)[0] for process in processes]
        finally:
            for process in processes:
                process.kill()
        assert all(process.returncode == 0 for process in processes), "\n".join(output[-3000:] for output in outputs)

    one_node = launch(["--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}"], tmp_path / "one_node")
    endpoint = f"--rdzv-endpoint=127.0.0.1:{_free_port()}"
    nodes = [launch(["--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-id=two_nodes", endpoint], tmp_path / "two_nodes") for rank in (0, 1)]
    finish([one_node, *nodes])

    one = torch.load(tmp_path / "one_node" / "models" / "latest.pt", weights_only=True)
    two = torch.load(tmp_path / "two_nodes" / "models" / "latest.pt", weights_only=True)
    assert one["iteration"] == two["iteration"] == 1  # 8 samples over 2 ranks of batch 4: one step
    assert one["network"].keys() == two["network"].keys()
    assert all(torch.allclose(one["network"][key], two["network"][key]) for key in one["network"])
    assert json.loads((tmp_path / "two_nodes" / "provenance.json").read_text())["world_size"] == 2


@pytest.mark.parametrize(("mode", "batch_size", "top_channels"), [("2.5d", 64, 512), ("3d", 2, 320)])
def test_gpu_config_merges_over_the_cpu_defaults(mode: str, batch_size: int, top_channels: int) -> None:
    parser = ConfigParser()
    parser.read_config([str(f) for f in training_config_files(mode, [GPU_CONFIG])])  # 3D: + train_3d.yaml, gpu_train_3d.yaml
    parser["mode"] = mode
    assert parser.get_parsed_content("batch_size") == batch_size
    assert parser.get_parsed_content("amp") is True
    network = parser.get_parsed_content("network_def")
    assert network.spatial_divisor == 16
    assert top_channels in {p.shape[0] for p in network.parameters() if p.ndim > 1}
    assert parser.get_parsed_content("roi_size") == (None if mode != "3d" else [128, 128, 128])


def _same_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_model_pt_holds_the_final_weights_by_default_and_the_best_epoch_with_keep_weights_best(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 2)
    assert result.exit_code == 0, result.output
    kept = torch.load(tmp_path / "run" / "models" / "model.pt", weights_only=True)
    final = torch.load(tmp_path / "run" / "models" / "latest.pt", weights_only=True)
    assert _same_weights(kept, final["network"])

    # with keep_weights=best, model.pt is the final network only when the final epoch validated best
    result = _cli_train(datalist, cache, tmp_path / "best", "2d", 3, settings=[*TINY, "keep_weights=best"])
    assert result.exit_code == 0, result.output
    kept = torch.load(tmp_path / "best" / "models" / "model.pt", weights_only=True)
    final = torch.load(tmp_path / "best" / "models" / "latest.pt", weights_only=True)
    assert 1 <= final["best_metric_epoch"] <= 3
    assert _same_weights(kept, final["network"]) == (final["best_metric_epoch"] == 3)

    result = _cli_train(datalist, cache, tmp_path / "bad", "2d", 1, settings=[*TINY, "keep_weights=worst"])
    assert result.exit_code == 1 and "keep_weights: choose one of best, last, ema" in result.output
    assert not (tmp_path / "bad").exists()


def test_fold_none_trains_on_every_case_and_validates_none(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """`--fold none`: the final-model run (nnU-Net's ``fold all``): every non-test case trains, no validation runs, model.pt is kept."""
    datalist, cache = tiny_run_data
    payload = json.loads(datalist.read_text())
    pool = {entry["case_id"] for split in ("training", "validation") for entry in payload[split]}
    training, validation = fold_case_ids(datalist, None, cache)
    assert set(training) == pool and len(training) == len(pool) and validation == []

    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 2, "--fold", "none")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["fold"] is None
    assert ConfigParser(config).get_parsed_content("fold_cases") == (training, [])  # what the run trained on
    scalars = _tensorboard_scalars(run_dir)
    assert "train_loss" in scalars and not any(tag.startswith("val_") for tag in scalars)  # no validation ran
    latest = torch.load(run_dir / "models" / "latest.pt", weights_only=True)
    assert latest["epoch"] == 2 and latest["best_metric_epoch"] == -1
    assert _same_weights(torch.load(run_dir / "models" / "model.pt", weights_only=True), latest["network"])
    from pipeline.inference.model import load_model

    assert load_model(run_dir).inferer.mode == "2d"


@pytest.mark.parametrize(
    ("setting", "message"),
    [("keep_weights=best", "keep_weights: best needs validation cases"), ("lr_schedule=plateau", "lr_schedule: plateau steps on the validation Dice")],
)
def test_fold_none_refuses_settings_that_need_validation(tiny_run_data: tuple[Path, Path], tmp_path: Path, setting: str, message: str) -> None:
    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 1, "--fold", "none", settings=[*TINY, setting])
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "run").exists()


def test_fold_option_takes_a_number_or_none(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    result = _cli_train(datalist, cache, tmp_path / "run", "2d", 1, "--fold", "all")
    assert result.exit_code == 2 and "'all' is neither a fold number (0, 1, ...) nor none" in result.output
    assert not (tmp_path / "run").exists()


def _moving_average(weights: list[dict], decay: float) -> dict:
    """The exponential moving average of per-iteration weights, started at the first (torch's AveragedModel convention)."""
    average = {key: value.clone().double() for key, value in weights[0].items()}
    for step in weights[1:]:
        for key, value in step.items():
            average[key] = decay * average[key] + (1 - decay) * value.double()
    return average


def test_keep_weights_ema_keeps_the_moving_average_of_the_iterations(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    """model.pt holds the average of the weights after each optimizer step; latest.pt the trained weights and the average, to resume."""
    from ignite.engine import Events

    from pipeline.training.handlers import TrainingCheckpoint

    datalist, cache = tiny_run_data
    steps: list[dict] = []
    record = lambda engine: steps.append({k: v.detach().clone() for k, v in engine.network.state_dict().items()})  # noqa: E731
    original_attach = TrainingCheckpoint.attach

    def attach_and_record(self: TrainingCheckpoint, engine: Any) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, record)  # before the average's own handler: the same weights
        original_attach(self, engine)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TrainingCheckpoint, "attach", attach_and_record)
        result = _cli_train(datalist, cache, tmp_path / "ema", "2d", 2, settings=[*TINY, "keep_weights=ema", "ema_decay=0.6"])
    assert result.exit_code == 0, result.output
    kept = torch.load(tmp_path / "ema" / "models" / "model.pt", weights_only=True)
    latest = torch.load(tmp_path / "ema" / "models" / "latest.pt", weights_only=True)
    assert len(steps) == latest["iteration"] == 4
    assert _same_weights(steps[-1], latest["network"])  # the trained network goes on unaveraged
    expected = _moving_average(steps, 0.6)
    assert kept.keys() == expected.keys()
    assert all(torch.allclose(kept[key].double(), expected[key], atol=1e-6) for key in kept)
    assert not _same_weights(kept, latest["network"])
    assert int(latest["ema"]["n_averaged"]) == 4

    result = _cli_train(datalist, cache, tmp_path / "bad_decay", "2d", 1, settings=[*TINY, "keep_weights=ema", "ema_decay=1.5"])
    assert result.exit_code == 1 and "ema_decay: the moving average's decay per iteration must lie between 0 and 1" in result.output
    assert not (tmp_path / "bad_decay").exists()


@pytest.mark.slow
def test_resume_keeps_the_moving_average(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    settings = [*TINY, "keep_weights=ema"]
    assert _cli_train(datalist, cache, tmp_path / "straight", "2d", 2, settings=settings).exit_code == 0
    assert _cli_train(datalist, cache, tmp_path / "resumed", "2d", 2, settings=[*settings, "stop_after_epoch=1"]).exit_code == 0
    assert _cli_train(datalist, cache, tmp_path / "resumed", "2d", 2, "--resume", settings=settings).exit_code == 0
    straight, resumed = (torch.load(tmp_path / run / "models" / "model.pt", weights_only=True) for run in ("straight", "resumed"))
    assert _same_weights(straight, resumed)

    # a run trained keeping the final weights has no average to go on from
    assert _cli_train(datalist, cache, tmp_path / "last", "2d", 2, settings=[*TINY, "stop_after_epoch=1"]).exit_code == 0
    before = (tmp_path / "last" / "config.json").read_bytes()
    result = _cli_train(datalist, cache, tmp_path / "last", "2d", 2, "--resume", settings=settings)
    assert result.exit_code == 1
    assert "latest.pt: holds no moving average of the weights to resume: it was trained without keep_weights: ema" in result.output
    assert (tmp_path / "last" / "config.json").read_bytes() == before


# ---- tasks ------------------------------------------------------------------------------------
def _task_run_data(out: Path, task_name: str, channels: list[str] | None) -> tuple[Path, Path, Path]:
    """A tiny synthetic cohort in ``task_name``'s layout, its data list on ``channels`` and its cache: (cohort, data list, cache)."""
    from pipeline.datasets.datalist import build_datalist
    from pipeline.preprocessing.prepare import preprocess_datalist
    from pipeline.synth import generate_cohort

    cohort, datalist, cache = out / "cohort", out / "list.json", out / "cache"
    generate_cohort(cohort, cases=6, seed=0, size="tiny", progress=False, task=task_name)
    build_datalist(cohort, datalist, folds=2, test_fraction=0.2, progress=False, task=task_name, channels=channels)
    preprocess_datalist(datalist, cache, progress=False)
    return cohort, datalist, cache


@pytest.mark.parametrize(
    ("task_name", "channels", "settings", "conventions"),
    [
        ("whole-tumour", ["flair"], [], {"brats2017": {0, 1}, "internal": {0, 1}}),
        ("brats2024-post-treatment", None, [], {"brats2023": {0, 1, 2, 3, 4}}),
        ("brats-glioma", ["t1ce", "flair"], ["output_mode=regions"], {"brats2017": {0, 1, 2, 4}, "msd": {0, 1, 2, 3}}),
    ],
)
def test_a_task_trains_and_predicts_its_classes(tmp_path, task_name, channels, settings, conventions) -> None:
    """A tiny run on a task's cache: the network's channels, the stored task, validation Dice per structure, labels written per convention."""
    import numpy as np

    from pipeline.inference.model import load_model
    from pipeline.tasks.task import model_task, resolve_task

    task = resolve_task(task_name, channels)
    cohort, datalist, cache = _task_run_data(tmp_path / "data", task_name, channels)
    result = _cli_train(datalist, cache, tmp_path / "run", "2.5d", 1, settings=[*TINY, *settings])
    assert result.exit_code == 0, result.output
    effective = model_task(task, "regions" if settings else None)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    inference = json.loads((tmp_path / "run" / "inference.json").read_text())
    assert config["task"] == inference["task"] == task.to_dict()
    latest = torch.load(tmp_path / "run" / "models" / "latest.pt", weights_only=True)
    first, last = next(iter(latest["network"].values())), list(latest["network"].values())[-1]
    assert first.shape[1] == task.num_channels * 5 and last.shape[0] == effective.out_channels  # 2.5D, context 2
    from pipeline.evaluation.report import read_training_logs

    logged = read_training_logs(tmp_path / "run")
    assert {f"val_dice_{name}" for name in task.structures} | {"val_mean_dice"} <= set(logged), sorted(logged)

    model = load_model(tmp_path / "run")
    assert model.task.classes == task.classes and model.channel_names == ((*task.regions,) if settings else ("background", *task.classes))
    case = cohort / json.loads(datalist.read_text())["test"][0]["case_id"]
    prediction = model.predict_case(case, probabilities=True)
    assert prediction.probabilities.shape[0] == effective.out_channels and prediction.labels.max() <= len(task.classes)
    for convention, allowed in conventions.items():
        written = np.asarray(model.segment(case, label_convention=convention).dataobj)
        assert set(np.unique(written).tolist()) <= allowed
        np.testing.assert_array_equal(model.task.convention(convention).to_internal(written), prediction.labels)


@pytest.mark.parametrize("mode", ["2.5d", "3d"])
@pytest.mark.parametrize("extra", [[], [GPU_CONFIG], [MULTI_GPU_CONFIG]])
def test_training_configs_compose_with_a_task(mode: str, extra: list, tiny_cohort: Path, tmp_path: Path) -> None:
    from pipeline.datasets.datalist import build_datalist
    from pipeline.training.workflow import set_run_task

    stored = tmp_path / "list.json"
    build_datalist(tiny_cohort, stored, folds=2, test_fraction=0.25, progress=False, task="whole-tumour", channels=["flair"])
    listing = json.loads(stored.read_text())
    parser = ConfigParser()
    parser.read_config([str(f) for f in training_config_files(mode, extra)])
    parser.update({"mode": mode, "datalist": str(stored), "channels": [4, 8], "strides": [2]})
    assert set_run_task(parser) == listing["task"] and parser.get_parsed_content("target") == "softmax"
    network = parser.get_parsed_content("network_def")
    weights = [p for p in network.parameters() if p.ndim > 1]
    assert weights[0].shape[1] == (5 if mode == "2.5d" else 1) and network(torch.zeros(1, weights[0].shape[1], *[8] * (3 if mode == "3d" else 2))).shape[1] == 2
    assert parser.get_parsed_content("loss").dice.softmax is True


@pytest.mark.parametrize(("mode", "extra"), [("2.5d", []), ("3d", ["output_mode=regions"])])
def test_augmentation_on_the_device_trains_and_repeats(tiny_run_data: tuple[Path, Path], tmp_path: Path, mode: str, extra: list[str]) -> None:
    """`augment_on: device`: workers only read and crop (float16), the trainer augments whole batches; one seed, one result."""
    datalist, cache = tiny_run_data
    settings = [*TINY, "augment_on=device", *extra]
    for name in ("first", "second"):
        result = _cli_train(datalist, cache, tmp_path / name, mode, 1, settings=settings)
        assert result.exit_code == 0, result.output
    config = ConfigParser(json.loads((tmp_path / "first" / "config.json").read_text()))
    assert config.get_parsed_content("augment_on_device") is True
    dataset = config.get_parsed_content("train#dataset")
    sample = dataset[0]
    assert sample["image"].dtype == torch.float16  # read and crop only: the cache's half precision
    assert not any(type(t).__name__.startswith("Rand") and t.__class__.__name__ != "RandPosNegPatchd" for t in dataset.transform.flatten().transforms)
    first, second = (torch.load(tmp_path / name / "models" / "latest.pt", weights_only=True)["network"] for name in ("first", "second"))
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def test_augment_on_refuses_an_unknown_place(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    datalist, cache = tiny_run_data
    result = CliRunner().invoke(main, ["train", "--datalist", str(datalist), "--cache", str(cache), "--mode", "2d", "--epochs", "1",
                                       "--out", str(tmp_path / "run"), "--set", "augment_on=gpu"])
    assert result.exit_code != 0
    assert "augment_on: unknown place 'gpu'; expected one of worker, device" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("class_weights=[1,2,1]", "class_weights: give 4 positive weights, one per output channel (softmax: background first), got [1, 2, 1]"),
        ("class_ratios={CORE: 0.2}", "class_ratios: unknown class CORE; the task's classes are NEC, ED, ET"),
    ],
)
def test_loss_and_sampling_settings_that_do_not_fit_the_task_are_refused_before_training(
    tiny_run_data: tuple[Path, Path], tmp_path: Path, setting: str, message: str
) -> None:
    datalist, cache = tiny_run_data
    result = CliRunner().invoke(main, ["train", "--datalist", str(datalist), "--cache", str(cache), "--mode", "2d", "--epochs", "1",
                                       "--out", str(tmp_path / "run"), "--set", setting])  # fmt: skip
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "run").exists()


def test_class_ratios_reach_the_training_sampler(tiny_run_data: tuple[Path, Path], tmp_path: Path) -> None:
    from pipeline.training.workflow import set_run_task

    datalist, cache = tiny_run_data
    parser = ConfigParser()
    parser.read_config([str(f) for f in training_config_files("2.5d", [])])
    parser.update({"datalist": str(datalist), "dataset_dir": str(cache), "output_dir": str(tmp_path / "run"), "class_ratios": {"NEC": 0.5}})
    set_run_task(parser)
    holds_nec = parser.get_parsed_content("train#dataset").slices_holding(1)
    assert 0 < holds_nec.mean() < 0.4
    assert parser.get_parsed_content("train#sampler").probabilities[holds_nec].sum() > 0.5
