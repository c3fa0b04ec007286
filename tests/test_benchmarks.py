"""The benchmark runner: a smoke run on tiny volumes writes a complete report; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.device_augmentation import READ_CROP, READ_CROP_AUGMENT_HERE, WORKER_AUGMENT
from benchmarks.machine import machine_name, peak_bf16_flops, peak_rss_mib
from benchmarks.run import INFERENCE_VARIANTS, main


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The JSON report (and its path) of one ``--smoke`` run in a fresh work folder."""
    work = tmp_path_factory.mktemp("bench")
    path = work / "report.json"
    assert main(["--smoke", "--work-dir", str(work / "cohort"), "--json", str(path), "--no-progress"]) == 0
    return json.loads(path.read_text()), path


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


@pytest.mark.slow
def test_smoke_report_has_every_section(smoke_report: tuple[dict, Path]) -> None:
    report, path = smoke_report
    assert report["profile"]["name"] == "smoke" and report["device"] == "cpu"
    assert report["machine"]["cpu_cores"] >= 1 and report["machine_name"].endswith(f"-{report['machine']['cpu_cores']}c")
    for section in ("preprocessing", "loader", "device_augmentation", "training", "memory", "inference", "targets", "seconds"):
        assert section in report, section

    methods = {(r["method"], r["mode"]) for r in report["loader"]["results"]}
    assert ("per-sample NIfTI (nibabel)", "2d") in methods and ("MONAI GridPatchDataset+PatchIterd+ShuffleBuffer", "2d") in methods
    for mode in ("2d", "2.5d", "3d"):
        assert ("plain memmap read", mode) in methods and ("pipeline.training.loaders", mode) in methods
        assert set(report["loader"]["ratios"][mode]["pipeline.training.loaders"]) == {"x_nifti", "x_monai_recipe", "plain_over_ours"}
    assert all(_positive(r["samples_per_s"]) for r in report["loader"]["results"])

    device_augmentation = report["device_augmentation"]
    assert {(r["method"], r["mode"]) for r in device_augmentation["results"]} == {
        (method, mode) for method in ("plain memmap read", READ_CROP, READ_CROP_AUGMENT_HERE, WORKER_AUGMENT) for mode in ("2d", "2.5d", "3d")
    }
    assert all(_positive(r["samples_per_s"]) for r in device_augmentation["results"])
    for mode in ("2d", "2.5d", "3d"):
        assert all(_positive(v) for v in device_augmentation["ratios"][mode].values())
        assert _positive(device_augmentation["cost"][mode]["batched_ms_per_sample"])

    (training,) = report["training"]["training"]
    assert training["mode"] == "2.5d" and training["batch_size"] == 4
    assert _positive(training["model_only_samples_per_s"]) and _positive(training["end_to_end_samples_per_s"])
    assert _positive(report["training"]["training_gflop_per_sample"])

    runs = report["memory"]["runs"]
    assert [r["cases"] for r in runs] == list(report["profile"]["memory_cohorts"])
    assert all(_positive(r["main_peak_rss_mib"]) and _positive(r["worker_peak_rss_mib"]) for r in runs)

    results = report["inference"]["results"]
    assert [(r["mode"], r["tta"]) for r in results] == list(INFERENCE_VARIANTS)
    assert all(_positive(r["seconds_per_case"]) and _positive(r["reference_over_this"]) for r in results)
    assert [r["tta_passes"] for r in results] == [1, 4, 1, 4, 1, 8]
    assert _positive(report["inference"]["reference"]["seconds_per_case"])

    steps = report["preprocessing"]["steps"]
    assert all(_positive(s["wall"]) for s in steps.values()) and _positive(report["preprocessing"]["preprocess_over_read_sitk"])

    assert len(report["targets"]) >= 6
    assert all(isinstance(t["met"], bool) and _positive(t["value"]) for t in report["targets"])
    table = path.with_suffix(".md").read_text()
    assert "### Targets" in table and "MONAI brats bundle" in table and "augment_on: device" in table


def test_cuda_without_a_gpu_fails_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert main(["--smoke", "--device", "cuda", "--work-dir", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --device: cuda requested but no CUDA GPU is usable")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "work").exists()


def test_machine_name_is_short_and_names_the_gpu_when_used() -> None:
    cpu = {"cpu_model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", "cpu_cores": 16, "gpu": None}
    assert machine_name(cpu) == "intel-xeon-platinum-8480-16c"
    assert machine_name({**cpu, "gpu": {"name": "NVIDIA H100 80GB HBM3"}}) == "nvidia-h100-80gb-hbm3-16c"
    assert machine_name({"cpu_model": "AMD EPYC", "cpu_cores": 2, "gpu": None}) == "amd-epyc-2c"


def test_peak_table_matches_the_most_specific_gpu_name() -> None:
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("Some Future GPU") is None



@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM is Linux's")
def test_peak_rss_of_a_launched_program_leaves_out_the_launching_process() -> None:
    held = b"\x01" * (600 * 2**20)  # written, so resident in this process while the child starts
    code = "from benchmarks.machine import peak_rss_mib; print(peak_rss_mib())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
    assert 0 < float(child.stdout) < 600 < peak_rss_mib()
    del held
