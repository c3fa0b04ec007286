"""The synthetic cohort (pipeline.synth.cohort): BraTS 2021 layout and headers, plausible anatomy, tumours and contrasts, determinism, resume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from pipeline.cli.main import main
from pipeline.core.errors import ConfigError
from pipeline.tasks.modalities import MODALITIES
from pipeline.synth import GRIDS, LAYOUTS, case_files, generate_cohort
from pipeline.synth.cohort import brats_image

COHORT_CASES = 10
SUFFIXES = (*MODALITIES, "seg")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Ten tiny cases of seed 0 (read-only)."""
    return generate_cohort(tmp_path_factory.mktemp("synth") / "cohort", cases=COHORT_CASES, seed=0, size="tiny", progress=False)


@pytest.fixture(scope="module")
def volumes(cohort: list[Path]) -> list[dict[str, np.ndarray]]:
    """Voxels of every case of :func:`cohort`, by file suffix."""
    return [{suffix: np.asarray(nib.load(path).dataobj) for suffix, path in case_files(folder).items()} for folder in cohort]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {suffix: path.read_bytes() for suffix, path in case_files(folder).items()}


def test_writes_brats2021_layout(cohort: list[Path]) -> None:
    assert [folder.name for folder in cohort] == [f"BraTS2021_{index:05d}" for index in range(COHORT_CASES)]
    root = cohort[0].parent
    assert sorted(path.name for path in root.iterdir()) == [folder.name for folder in cohort]
    for folder in cohort:
        assert sorted(path.name for path in folder.iterdir()) == sorted(f"{folder.name}_{suffix}.nii.gz" for suffix in SUFFIXES)


def test_headers_follow_the_brats_convention(cohort: list[Path]) -> None:
    expected_affine = np.array([[-5.0, 0, 0, 0], [0, -5.0, 0, 47 * 5.0], [0, 0, 5.0, 0], [0, 0, 0, 1]])
    for folder in cohort[:3]:
        for suffix, path in case_files(folder).items():
            image = nib.load(path)
            assert image.shape == (48, 48, 32)
            assert image.get_data_dtype() == (np.uint8 if suffix == "seg" else np.int16)
            np.testing.assert_array_equal(image.affine, expected_affine)
            qform, qform_code = image.get_qform(coded=True)
            sform, sform_code = image.get_sform(coded=True)
            assert (int(qform_code), int(sform_code)) == (1, 1)
            np.testing.assert_allclose(qform, expected_affine, atol=1e-5)
            np.testing.assert_array_equal(sform, expected_affine)
            assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
            assert image.header.get_xyzt_units()[0] == "mm"
            assert image.header.get_zooms() == (5.0, 5.0, 5.0)


@pytest.mark.real_data
def test_full_size_header_matches_a_real_brats_case(real_brats_dir: Path) -> None:
    for suffix, dtype in (("t1", np.int16), ("seg", np.uint8)):
        real = nib.load(real_brats_dir / "BraTS2021_00006" / f"BraTS2021_00006_{suffix}.nii.gz")
        ours = brats_image(np.zeros(GRIDS["full"].shape, dtype=dtype), GRIDS["full"])
        assert ours.shape == real.shape
        assert ours.get_data_dtype() == real.get_data_dtype()
        np.testing.assert_array_equal(ours.affine, real.affine)
        np.testing.assert_allclose(ours.get_qform(), real.get_qform(), atol=1e-5)
        assert nib.aff2axcodes(ours.affine) == nib.aff2axcodes(real.affine)
        assert ours.header.get_zooms() == real.header.get_zooms()
        assert ours.header.get_xyzt_units() == real.header.get_xyzt_units()


def test_labels_are_brats_2017_2021(volumes: list[dict[str, np.ndarray]]) -> None:
    for case in volumes:
        labels = set(np.unique(case["seg"]).tolist())
        assert labels <= {0, 1, 2, 4}
        assert {0, 2} <= labels  # every case has a tumour with edema
        assert labels & {1, 4}  # ... and a tumour core


def test_background_is_exactly_zero_outside_the_brain(volumes: list[dict[str, np.ndarray]]) -> None:
    for case in volumes:
        brain = case["t1"] != 0
        assert 0.08 < brain.mean() < 0.4
        for modality in MODALITIES:
            np.testing.assert_array_equal(case[modality] != 0, brain)  # one brain mask shared by all modalities
            assert case[modality].min() == 0
        assert not case["seg"][~brain].any()  # the tumour lies inside the brain
        for axis in range(2):  # a skull-stripped brain does not touch the in-plane borders
            assert not np.take(brain, [0, -1], axis=axis).any()


def test_tumour_core_is_surrounded_by_edema_and_necrosis_by_enhancement(volumes: list[dict[str, np.ndarray]]) -> None:
    core_border, necrosis_border = [], []
    for case in volumes:
        seg, brain = case["seg"], case["t1"] != 0
        core = np.isin(seg, (1, 4))
        core_border.append(seg[ndimage.binary_dilation(core) & ~core & brain])
        if (seg == 4).any():
            necrosis = seg == 1
            necrosis_border.append(seg[ndimage.binary_dilation(necrosis) & ~necrosis & (seg > 0)])
    assert (np.concatenate(core_border) == 2).mean() > 0.6
    assert (np.concatenate(necrosis_border) == 4).mean() > 0.7


def test_some_cases_have_no_enhancing_tumour(volumes: list[dict[str, np.ndarray]]) -> None:
    enhancing = [bool((case["seg"] == 4).any()) for case in volumes]
    assert 1 <= enhancing.count(False) <= COHORT_CASES // 2
    for case, has_et in zip(volumes, enhancing):
        if not has_et:
            assert (case["seg"] == 1).any()  # the core is labelled non-enhancing


def test_tumour_contrasts_are_visible(volumes: list[dict[str, np.ndarray]]) -> None:
    for case in volumes:
        seg = case["seg"]
        normal = (case["t1"] != 0) & (seg == 0)

        def ratio(modality: str, label: int) -> float:
            return float(case[modality][seg == label].mean() / case[modality][normal].mean())

        assert ratio("flair", 2) > 1.4  # edema bright on FLAIR
        assert ratio("t2", 2) > 1.2  # ... and on T2
        if (seg == 4).any():
            assert ratio("t1ce", 4) > 1.4  # enhancing rim bright on T1ce
            assert ratio("t1ce", 4) > 1.4 * ratio("t1", 4)  # ... because of the contrast agent
            if (seg == 1).sum() >= 5:
                assert ratio("t1", 1) < 0.8  # necrosis dark on T1
                assert ratio("t1ce", 1) < 0.6 * ratio("t1ce", 4)  # ... dark inside the bright rim on T1ce
                assert ratio("t2", 1) > 1.2  # ... bright on T2


def test_normal_tissue_contrasts_are_plausible(volumes: list[dict[str, np.ndarray]]) -> None:
    for case in volumes:
        normal = (case["t1"] != 0) & (case["seg"] == 0)
        t1, t2, flair = (case[m][normal].astype(np.float64) for m in ("t1", "t2", "flair"))
        # T1 orders WM > GM > CSF and T2 the reverse; FLAIR darkens CSF like T1 does.
        assert np.corrcoef(t1, t2)[0, 1] < -0.7
        assert np.corrcoef(flair, t2)[0, 1] < -0.2


def test_same_seed_gives_identical_files_whatever_the_cohort_size(cohort: list[Path], tmp_path: Path) -> None:
    again = generate_cohort(tmp_path / "again", cases=2, seed=0, size="tiny", progress=False)
    for original, repeated in zip(cohort, again):
        assert _bytes(original) == _bytes(repeated)


def test_another_seed_gives_other_cases(cohort: list[Path], tmp_path: Path) -> None:
    (other,) = generate_cohort(tmp_path / "other", cases=1, seed=1, size="tiny", progress=False)
    for suffix in ("seg", "t1"):
        ours, theirs = (np.asarray(nib.load(case_files(folder)[suffix]).dataobj) for folder in (other, cohort[0]))
        assert not np.array_equal(ours, theirs)


def test_sizes_show_the_same_tumour() -> None:
    from pipeline.synth import synthesize_case

    centroids = []
    for size in ("tiny", "small"):
        grid = GRIDS[size]
        seg = synthesize_case(0, 3, grid)["seg"]
        centroid = np.argwhere(seg > 0).mean(axis=0)
        centroids.append(grid.affine[:3, :3] @ centroid + grid.affine[:3, 3])
    assert np.linalg.norm(centroids[0] - centroids[1]) < 5.0  # mm


def test_rerun_skips_finished_cases_and_redoes_broken_ones(cohort: list[Path], tmp_path: Path) -> None:
    root = tmp_path / "resume"
    folders = generate_cohort(root, cases=2, seed=0, size="tiny", progress=False)
    stamps = {path: path.stat().st_mtime_ns for folder in folders for path in case_files(folder).values()}
    assert generate_cohort(root, cases=2, seed=0, size="tiny", progress=False) == folders
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps

    case_files(folders[1])["seg"].unlink()  # interrupted before its last file
    case_files(folders[0])["t2"].write_bytes(b"not a nifti")  # damaged
    generate_cohort(root, cases=2, seed=0, size="tiny", progress=False)
    for folder, original in zip(folders, cohort):
        assert _bytes(folder) == _bytes(original)
    assert not list(root.rglob("*.tmp*"))  # atomic writes leave no temporary files


def test_refuses_to_mix_sizes_in_one_folder(tmp_path: Path) -> None:
    generate_cohort(tmp_path, cases=1, seed=0, size="tiny", progress=False)
    with pytest.raises(ConfigError, match="shape"):
        generate_cohort(tmp_path, cases=1, seed=0, size="small", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "problem"), [({"size": "huge"}, "unknown size"), ({"cases": 0}, "between"), ({"seed": -1}, "non-negative")]
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, problem: str) -> None:
    arguments = {"cases": 1, "seed": 0, "size": "tiny", **kwargs}
    with pytest.raises(ConfigError, match=problem):
        generate_cohort(tmp_path, progress=False, **arguments)
    assert not list(tmp_path.iterdir())


def test_cli_writes_the_same_cohort(cohort: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["synth", "--out", str(out), "--cases", "2", "--seed", "0", "--size", "tiny", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 synthetic cases" in result.output
    for original in cohort[:2]:
        assert _bytes(out / original.name) == _bytes(original)


def test_cli_reports_a_size_clash_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["synth", "--out", str(tmp_path), "--cases", "1", "--size", "tiny", "--no-progress"]).exit_code == 0
    result = runner.invoke(main, ["synth", "--out", str(tmp_path), "--cases", "1", "--size", "small", "--no-progress"])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "shape (48, 48, 32)" in result.output
    assert runner.invoke(main, ["synth", "--out", str(tmp_path), "--size", "huge"]).exit_code == 2


# ----------------------------------------------------------------------------- other tasks' layouts


@pytest.fixture(scope="module")
def task_cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Four tiny cases of seed 0 in each non-default layout (read-only)."""
    root = tmp_path_factory.mktemp("tasks")
    return {task: generate_cohort(root / task, cases=4, seed=0, size="tiny", progress=False, task=task) for task in LAYOUTS if task != "brats-glioma"}


def _voxels(folder: Path, task: str) -> dict[str, np.ndarray]:
    return {key: np.asarray(nib.load(path).dataobj) for key, path in case_files(folder, task).items()}


@pytest.mark.parametrize(
    ("task", "names", "labels"),
    [
        ("brats2024-post-treatment", ["BraTS-GLI-00000-000-seg.nii.gz", "BraTS-GLI-00000-000-t1c.nii.gz", "BraTS-GLI-00000-000-t1n.nii.gz", "BraTS-GLI-00000-000-t2f.nii.gz", "BraTS-GLI-00000-000-t2w.nii.gz"], {0, 1, 2, 3, 4}),
        ("brats2024-ped", ["BraTS-PED-00000-000-seg.nii.gz", "BraTS-PED-00000-000-t1c.nii.gz", "BraTS-PED-00000-000-t1n.nii.gz", "BraTS-PED-00000-000-t2f.nii.gz", "BraTS-PED-00000-000-t2w.nii.gz"], {0, 1, 2, 3, 4}),
        ("meningioma-rt", ["BraTS-MEN-RT-0000-1_gtv.nii.gz", "BraTS-MEN-RT-0000-1_t1c.nii.gz"], {0, 1}),
        ("whole-tumour", [f"BraTS2021_00000_{suffix}.nii.gz" for suffix in sorted(SUFFIXES)], {0, 1, 2, 4}),
    ],
)
def test_each_task_writes_its_release_layout_and_labels(task_cohorts: dict[str, list[Path]], task: str, names: list[str], labels: set[int]) -> None:
    folders = task_cohorts[task]
    assert sorted(p.name for p in folders[0].iterdir()) == names
    seen = set()
    for folder in folders:
        seen |= set(np.unique(_voxels(folder, task)["seg"]).tolist())
    assert seen == labels


def test_every_layout_draws_the_same_brains_and_tumours(cohort: list[Path], task_cohorts: dict[str, list[Path]]) -> None:
    for index, glioma_folder in enumerate(cohort[:4]):
        glioma = _voxels(glioma_folder, "brats-glioma")
        assert _bytes(task_cohorts["whole-tumour"][index]) == _bytes(glioma_folder)
        men_rt = _voxels(task_cohorts["meningioma-rt"][index], "meningioma-rt")
        assert np.array_equal(men_rt["t1ce"], glioma["t1ce"]) and np.array_equal(men_rt["seg"], np.isin(glioma["seg"], (1, 4)))
        ped = _voxels(task_cohorts["brats2024-ped"][index], "brats2024-ped")
        outside_cyst = ped["seg"] != 3
        assert np.array_equal(ped["seg"][outside_cyst], np.select([glioma["seg"] == 4, glioma["seg"] == 1, glioma["seg"] == 2], [1, 2, 4], 0)[outside_cyst])


@pytest.mark.parametrize(("task", "label"), [("brats2024-post-treatment", 4), ("brats2024-ped", 3)])
def test_the_cavity_and_the_cyst_look_like_fluid(task: str, label: int) -> None:
    """Dark on T1, T1ce and FLAIR, bright on T2, as CSF is (at the small size: the tiny one blurs a small cyst); the cavity lies beside the tumour."""
    from pipeline.synth import synthesize_case

    for index in range(4):
        case = synthesize_case(0, index, GRIDS["small"], task)
        seg = case["seg"]
        fluid, normal = seg == label, (case["t1"] != 0) & (seg == 0)
        assert fluid.sum() >= 10, index
        for modality, low, high in (("t1", 0, 0.75), ("t1ce", 0, 0.75), ("flair", 0, 0.75), ("t2", 1.3, np.inf)):
            ratio = case[modality][fluid].mean() / case[modality][normal].mean()
            assert low < ratio < high, (index, modality, ratio)
        if task == "brats2024-post-treatment":
            assert (seg[ndimage.binary_dilation(fluid, iterations=2) & ~fluid] > 0).any()  # next to the tumour


def test_a_task_cohort_is_deterministic(task_cohorts: dict[str, list[Path]], tmp_path: Path) -> None:
    (again,) = generate_cohort(tmp_path, cases=1, seed=0, size="tiny", progress=False, task="brats2024-post-treatment")
    assert {k: p.read_bytes() for k, p in case_files(again, "brats2024-post-treatment").items()} == {
        k: p.read_bytes() for k, p in case_files(task_cohorts["brats2024-post-treatment"][0], "brats2024-post-treatment").items()
    }


def test_cli_synth_task(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--cases", "1", "--size", "tiny", "--task", "meningioma-rt", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "1 synthetic cases (tiny, seed 0, meningioma-rt)" in result.output
    assert sorted(p.name for p in (tmp_path / "BraTS-MEN-RT-0000-1").iterdir()) == ["BraTS-MEN-RT-0000-1_gtv.nii.gz", "BraTS-MEN-RT-0000-1_t1c.nii.gz"]
    assert CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--task", "nope"]).exit_code == 2
