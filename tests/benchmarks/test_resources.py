"""The resources benchmark: the GPU memory estimate on a tiny network, the configurations it covers, and its table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval
from monai.networks.nets import UNet

from benchmarks.resources import (
    CONFIGS_DIR,
    CONFIGURATIONS,
    COLUMNS,
    forward_output_bytes,
    gpu_memory_estimate,
    main,
    markdown_report,
    parameter_bytes,
    sliding_windows,
    table_rows,
    training_values,
)


@pytest.fixture
def tiny_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=3, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=1)


def test_parameter_bytes_are_four_per_float32_parameter(tiny_network: torch.nn.Module) -> None:
    assert parameter_bytes(tiny_network) == 4 * sum(p.numel() for p in tiny_network.parameters()) > 0


def test_layer_outputs_grow_exactly_with_the_batch_and_leave_the_network_as_it_was(tiny_network: torch.nn.Module) -> None:
    one = forward_output_bytes(tiny_network, torch.zeros(1, 3, 16, 16))
    assert one > 2 * 16 * 16 * 4  # more than the output layer alone
    assert forward_output_bytes(tiny_network, torch.zeros(2, 3, 16, 16)) == 2 * one
    assert forward_output_bytes(tiny_network, torch.zeros(1, 3, 32, 32)) == 4 * one  # and with the pixels
    assert tiny_network.training and not any(m._forward_hooks for m in tiny_network.modules())


def test_estimate_is_monotonic_in_batch_and_counts_weights_gradients_and_optimizer(tiny_network: torch.nn.Module) -> None:
    params = parameter_bytes(tiny_network)
    small = gpu_memory_estimate(tiny_network, (3, 16, 16), 2, training=True)
    large = gpu_memory_estimate(tiny_network, (3, 16, 16), 8, training=True)
    assert large["activation_bytes"] == 4 * small["activation_bytes"] > 0
    assert large["total_bytes"] > small["total_bytes"]
    assert small["state_bytes"] == 4 * params  # weights, gradients, Adam's two moments
    assert gpu_memory_estimate(tiny_network, (3, 16, 16), 2, training=True, optimizer_states=1)["state_bytes"] == 3 * params
    doubled = gpu_memory_estimate(tiny_network, (3, 16, 16), 2, training=True, backward_factor=4.0)
    assert doubled["activation_bytes"] == 2 * small["activation_bytes"]

    inference = gpu_memory_estimate(tiny_network, (3, 16, 16), 2, training=False)
    assert inference["state_bytes"] == params and inference["total_bytes"] < small["total_bytes"]
    ensemble = gpu_memory_estimate(tiny_network, (3, 16, 16), 2, training=False, members=5, extra_bytes=1000)
    assert ensemble["state_bytes"] == 5 * params
    assert ensemble["total_bytes"] == 5 * params + inference["activation_bytes"] + 1000
    assert ensemble["total_gib"] == pytest.approx(ensemble["total_bytes"] / 2**30)


@pytest.mark.parametrize("shape", [(128, 128, 128), (200, 128, 96), (150, 170, 140), (300, 65, 129)])
def test_window_count_matches_monai_sliding_window(shape: tuple[int, int, int]) -> None:
    roi = tuple(min(128, s) for s in shape)
    monai_count = len(dense_patch_slices(shape, roi, _get_scan_interval(shape, roi, 3, (0.5,) * 3)))
    assert sliding_windows(shape, (128, 128, 128), 0.5) == monai_count


def test_every_shipped_config_file_is_a_row_and_training_values_come_from_it() -> None:
    files = {name for c in CONFIGURATIONS for name in c.files} | {"train.yaml", "inference.yaml", "train_3d.yaml", "gpu_train_3d.yaml"}
    shipped = {p.name for p in CONFIGS_DIR.glob("*.yaml")} - {"evaluate.yaml", "multi_gpu_train.yaml"}
    assert shipped <= files
    assert {c.mode for c in CONFIGURATIONS if c.stage == "training"} == {"2d", "2.5d", "3d"}
    assert any(c.members > 1 for c in CONFIGURATIONS)
    by_name = {c.name: training_values(c) for c in CONFIGURATIONS if c.stage == "training"}
    assert by_name["demo.yaml (make demo, small synthetic cases)"]["epochs"] == 8
    assert by_name["train_3d.yaml (--mode 3d)"]["batch_size"] == 2
    gpu_3d = by_name["gpu_train_3d.yaml (3D)"]
    assert gpu_3d["patch_size"] == [128, 128, 128] and gpu_3d["optimizer_name"] == "adamw" and gpu_3d["amp"] is True
    assert by_name["gpu_train.yaml (2.5D)"]["batch_size"] == 64


def _report() -> dict:
    """A report as ``run_resources`` writes it on a CPU: CPU configurations measured, GPU ones estimated only."""
    rows = []
    for config in CONFIGURATIONS:
        row: dict = {
            "configuration": {**config.__dict__, "files": list(config.files)},
            "estimate": {"total_gib": 1.5, "sample_shape": [20, 160, 192], "batch_size": 16},
        }
        if config.stage == "training":
            row["values"] = {"batch_size": 16, "samples_per_epoch": 1600, "epochs": 12, "num_workers": 1}
            if config.device == "cpu":
                row["measured"] = {"device": "cpu", "main_peak_rss_mib": 1400.0, "worker_peak_rss_mib": 700.0, "seconds_per_epoch": 90.0,
                                   "seconds_per_run": 1080.0, "samples_per_s": 17.8, "input_shape": [20, 160, 192], "gpu_max_allocated_gib": None}
        elif config.device == "cpu":
            seconds = 80.0 if config.members > 1 else 4.2
            row["measured"] = {"device": "cpu", "peak_rss_mib": 2048.0, "seconds_per_case": seconds, "cases": 1, "gpu_max_allocated_gib": None}
        rows.append(row)
    memory = [{"cases": n, "main_peak_rss_mib": 1400.0, "worker_peak_rss_mib": 700.0} for n in (10, 200)]
    small_train = {"samples_per_s": 60.0, "main_peak_rss_mib": 900.0, "input_shape": [20, 64, 64]}
    return {
        "device": "cpu",
        "date": "2026-11-29T21:00:00+00:00",
        "machine_name": "intel-xeon-2c",
        "machine": {"cpu_model": "Intel Xeon", "cpu_cores": 2, "memory_gib": 23.5, "torch": "2", "monai": "1", "gpu": None},
        "profile": {"name": "quick", "iterations": 6, "warmup": 2},
        "cohort": {"shape_xyz": [240, 240, 155], "cases": 3},
        "seconds": 600.0,
        "load_average": {"start": [1.0], "end": [1.5]},
        "method": {"gpu_estimate": "parameters and activations", "backward_factor": 2.0},
        "rows": rows,
        "growth": {
            "cohort_size": {"runs": memory},
            "image_size": {"small_grid": [96, 96, 62], "full_grid": [240, 240, 155], "training_small": small_train,
                           "inference_small": {"seconds_per_case": 0.8, "peak_rss_mib": 900.0}},
            "cases_per_call": {"cases": 3, "seconds_per_case": 4.0, "peak_rss_mib": 2100.0},
        },
    }


def test_table_has_every_configuration_with_measured_and_estimated_cells_marked() -> None:
    report = _report()
    rows = table_rows(report)
    assert [r["configuration"] for r in rows] == [c.name for c in CONFIGURATIONS]
    assert all(set(r) == set(COLUMNS) for r in rows)
    for config, cells in zip(CONFIGURATIONS, rows):
        gpu_cell = cells["GPU memory, training" if config.stage == "training" else "GPU memory, inference"]
        assert gpu_cell == "~1.50 GiB (est.)"
        measured_cell = cells["time per epoch" if config.stage == "training" else "time per case"]
        if config.device == "cpu":
            assert measured_cell == ("90 s (CPU; run 18 min)" if config.stage == "training" else "80 s (CPU)" if config.members > 1 else "4.2 s (CPU)")
        else:
            assert measured_cell == "measure with --device cuda"
    train = rows[0]
    assert train["host RAM, training"] == "1.37 GiB + 0.68 GiB per worker" and train["time per case"] == ""

    table = markdown_report(report)
    assert all(f"| {c.name} |" in table for c in CONFIGURATIONS)
    assert "200 over 10 cases: 1.00x, so constant" in table and "96x96x62" in table and "linearly" in table
    assert "5 members 80 s per case, 19.0x one model" in table


def test_cuda_without_a_gpu_fails_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert main(["--device", "cuda", "--work-dir", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device: cuda requested but no CUDA GPU is usable") and "\n" not in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "work").exists()
