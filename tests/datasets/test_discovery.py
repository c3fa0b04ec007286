import pytest
from case_writers import MSD_DATASET_JSON, brain, tumour, write_nifti

from pipeline.datasets import MIXED_RELEASE, case_from_files, discover, discover_case, identify_release
from pipeline.datasets import validate_case
from pipeline.core.errors import InputError
from pipeline.tasks.modalities import MODALITIES
from pipeline.tasks.task import TASKS, resolve_task


def _modality_of(path, separator):
    return path.name.split(".nii")[0].rsplit(separator, 1)[1]


@pytest.mark.parametrize(
    "release, case_ids",
    [
        ("brats2017", ["Brats17_2013_2_1", "Brats17_TCIA_130_1"]),
        ("brats2018", ["Brats18_2013_2_1", "Brats18_CBICA_AAB_1"]),
        ("brats2019", ["BraTS19_2013_2_1", "BraTS19_TMC_06290_1"]),
    ],
)
def test_brats_2017_to_2019_with_hgg_lgg_folders(tmp_path, cases, release, case_ids):
    cases.legacy(tmp_path / "HGG", case_ids[0])
    cases.legacy(tmp_path / "LGG", case_ids[1], ext=".nii")
    dataset = discover(tmp_path)
    assert dataset.release == release
    assert dataset.label_convention == "brats2017"
    assert [r.case_id for r in dataset.records] == sorted(case_ids)
    for record in dataset.records:
        assert [_modality_of(p, "_") for p in record.images] == list(MODALITIES)
        assert record.label is not None and record.label.name.startswith(f"{record.case_id}_seg.nii")
        assert record.label_convention == "brats2017" and record.split == "all"
    assert dataset.warnings == [] and dataset.problems == {}


def test_brats2020_uncompressed_and_the_misnamed_seg_of_case_355(tmp_path, cases):
    cases.legacy(tmp_path, "BraTS20_Training_001", ext=".nii")
    folder = cases.legacy(tmp_path, "BraTS20_Training_355", ext=".nii")
    (folder / "BraTS20_Training_355_seg.nii").rename(folder / "W39_1998.09.19_Segm.nii")
    cases.legacy(tmp_path, "BraTS20_Validation_001", labels=None)
    dataset = discover(tmp_path)
    assert dataset.release == "brats2020"
    by_id = {r.case_id: r for r in dataset.records}
    assert by_id["BraTS20_Training_355"].label == folder / "W39_1998.09.19_Segm.nii"
    assert by_id["BraTS20_Training_001"].images[0].name == "BraTS20_Training_001_t1.nii"
    assert by_id["BraTS20_Validation_001"].label is None and by_id["BraTS20_Validation_001"].split == "unlabelled"
    assert len(dataset.warnings) == 1
    assert dataset.warnings[0].startswith(f"{folder / 'W39_1998.09.19_Segm.nii'}: misnamed segmentation")


def test_the_misnamed_seg_name_is_only_taken_in_brats2020(tmp_path, cases):
    folder = cases.legacy(tmp_path, "BraTS2021_00355", labels=None)
    write_nifti(folder / "W39_1998.09.19_Segm.nii", brain(0))
    dataset = discover(tmp_path)
    assert dataset.records[0].label is None
    assert dataset.warnings == [f"{folder / 'W39_1998.09.19_Segm.nii'}: not one of BraTS2021_00355's modality or seg files; ignored"]


def test_brats2021_non_contiguous_ids_and_unlabelled_case(legacy_root):
    dataset = discover(legacy_root)
    assert dataset.release == "brats2021"
    assert len(dataset.records) == 11
    assert [r.case_id for r in dataset.records][:3] == ["BraTS2021_00000", "BraTS2021_00003", "BraTS2021_00006"]
    unlabelled = [r for r in dataset.records if r.label is None]
    assert [r.case_id for r in unlabelled] == ["BraTS2021_00100"]


@pytest.mark.parametrize("sub_challenge", ["GLI", "MEN", "MET", "SSA"])
def test_brats2023_sub_challenges(tmp_path, cases, sub_challenge):
    cases.brats2023(tmp_path, f"BraTS-{sub_challenge}-00002-000")
    cases.brats2023(tmp_path, f"BraTS-{sub_challenge}-00002-001", labels=None)
    dataset = discover(tmp_path)
    assert dataset.release == f"brats2023-{sub_challenge.lower()}"
    assert dataset.label_convention == "brats2023"
    labelled, unlabelled = dataset.records
    assert [_modality_of(p, "-") for p in labelled.images] == ["t1n", "t1c", "t2w", "t2f"]
    assert labelled.label.name == f"BraTS-{sub_challenge}-00002-000-seg.nii.gz"
    assert unlabelled.label is None


def test_brats_ped_segmentations_are_refused_but_unlabelled_ped_cases_are_kept(tmp_path, cases):
    cases.brats2023(tmp_path, "BraTS-PED-00001-000")
    cases.brats2023(tmp_path, "BraTS-PED-00002-000", labels=None)
    dataset = discover(tmp_path)
    seg = tmp_path / "BraTS-PED-00001-000" / "BraTS-PED-00001-000-seg.nii.gz"
    assert list(dataset.problems) == ["BraTS-PED-00001-000"]
    (line,) = dataset.problems["BraTS-PED-00001-000"]
    assert line.startswith(f"{seg}: BraTS-PED segmentations are not read") and "2024 uses 1 ET, 2 NETC, 3 CC, 4 ED" in line


def test_brats_ped_segmentations_are_read_with_the_2024_scheme_under_its_task(tmp_path, cases):
    cases.brats2023(tmp_path, "BraTS-PED-00001-000", labels=(0, 1, 2, 3, 4))
    cases.brats2023(tmp_path, "BraTS-PED-00002-000", labels=None)
    dataset = discover(tmp_path, TASKS["brats2024-ped"])
    assert not dataset.problems and dataset.release == "brats2023-ped" and dataset.label_convention == "brats2024-ped"
    labelled, unlabelled = dataset.records
    assert labelled.label_convention == unlabelled.label_convention == "brats2024-ped"
    assert validate_case(labelled, task=TASKS["brats2024-ped"]) == []
    (line,) = discover(tmp_path).problems["BraTS-PED-00001-000"]  # without the task: refused, naming the task that reads them
    assert line.endswith("for the 2024 scheme pass --task brats2024-ped")


def _men_rt_case(root, case_id="BraTS-MEN-RT-0000-1", labels=(0, 1)):
    folder = root / case_id
    write_nifti(folder / f"{case_id}_t1c.nii.gz", brain(0))
    write_nifti(folder / f"{case_id}_gtv.nii.gz", tumour(labels))
    return folder


def test_meningioma_rt_cases_hold_t1c_and_the_gtv(tmp_path):
    folder = _men_rt_case(tmp_path)
    task = TASKS["meningioma-rt"]
    dataset = discover(tmp_path, task)
    assert dataset.release == "brats2024-men-rt" and dataset.label_convention == "brats2024-men-rt" and not dataset.warnings
    (record,) = dataset.records
    assert record.images == (folder / f"{folder.name}_t1c.nii.gz",) and record.label == folder / f"{folder.name}_gtv.nii.gz"
    assert record.channels == ("t1ce",) and validate_case(record, task=task) == []
    (glioma,) = discover(tmp_path).records  # the glioma task needs four modalities and its own labels
    problems = validate_case(glioma)
    assert [line.split(": ", 1)[1] for line in problems[:3]] == ["t1 image missing", "t2 image missing", "flair image missing"]
    assert problems[3] == f"{record.label}: task brats-glioma does not read brats2024-men-rt labels (it reads brats2017, brats2023, msd, internal); --task meningioma-rt reads them"


def test_a_task_on_some_channels_finds_only_their_files(legacy_root):
    task = resolve_task("whole-tumour", ["flair", "t2"])
    dataset = discover(legacy_root, task)
    record = dataset.records[0]
    assert [p.name for p in record.images] == [f"{record.case_id}_flair.nii.gz", f"{record.case_id}_t2.nii.gz"]
    assert record.channels == ("flair", "t2") and not dataset.warnings  # the unused modalities are no stray files
    (legacy_root / record.case_id / f"{record.case_id}_t1.nii.gz").unlink()  # a channel the task does not use
    assert validate_case(discover(legacy_root, task).records[0], task=task) == []


def test_msd_task01(tmp_path, cases):
    root = cases.msd(tmp_path / "Task01_BrainTumour", train=(1, 2), test=(3,))
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    dataset = discover(root)
    assert dataset.release == "msd-task01" and dataset.label_convention == "msd"
    assert [r.case_id for r in dataset.records] == ["BRATS_001", "BRATS_002", "BRATS_003"]
    first, _, test = dataset.records
    assert first.images == (root / "imagesTr" / "BRATS_001.nii.gz",)
    assert first.label == root / "labelsTr" / "BRATS_001.nii.gz"
    assert first.channel_indices == (1, 2, 3, 0)  # t1, t1ce, t2, flair inside FLAIR, T1w, t1gd, T2w
    assert test.label is None and test.split == "unlabelled"
    assert dataset.warnings == [f"{root / 'imagesTr'}: 1 hidden file(s) ignored"]


def test_msd_found_inside_a_parent_folder(tmp_path, cases):
    cases.msd(tmp_path / "Task01_BrainTumour", train=(1,), test=())
    assert [r.case_id for r in discover(tmp_path).records] == ["BRATS_001"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"modality": {"0": "T1w", "1": "FLAIR", "2": "t1gd", "3": "T2w"}}, "does not match Task01's channel order"),
        ({"modality": {"0": "FLAIR", "1": "T1w", "2": "PD", "3": "T2w"}}, "'PD' is not one of Task01's"),
        ({"labels": {"0": "background", "1": "tumour"}}, "do not match Task01's"),
    ],
)
def test_msd_dataset_json_is_checked(tmp_path, cases, change, message):
    root = cases.msd(tmp_path, train=(1,), test=(), dataset_json={**MSD_DATASET_JSON, **change})
    with pytest.raises(InputError, match=message) as caught:
        discover(root)
    assert caught.value.where == str(root / "dataset.json")


def test_msd_without_dataset_json_is_an_error(tmp_path, cases):
    root = cases.msd(tmp_path, train=(1,), test=())
    (root / "dataset.json").unlink()
    with pytest.raises(InputError, match="missing: needed to check the channel order") as caught:
        discover(root)
    assert caught.value.where == str(root / "dataset.json")


def test_unknown_extra_files_are_warnings_only(legacy_root):
    (legacy_root / "name_mapping.csv").write_text("a,b\n")
    (legacy_root / "BraTS2021_00003" / "notes.txt").write_text("x")
    (legacy_root / "BraTS2021_00003" / ".DS_Store").write_text("x")  # operating-system metadata: not even a warning
    (legacy_root / "docs").mkdir()
    (legacy_root / "docs" / "readme.md").write_text("x")
    dataset = discover(legacy_root)
    assert len(dataset.records) == 11 and dataset.problems == {}
    assert sorted(dataset.warnings) == sorted(
        [
            f"{legacy_root / 'BraTS2021_00003' / 'notes.txt'}: not one of BraTS2021_00003's modality or seg files; ignored",
            f"{legacy_root / 'docs'}: holds no recognisable case; ignored",
            f"{legacy_root / 'name_mapping.csv'}: not a case file; ignored",
        ]
    )


def test_a_missing_modality_gets_its_expected_path(legacy_root):
    missing = legacy_root / "BraTS2021_00003" / "BraTS2021_00003_t1ce.nii.gz"
    missing.unlink()
    record = {r.case_id: r for r in discover(legacy_root).records}["BraTS2021_00003"]
    assert record.images[1] == missing and not missing.exists()


def test_a_modality_present_twice_is_a_problem(legacy_root):
    folder = legacy_root / "BraTS2021_00003"
    write_nifti(folder / "BraTS2021_00003_t2.nii", brain(0))
    dataset = discover(legacy_root)
    (line,) = dataset.problems["BraTS2021_00003"]
    assert line.startswith(str(folder)) and "t2 is present twice (BraTS2021_00003_t2.nii, BraTS2021_00003_t2.nii.gz)" in line


def test_duplicate_case_ids_are_an_error(tmp_path, cases):
    cases.legacy(tmp_path / "HGG", "Brats18_2013_2_1")
    cases.legacy(tmp_path / "LGG", "Brats18_2013_2_1")
    with pytest.raises(InputError, match=r"case id Brats18_2013_2_1 appears twice \(also at .*HGG/Brats18_2013_2_1\)") as caught:
        discover(tmp_path)
    assert caught.value.where == str(tmp_path / "LGG" / "Brats18_2013_2_1")


def test_empty_missing_and_unrecognisable_roots_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="data root not found"):
        discover(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="data root is empty"):
        discover(tmp_path / "empty")
    other = tmp_path / "other"
    (other / "patient_1").mkdir(parents=True)
    (other / "scan.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="no recognisable case found; expected case folders such as BraTS2021_00000") as caught:
        discover(other)
    assert caught.value.where == str(other)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="data root is not a folder"):
        discover(tmp_path / "file")


def test_a_single_case_folder_as_data_root_gets_a_hint(tmp_path, cases):
    folder = cases.legacy(tmp_path, "BraTS2021_00001")
    with pytest.raises(InputError, match="this looks like one case folder: pass the folder that holds the cases"):
        discover(folder)


def test_a_mixed_root_is_read_case_by_case(tmp_path, cases):
    cases.legacy(tmp_path, "BraTS2021_00006")
    cases.legacy(tmp_path, "Brats18_2013_2_1")
    cases.brats2023(tmp_path, "BraTS-GLI-00001-000", labels=None)
    dataset = discover(tmp_path)
    assert dataset.release == MIXED_RELEASE
    assert dataset.label_convention == "brats2017"  # the most common one
    assert {r.case_id: r.label_convention for r in dataset.records} == {
        "BraTS-GLI-00001-000": "brats2023",
        "BraTS2021_00006": "brats2017",
        "Brats18_2013_2_1": "brats2017",
    }
    assert dataset.releases == {"BraTS-GLI-00001-000": "brats2023-gli", "BraTS2021_00006": "brats2021", "Brats18_2013_2_1": "brats2018"}
    assert any("cases of several releases (brats2018: 1, brats2021: 1, brats2023-gli: 1)" in w for w in dataset.warnings)


def test_discovered_records_are_sorted_and_paths_absolute(tmp_path, cases, monkeypatch):
    cases.legacy(tmp_path / "root", "BraTS2021_00002")
    cases.legacy(tmp_path / "root", "BraTS2021_00001")
    monkeypatch.chdir(tmp_path)
    dataset = discover("root")
    assert [r.case_id for r in dataset.records] == ["BraTS2021_00001", "BraTS2021_00002"]
    assert all(p.is_absolute() for p in dataset.records[0].images)


@pytest.mark.parametrize(
    "case_id, release",
    [
        ("BraTS2021_01666", "brats2021"),
        ("BraTS20_Validation_125", "brats2020"),
        ("BraTS-MET-00086-000", "brats2023-met"),
        ("BraTS2021_1666", None),
        ("BraTS-XYZ-00001-000", None),
        ("HGG", None),
    ],
)
def test_identify_release(case_id, release):
    found = identify_release(case_id)
    assert (found.name if found else None) == release


def test_discover_case_reads_a_case_folder(tmp_path, cases):
    folder = cases.brats2023(tmp_path, "BraTS-GLI-00001-000", labels=None)
    record = discover_case(folder)
    assert record.case_id == "BraTS-GLI-00001-000" and record.label is None
    assert record.label_convention == "brats2023"
    assert [_modality_of(p, "-") for p in record.images] == ["t1n", "t1c", "t2w", "t2f"]


@pytest.mark.parametrize("style", ["legacy", "brats2023"])
def test_discover_case_recognises_a_renamed_folder_from_its_files(tmp_path, cases, style):
    case_id = "BraTS2021_00042" if style == "legacy" else "BraTS-MEN-00042-000"
    folder = getattr(cases, style)(tmp_path, case_id)
    renamed = folder.rename(tmp_path / "new_case")
    record = discover_case(renamed)
    assert record.case_id == case_id
    assert record.label_convention == ("brats2017" if style == "legacy" else "brats2023")
    assert all(p.parent == renamed and p.exists() for p in (*record.images, record.label))


def test_discover_case_with_unknown_prefix_uses_the_file_naming(tmp_path, cases):
    folder = cases.legacy(tmp_path, "BraTS2021_00042", labels=None)
    for path in folder.iterdir():
        path.rename(folder / path.name.replace("BraTS2021_00042", "patient7"))
    record = discover_case(folder.rename(tmp_path / "patient7"))
    assert record.case_id == "patient7" and record.label_convention == "brats2017"


def test_discover_case_reads_one_msd_file_and_finds_its_label(tmp_path, cases):
    root = cases.msd(tmp_path, train=(1,), test=(2,))
    record = discover_case(root / "imagesTr" / "BRATS_001.nii.gz")
    assert record.channel_indices == (1, 2, 3, 0) and record.label == root / "labelsTr" / "BRATS_001.nii.gz"
    assert discover_case(root / "imagesTs" / "BRATS_002.nii.gz").label is None


def test_discover_case_errors(tmp_path, cases):
    with pytest.raises(InputError, match="input not found"):
        discover_case(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no single BraTS case found"):
        discover_case(tmp_path / "empty")
    write_nifti(tmp_path / "scan.nii.gz", brain(0))
    with pytest.raises(InputError, match="read only as an MSD Task01 4D image"):
        discover_case(tmp_path / "scan.nii.gz")
    folder = cases.brats2023(tmp_path, "BraTS-PED-00001-000")
    with pytest.raises(InputError, match="BraTS-PED segmentations are not read") as caught:
        discover_case(folder)
    assert caught.value.where == str(folder / "BraTS-PED-00001-000-seg.nii.gz")


def test_discovery_modifies_nothing(legacy_root):
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in legacy_root.rglob("*")}
    discover(legacy_root)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in legacy_root.rglob("*")} == before


@pytest.mark.parametrize(
    "names, case_id, convention",
    [
        ([f"BraTS2021_00001_{m}.nii.gz" for m in MODALITIES], "BraTS2021_00001", "brats2017"),
        ([f"BraTS-GLI-00002-000-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")], "BraTS-GLI-00002-000", "brats2023"),
        ([f"BraTS-MEN-00003-000-{s}.nii" for s in ("t1n", "t1c", "t2w", "t2f")], "BraTS-MEN-00003-000", "brats2023"),
        (["patient_t1.nii.gz", "patient_t1ce.nii.gz", "patient_t2.nii.gz", "patient-t2f.nii.gz"], "patient", "brats2017"),
    ],
)
def test_a_case_from_four_loose_files(tmp_path, names, case_id, convention):
    record = case_from_files([tmp_path / name for name in names])
    assert record.case_id == case_id and record.label_convention == convention
    assert record.images == tuple((tmp_path / name).resolve() for name in names) and record.label is None
    with pytest.raises(InputError, match="expected 4 modality files"):
        case_from_files([tmp_path / name for name in names[:3]])
