"""Old dotted names (the flat layout before the stage subpackages) keep resolving: run folders written with them load and predict identically."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from prediction_cases import write_run_dir

from pipeline.inference.config import RUN_INFERENCE_CONFIG, run_inference_config
from pipeline.inference.model import load_model
from pipeline.legacy_names import LEGACY_MODULES, PACKAGE_ATTRIBUTES


def old_names(text: str) -> str:
    """``text`` with every new dotted module name written as the flat layout wrote it (the inverse of the legacy map)."""
    inverse = {targets[0]: old for old, targets in LEGACY_MODULES.items()}
    inverse.update({target: package for package, target in PACKAGE_ATTRIBUTES.items()})
    inverse["pipeline.tasks.task"] = "pipeline.tasks"
    pattern = re.compile(r"\b(" + "|".join(re.escape(name) for name in sorted(inverse, key=len, reverse=True)) + r")\b(?=[.'\"\s]|$)")
    return pattern.sub(lambda match: inverse[match.group(1)], text)


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny run folder twice: with the new module names, and rewritten with the old ones."""
    new = write_run_dir(tmp_path_factory.mktemp("new") / "run")
    (new / RUN_INFERENCE_CONFIG).write_text(json.dumps(run_inference_config(json.loads((new / "config.json").read_text()), new), indent=1))
    old = tmp_path_factory.mktemp("old") / "run"
    shutil.copytree(new, old)
    for name in ("config.json", RUN_INFERENCE_CONFIG):
        (old / name).write_text(old_names((new / name).read_text()).replace(str(new), str(old)))
    inference = json.loads((old / RUN_INFERENCE_CONFIG).read_text())
    inference["bundle_root"] = str(old)
    (old / RUN_INFERENCE_CONFIG).write_text(json.dumps(inference, indent=1))
    return new, old


def test_the_old_run_folder_names_the_old_modules(run_folders: tuple[Path, Path]) -> None:
    _, old = run_folders
    inference = (old / RUN_INFERENCE_CONFIG).read_text()
    assert "pipeline.api.SegmentationModel" in inference
    assert "pipeline.inference.VolumeInferer" in inference
    assert "pipeline.postprocess.PostProcessing" in inference
    assert "pipeline.inference.model" not in inference and "pipeline.inference.inferers" not in inference
    assert "pipeline.data.build_train_dataset" in (old / "config.json").read_text()


def test_a_run_folder_with_the_old_names_predicts_identically(run_folders: tuple[Path, Path], case_dir: Path) -> None:
    new, old = run_folders
    with pytest.warns(DeprecationWarning):
        old_model = load_model(old)
    new_labels = np.asarray(load_model(new).segment(case_dir).dataobj)
    old_labels = np.asarray(old_model.segment(case_dir).dataobj)
    assert new_labels.any()
    np.testing.assert_array_equal(old_labels, new_labels)


@pytest.mark.parametrize("old", sorted(LEGACY_MODULES))
def test_every_old_module_resolves_to_the_objects_of_its_new_module(old: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=re.escape(old)):
        module = importlib.import_module(old)
    for target in LEGACY_MODULES[old]:
        new = importlib.import_module(target)
        for name in new.__all__:
            assert getattr(module, name) is getattr(new, name), f"{old}.{name}"


def test_a_split_module_reads_from_both_new_modules() -> None:
    report = importlib.import_module("pipeline.report")
    from pipeline.evaluation.report import write_report
    from pipeline.visualize.overlays import write_overlay

    assert report.write_report is write_report and report.write_overlay is write_overlay
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        report.nothing_here  # noqa: B018


@pytest.mark.parametrize(("package", "name"), [("pipeline.inference", "VolumeInferer"), ("pipeline.training", "start_run"), ("pipeline.tasks", "model_task")])
def test_packages_that_were_modules_keep_their_old_attributes(package: str, name: str) -> None:
    module = importlib.import_module(package)
    target = {**PACKAGE_ATTRIBUTES, "pipeline.tasks": "pipeline.tasks.task"}[package]
    assert getattr(module, name) is getattr(importlib.import_module(target), name)
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")
