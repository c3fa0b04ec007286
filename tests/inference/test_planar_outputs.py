"""The output side of the 2D layouts: Kaggle LGG patients and 2D image/mask folders trained, predicted, written back and scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from planar_cases import image_pairs, kaggle_root, tree, write_image
from tiny_training import TINY_NETWORK_AND_BUDGET

from pipeline.inference.model import load_model
from pipeline.core.errors import InputError
from pipeline.core.io import read_image_2d
from pipeline.inference.postprocess import PostProcessing

KAGGLE_PATIENTS = (("TCGA_AB_0001_20000101", 5), ("TCGA_AB_0002_20000102", 3), ("TCGA_AB_0003_20000103", 4), ("TCGA_AB_0004_20000104", 2))
IMAGE_SIZES = ((16, 16), (20, 12), (10, 18), (14, 22))


def _train(root: Path, work: Path, mode: str = "2d", **datalist: Any) -> tuple[Path, Path]:
    """Data list, cache and a one-epoch tiny run of ``root``; returns the data list and the run folder."""
    from pipeline.datasets.datalist import build_datalist
    from pipeline.preprocessing.prepare import preprocess_datalist
    from pipeline.training.workflow import parse_overrides, train

    build_datalist(root, work / "list.json", folds=2, test_fraction=0.0, progress=False, **datalist)
    preprocess_datalist(work / "list.json", work / "cache", progress=False)
    run = train(work / "list.json", work / "cache", work / f"run_{mode}", mode=mode, epochs=1, overrides=parse_overrides((*TINY_NETWORK_AND_BUDGET, "progress=false")))
    return work / "list.json", run


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny Kaggle root (patients of 2-5 slices), its data list and a tiny 2D run."""
    work = tmp_path_factory.mktemp("kaggle")
    root = kaggle_root(work / "kaggle_3m", KAGGLE_PATIENTS)
    datalist, run = _train(root, work)
    return root, datalist, run


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Tiny 2D image/mask folders of four sizes, their data list and a tiny 2D run."""
    work = tmp_path_factory.mktemp("pairs")
    root = image_pairs(work / "pairs", names=("a", "b", "c", "d"), sizes=IMAGE_SIZES)
    datalist, run = _train(root, work)
    return root, datalist, run


def _check_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = read_image_2d(path)
    assert mask.shape == shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}, path
    return mask


# ----------------------------------------------------------------------------- prediction


def test_kaggle_predictions_mirror_the_patient_folders_as_0_255_tiffs(kaggle, tmp_path):
    from pipeline.inference.predict import predict

    root, _, run = kaggle
    before = tree(root)
    summary = predict(run, root, tmp_path / "out", progress=False)
    assert tree(root) == before
    for name, slices in KAGGLE_PATIENTS:
        written = sorted(p.name for p in (tmp_path / "out" / name).iterdir())
        assert written == sorted(f"{name}_{n}_mask.tif" for n in range(1, slices + 1))
        masks = np.stack([_check_mask(tmp_path / "out" / name / f"{name}_{n}_mask.tif", (16, 16)) for n in range(1, slices + 1)], axis=2)
        volume = nib.load(summary.segmentations[name])
        assert volume.shape == (16, 16, slices) and volume.header.get_zooms() == (1.0, 1.0, 1.0)
        assert np.array_equal(np.asarray(volume.dataobj), masks)
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["model"]["task"] == "kaggle-lgg" and manifest["model"]["postprocessing"]["keep_largest"] == ["tumour"]
    assert manifest["cases"][0]["masks"][0] == f"{KAGGLE_PATIENTS[0][0]}/{KAGGLE_PATIENTS[0][0]}_1_mask.tif"


def test_one_patient_folder_or_a_data_list_predicts_the_same_files(kaggle, tmp_path):
    from pipeline.inference.predict import predict

    root, datalist, run = kaggle
    name, slices = KAGGLE_PATIENTS[1]
    predict(run, root / name, tmp_path / "one", progress=False)
    assert sorted(p.name for p in (tmp_path / "one" / name).iterdir()) == [f"{name}_{n}_mask.tif" for n in range(1, slices + 1)]
    predict(run, datalist, tmp_path / "listed", progress=False)
    assert {p.name for p in (tmp_path / "listed").iterdir() if p.is_dir()} == {n for n, _ in KAGGLE_PATIENTS}


@pytest.mark.parametrize("where", ["root", "patient"])
def test_predictions_are_never_written_beside_the_inputs(kaggle, where):
    from pipeline.inference.predict import predict

    root, _, run = kaggle
    out = root if where == "root" else root / KAGGLE_PATIENTS[0][0]
    before = tree(root)
    with pytest.raises(InputError, match="input file|beside the input files"):
        predict(run, root, out, progress=False)
    assert tree(root) == before


def test_a_kaggle_run_keeps_the_largest_tumour_component_by_default(kaggle):
    _, _, run = kaggle
    config = json.loads((run / "inference.json").read_text())
    assert config["postprocessing"]["keep_largest"] == ["tumour"]
    assert load_model(run).postprocessing.keep_largest == ("tumour",)


def test_2d_predictions_come_back_at_each_images_own_size(pairs, tmp_path):
    from pipeline.inference.predict import predict

    root, _, run = pairs
    before = tree(root)
    predict(run, root, tmp_path / "out", progress=False)
    assert tree(root) == before
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    for name, size in zip("abcd", IMAGE_SIZES):
        _check_mask(tmp_path / "out" / "masks" / f"{name}.png", size)
    predict(run, root / "images" / "b.png", tmp_path / "single", progress=False)
    _check_mask(tmp_path / "single" / "masks" / "b.png", IMAGE_SIZES[1])
    with pytest.raises(InputError):
        predict(run, root / "images" / "b.png", root, progress=False)
    assert tree(root) == before



def test_a_grayscale_model_predicts_rgb_and_rgba_images_converted_to_gray(pairs, tmp_path):
    from pipeline.inference.predict import predict

    _, _, run = pairs
    colour = np.zeros((18, 14, 3), np.uint8)
    colour[3:15, 2:12] = [200, 40, 90]
    write_image(tmp_path / "in" / "rgb.png", colour)
    write_image(tmp_path / "in" / "rgba.png", np.dstack([colour, np.full((18, 14), 255, np.uint8)]))
    for name in ("rgb", "rgba"):
        predict(run, tmp_path / "in" / f"{name}.png", tmp_path / name, progress=False)
        _check_mask(tmp_path / name / "masks" / f"{name}.png", (18, 14))


# ----------------------------------------------------------------------------- exact write-back


class _Oracle:
    """An inferer returning the one-hot ground truth of the case being prepared (set by the patched ``prepare_case``)."""

    def __init__(self, inferer: Any) -> None:
        self.inner, self.label = inferer, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, network: Any, image: Any, device: Any = "cpu") -> Any:
        import torch

        label = torch.as_tensor(self.label.astype(np.int64))
        return torch.nn.functional.one_hot(label, self.inner.task.num_classes).movedim(-1, 0).float()


def _oracle_model(run: Path, datalist: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The run's model predicting each case's ground truth (read with the case's mask), without post-processing."""
    import pipeline.inference.model as model_module
    from pipeline.datasets.datalist import load_datalist

    labelled = {record.case_id: record for record in load_datalist(datalist).cases("all")}
    model = load_model(run)
    model.inferer = oracle = _Oracle(model.inferer)
    model.postprocessing = PostProcessing(task=model.task)
    prepare = model_module.prepare_case

    def prepare_with_label(record: Any, *args: Any, **kwargs: Any) -> Any:
        prepared = prepare(labelled[record.case_id], *args, **kwargs)
        oracle.label = prepared.label
        return prepared

    monkeypatch.setattr(model_module, "prepare_case", prepare_with_label)
    return model


def test_the_write_back_of_kaggle_masks_is_exact(kaggle, tmp_path, monkeypatch):
    from pipeline.inference.predict import predict

    root, datalist, run = kaggle
    predict(_oracle_model(run, datalist, monkeypatch), root, tmp_path / "out", progress=False)
    for name, slices in KAGGLE_PATIENTS:
        for n in range(1, slices + 1):
            assert (tmp_path / "out" / name / f"{name}_{n}_mask.tif").read_bytes() == (root / name / f"{name}_{n}_mask.tif").read_bytes()


def test_the_write_back_of_padded_2d_masks_is_exact(pairs, tmp_path, monkeypatch):
    from pipeline.inference.predict import predict

    root, datalist, run = pairs
    predict(_oracle_model(run, datalist, monkeypatch), root, tmp_path / "out", progress=False)
    for name in "abcd":
        assert (tmp_path / "out" / "masks" / f"{name}.png").read_bytes() == (root / "masks" / f"{name}.png").read_bytes()


# ----------------------------------------------------------------------------- evaluation


def test_kaggle_evaluation_scores_each_patients_volume_in_voxels(kaggle, tmp_path):
    from pipeline.evaluation.evaluate import evaluate
    from pipeline.evaluation.metrics import metric_columns
    from pipeline.tasks.task import KAGGLE_LGG

    _, datalist, run = kaggle
    result = evaluate(run, datalist, tmp_path, split="all", progress=False, echo=False)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame.columns) == ["case_id", *metric_columns(task=KAGGLE_LGG)]
    assert list(frame.columns)[1:] == [f"{m}_tumour" for m in ("dice", "hd95_voxels", "sensitivity", "specificity", "precision", "iou", "pred_voxels", "true_voxels")]
    assert sorted(frame["case_id"]) == [n for n, _ in KAGGLE_PATIENTS]
    masks = {n: sum(int(np.count_nonzero(read_image_2d(p))) for p in (Path(datalist).parent / "kaggle_3m" / n).glob("*_mask.tif")) for n, _ in KAGGLE_PATIENTS}
    assert dict(zip(frame["case_id"], frame["true_voxels_tumour"])) == masks
    assert result.summary["metric_set"] == "volume-voxels" and "voxels" in result.summary["hd95_definition"]
    assert set(result.summary["plots"]) >= {"dice_distribution", "dice_histogram"}
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == [f"{n}.png" for n, _ in KAGGLE_PATIENTS]
    assert (tmp_path / "predictions" / KAGGLE_PATIENTS[0][0] / f"{KAGGLE_PATIENTS[0][0]}_1_mask.tif").is_file()
    assert "per-volume Dice; HD95 in voxels" in result.table


def test_2d_evaluation_scores_one_row_per_image(pairs, tmp_path):
    from pipeline.evaluation.evaluate import evaluate

    _, datalist, run = pairs
    result = evaluate(run, datalist, tmp_path, split="all", progress=False, echo=False)
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert list(frame.columns)[1:] == [f"{m}_tumour" for m in ("dice", "iou", "accuracy", "sensitivity", "specificity", "precision", "pred_pixels", "true_pixels")]
    assert sorted(frame["case_id"]) == ["a", "b", "c", "d"] and result.summary["metric_set"] == "image"
    assert ((frame["accuracy_tumour"] >= 0) & (frame["accuracy_tumour"] <= 1)).all()
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert sorted(p.name for p in (tmp_path / "predictions" / "masks").iterdir()) == ["a.png", "b.png", "c.png", "d.png"]


# ----------------------------------------------------------------------------- training modes


def test_25d_training_on_one_slice_images_and_3d_on_kaggle_patients_predict(tmp_path):
    from pipeline.inference.predict import predict

    root = image_pairs(tmp_path / "pairs", names=("a", "b", "c"), sizes=IMAGE_SIZES[:3])
    _, run = _train(root, tmp_path / "p", mode="2.5d")
    predict(run, root, tmp_path / "out2", progress=False)
    _check_mask(tmp_path / "out2" / "masks" / "c.png", IMAGE_SIZES[2])
    lgg = kaggle_root(tmp_path / "lgg", (("TCGA_AB_0001_20000101", 8), ("TCGA_AB_0002_20000102", 8)))
    _, run = _train(lgg, tmp_path / "k", mode="3d")
    predict(run, lgg / "TCGA_AB_0002_20000102", tmp_path / "out3", progress=False)
    assert len(list((tmp_path / "out3" / "TCGA_AB_0002_20000102").iterdir())) == 8


# ----------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_kaggle_patients_train_and_one_held_out_patient_is_predicted(kaggle_lgg_dir, tmp_path):
    from pipeline.datasets.kaggle_lgg import list_slices
    from pipeline.inference.predict import predict

    patients = sorted(p for p in kaggle_lgg_dir.iterdir() if p.is_dir())
    train_root = tmp_path / "train"
    train_root.mkdir()
    for patient in patients[:3]:
        (train_root / patient.name).symlink_to(patient, target_is_directory=True)
    _, run = _train(train_root, tmp_path / "work")
    held_out = patients[-1]
    predict(run, held_out, tmp_path / "out", progress=False)
    slices, _ = list_slices(held_out)
    written = sorted((tmp_path / "out" / held_out.name).iterdir())
    assert [p.name for p in written] == sorted(f"{held_out.name}_{s.number}_mask.tif" for s in slices)
    for path in written:
        _check_mask(path, (256, 256))


def test_a_written_mask_of_another_size_is_refused_on_reading_back(tmp_path):
    from pipeline.inference.writers import read_planar_masks

    first = write_image(tmp_path / "1_mask.tif", np.zeros((4, 4), np.uint8))
    second = write_image(tmp_path / "2_mask.tif", np.zeros((4, 5), np.uint8))
    with pytest.raises(InputError, match="2_mask.tif"):
        read_planar_masks([first, second])


# ----------------------------------------------------------------------------- bundle commands


@pytest.mark.slow
def test_bundle_commands_train_evaluate_and_infer_a_kaggle_task(kaggle, tmp_path):
    """`python -m monai.bundle run training | evaluating | inference` on a Kaggle data list: the run's inference.json carries the task."""
    import subprocess
    import sys

    root, datalist, _ = kaggle
    repo = Path(__file__).resolve().parents[2]
    configs = repo / "bundles" / "brats_segmentation" / "configs"

    def bundle(*args: str) -> None:
        completed = subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, cwd=repo, timeout=600)
        assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]

    tiny = [item for setting in (*TINY_NETWORK_AND_BUDGET, "progress=False", "epochs=1", "mode=2d") for item in (f"--{setting.split('=')[0]}", setting.split("=", 1)[1])]
    run = tmp_path / "run"
    bundle("run", "training", "--workflow_name", "pipeline.training.workflow.TrainingWorkflow", "--config_file", str(configs / "train.yaml"),
           "--dataset_dir", str(datalist.parent / "cache"), "--datalist", str(datalist), "--output_dir", str(run), *tiny)  # fmt: skip
    config = json.loads((run / "inference.json").read_text())
    assert config["task"]["name"] == "kaggle-lgg" and config["postprocessing"]["keep_largest"] == ["tumour"]
    bundle("run", "evaluating", "--config_file", f"['{run / 'inference.json'}','{configs / 'evaluate.yaml'}']",
           "--datalist", str(datalist), "--split", "all", "--output_dir", str(tmp_path / "eval"), "--progress", "False")  # fmt: skip
    assert len(pd.read_csv(tmp_path / "eval" / "metrics.csv")) == len(KAGGLE_PATIENTS)
    name, slices = KAGGLE_PATIENTS[0]
    bundle("run", "inference", "--config_file", str(run / "inference.json"), "--input", str(root / name), "--output_dir", str(tmp_path / "pred"), "--progress", "False")
    assert len(list((tmp_path / "pred" / name).glob("*_mask.tif"))) == slices


def test_probabilities_of_2d_images_are_refused_in_one_line(pairs, tmp_path):
    from pipeline.core.errors import ConfigError
    from pipeline.inference.predict import predict

    root, _, run = pairs
    with pytest.raises(ConfigError, match="masks only"):
        predict(run, root, tmp_path / "out", probabilities=True, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.real_data
def test_real_png_pairs_train_and_a_held_out_image_is_predicted_at_its_size(png_pairs_dir, tmp_path):
    from pipeline.inference.predict import predict

    names = sorted(p.stem for p in (png_pairs_dir / "images").iterdir())[:5]
    root = tmp_path / "pairs"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
        for name in names[:4]:
            (root / folder / f"{name}.png").symlink_to(png_pairs_dir / folder / f"{name}.png")
    _, run = _train(root, tmp_path / "work")
    held_out = png_pairs_dir / "images" / f"{names[4]}.png"
    predict(run, held_out, tmp_path / "out", progress=False)
    _check_mask(tmp_path / "out" / "masks" / f"{names[4]}.png", read_image_2d(held_out).shape[:2])


# ----------------------------------------------------------------------------- resized images

RESIZED_SIZES = {"wide": (530, 700), "small": (60, 90), "tall": (120, 80), "square": (64, 64)}


def _blob_pairs(root: Path) -> Path:
    """Grayscale images of :data:`RESIZED_SIZES` (rows, columns), each with an elliptic tumour blob as its 0/255 mask."""
    for index, (name, (rows, columns)) in enumerate(RESIZED_SIZES.items()):
        r, c = np.ogrid[:rows, :columns]
        blob = ((r - rows * 0.45) / (rows * 0.2)) ** 2 + ((c - columns * 0.55) / (columns * 0.25)) ** 2 <= 1
        image = np.random.default_rng(index).integers(20, 120, (rows, columns)).astype(np.uint8)
        image[blob] = 220
        write_image(root / "images" / f"{name}.png", image)
        write_image(root / "masks" / f"{name}.png", (blob * 255).astype(np.uint8))
    return root


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Images of four odd sizes under a task resizing them to 64x64, their data list and a tiny 2D run."""
    from pipeline.tasks.task import IMAGE_MASK_2D, task_from_dict

    work = tmp_path_factory.mktemp("resized")
    task = task_from_dict({**IMAGE_MASK_2D.to_dict(), "name": "image-mask-2d-64", "planar_size": [64, 64], "planar_fit": "resize"})
    datalist, run = _train(_blob_pairs(work / "pairs"), work, task=task)
    return work / "pairs", datalist, run


def test_resized_images_train_and_every_prediction_comes_back_at_its_own_size_and_name(resized, tmp_path):
    from pipeline.preprocessing.cache import read_meta
    from pipeline.inference.predict import predict

    root, datalist, run = resized
    meta = read_meta(datalist.parent / "cache", "wide")
    assert meta["shape"][2:] == [64, 64] and meta["resizing"]["size"] == [64, 64] and "padding" not in meta
    assert meta["original"]["shape"][:2] == [530, 700] and meta["task"]["planar_fit"] == "resize"
    predict(run, root, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == sorted(f"{name}.png" for name in RESIZED_SIZES)
    for name, size in RESIZED_SIZES.items():
        _check_mask(tmp_path / "out" / "masks" / f"{name}.png", size)


def test_the_ground_truth_comes_back_close_through_the_resizing(resized, tmp_path, monkeypatch):
    from pipeline.evaluation.metrics import structure_metrics
    from pipeline.inference.predict import predict

    root, datalist, run = resized
    predict(_oracle_model(run, datalist, monkeypatch), root, tmp_path / "out", progress=False)
    for name, size in RESIZED_SIZES.items():
        written, truth = _check_mask(tmp_path / "out" / "masks" / f"{name}.png", size) > 0, read_image_2d(root / "masks" / f"{name}.png") > 0
        assert structure_metrics(written, truth, (1.0, 1.0), "image")["dice"] > 0.9, name


def test_a_padding_task_refuses_an_image_larger_than_its_size_and_a_resizing_one_reads_it(tmp_path):
    from pipeline.datasets.image_folders import discover_image_folders
    from pipeline.datasets.case_checks import validate_case
    from pipeline.tasks.task import IMAGE_MASK_2D, task_from_dict

    root = _blob_pairs(tmp_path / "pairs")
    wide = next(r for r in discover_image_folders(root, IMAGE_MASK_2D).records if r.case_id == "wide")
    (problem,) = validate_case(wide, task=IMAGE_MASK_2D)
    assert "wide.png: image 530x700 is larger than task image-mask-2d's planar_size 512x512" in problem
    assert validate_case(wide, task=task_from_dict({**IMAGE_MASK_2D.to_dict(), "planar_fit": "resize"})) == []
