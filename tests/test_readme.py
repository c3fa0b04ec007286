"""The README describes what is built: its commands, make targets, bundle configs, Python example and figures exist and run."""

from __future__ import annotations

import doctest
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from prediction_cases import write_run_dir

from pipeline.cli.main import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CLI_NAME = "brats-pipeline"


def _code_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [body for language, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL) if language in languages]


def _shell_lines(text: str) -> list[str]:
    """Shell commands of the README's bash blocks, continuation lines joined, comments dropped."""
    lines = []
    for block in _code_blocks(text, ("bash", "sh")):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                lines.append(line)
    return lines


def _commands(line: str, program: str) -> list[list[str]]:
    """The argument lists following ``program`` in one shell line (several when chained with && or ;)."""
    tokens = shlex.split(line, comments=True)
    commands, current = [], None
    for token in tokens:
        if token in ("&&", ";", "||", "|"):
            current = None
        elif current is None and (token == program or token.endswith("/" + program)):
            current = []
            commands.append(current)
        elif current is not None:
            current.append(token)
    return commands


def _cli_commands(text: str) -> list[list[str]]:
    return [args for line in _shell_lines(text) for args in _commands(line, CLI_NAME)]


def _inline_cli_commands(text: str) -> list[list[str]]:
    """``brats-pipeline ...`` written in inline code in the prose."""
    return [shlex.split(match)[1:] for match in re.findall(r"`(brats-pipeline [^`]*)`", text)]


def _options(tokens: list[str]) -> list[str]:
    """Option names in tokens such as ``--tta/--no-tta``, ``[--device``, ``--set=a``."""
    names = []
    for token in tokens:
        for part in token.strip("[]()").split("/"):
            if part.startswith("--") and len(part) > 2:
                names.append(part.split("=", 1)[0].rstrip(".,"))
    return names


def _check_cli_command(args: list[str], where: str) -> None:
    group_options = []
    while args and args[0].startswith("-"):
        group_options.append(args.pop(0))
    group_help = CliRunner().invoke(main, ["--help"]).output
    for option in _options(group_options):
        assert option in group_help, f"{where}: {CLI_NAME} has no option {option}"
    if not args:
        return
    command = args[0]
    assert command in main.commands, f"{where}: {CLI_NAME} has no command {command!r}"
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    for option in _options(args[1:]):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.output), f"{where}: `{CLI_NAME} {command}` has no option {option}"


def _make_targets() -> set[str]:
    output = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^\s+(?:\x1b\[[0-9;]*m)?([A-Za-z0-9_.-]+)", output, flags=re.MULTILINE))


def _make_invocations(text: str) -> list[list[str]]:
    """Argument lists of every ``make ...`` in the README's code blocks and inline code."""
    invocations = [args for line in _shell_lines(text) for args in _commands(line, "make")]
    invocations += [shlex.split(match)[1:] for match in re.findall(r"`(make [^`]*)`", text)]
    return invocations


def test_every_cli_command_and_option_exists():
    text = README.read_text()
    commands = _cli_commands(text) + _inline_cli_commands(text)
    named = {args[0] for args in commands if args and not args[0].startswith("-")}
    assert {"demo", "datalist", "preprocess", "train", "evaluate", "predict", "export"} <= named
    for args in commands:
        _check_cli_command(list(args), f"`{CLI_NAME} {' '.join(args)}`")


def test_every_make_target_exists_and_expands_to_valid_commands():
    text = README.read_text()
    targets = _make_targets()
    invocations = _make_invocations(text)
    assert {"demo", "test", "install", "preprocess", "train", "evaluate", "predict", "export"} <= {a for args in invocations for a in args}
    for args in invocations:
        named = [a for a in args if "=" not in a and not a.startswith("-")]
        for target in named:
            assert target in targets, f"`make {' '.join(args)}`: no target {target!r} in `make help`"
        assignments = [a for a in args if "=" in a]
        # A dry run shows what the target would run: its brats-pipeline commands must exist too.
        dry = subprocess.run(["make", "--no-print-directory", "-n", *named, *assignments], cwd=REPO, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        for line in dry.stdout.splitlines():
            for cli_args in _commands(line.replace("$format", "torchscript"), CLI_NAME):
                _check_cli_command(cli_args, f"`make {' '.join(args)}` -> {line.strip()}")


def test_bundle_commands_name_existing_configs_and_workflows():
    text = README.read_text()
    found = 0
    for line in _shell_lines(text):
        tokens = shlex.split(line, comments=True)
        if "monai.bundle" not in tokens:
            continue
        found += 1
        subcommand = tokens[tokens.index("monai.bundle") + 1]
        files = []
        for key in ("--config_file", "--meta_file"):
            if key in tokens:
                value = tokens[tokens.index(key) + 1]
                files += [p.strip(" '\"") for p in value.strip("[]").split(",")] if value.startswith("[") else [value]
        for path in files:
            assert (REPO / path).is_file(), f"{line.strip()}: {path} not found"
        if subcommand == "run":
            workflow = tokens[tokens.index("run") + 1]
            merged = {}
            for path in files:
                merged.update(json.loads(json.dumps(__import__("yaml").safe_load((REPO / path).read_text()))))
            assert workflow in merged, f"{line.strip()}: no {workflow!r} in {files}"
        else:
            assert subcommand in ("verify_metadata", "verify_net_in_out", "ckpt_export"), subcommand
    assert found >= 7


@pytest.fixture(scope="module")
def demo_like_checkout(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the repository after ``make demo`` and ``train --folds all``: outputs/demo/run,
    runs/synthetic_2.5d_folds/fold{0,1} and data/synthetic (tiny)."""
    root = tmp_path_factory.mktemp("checkout")
    write_run_dir(root / "outputs" / "demo" / "run")
    for fold in (0, 1):
        write_run_dir(root / "runs" / "synthetic_2.5d_folds" / f"fold{fold}", seed=fold)
    (root / "data").mkdir()
    (root / "data" / "synthetic").symlink_to(tiny_cohort)
    return root


@pytest.mark.slow
def test_python_example_runs(demo_like_checkout: Path):
    blocks = _code_blocks(README.read_text(), ("python",))
    assert blocks and any("pipeline.load_model(" in block for block in blocks)
    for block in blocks:
        completed = subprocess.run(
            [sys.executable, "-c", block],
            cwd=demo_like_checkout,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
    written = demo_like_checkout / "BraTS2021_00004_seg.nii.gz"
    assert written.is_file()
    assert (demo_like_checkout / "BraTS2021_00004_uncertainty.nii.gz").is_file()


def test_api_docstring_example_runs(demo_like_checkout: Path, monkeypatch: pytest.MonkeyPatch):
    import pipeline.inference.model

    monkeypatch.chdir(demo_like_checkout)
    tests = [t for t in doctest.DocTestFinder().find(pipeline.inference.model) if t.name == "pipeline.inference.model" and t.examples]
    assert tests, "pipeline.inference.model's module docstring has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 3


def test_sections_figures_and_disclaimer():
    text = README.read_text()
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    for heading in ("The demo", "Installing", "Preparing a release", "The preprocessed cache", "Training", "Evaluating and predicting",
                    "Python API", "The MONAI Bundle", "Opening a result in 3D Slicer", "Results", "How the metrics follow BraTS",
                    "Reliability guarantees", "Benchmarks", "Troubleshooting", "Research use only"):  # fmt: skip
        assert heading in headings, heading
    assert text.index("make demo") < text.index("## ") and text.index("make test") < text.index("## ")
    assert "not a medical device" in text.lower()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        path = REPO / image
        assert path.is_file() and path.stat().st_size < 300_000, image
    for link in re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text):
        assert (REPO / link).exists(), link
    assert not re.search(r"TODO|TBD|@@|XXX", text)


def test_results_table_is_the_bundle_metadata():
    """The README's demo row and the bundle's eval_metrics are the same measurement."""
    metrics = json.loads((REPO / "bundles" / "brats_segmentation" / "configs" / "metadata.json").read_text())["eval_metrics"]
    row = next(line for line in README.read_text().splitlines() if line.startswith("| synthetic cohort"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    for index, key in enumerate(("dice_wt", "dice_tc", "dice_et")):
        assert cells[2 + index] == f"{metrics[f'test_mean_{key}']:.3f}", key
    for index, key in enumerate(("wt", "tc", "et")):
        assert cells[5 + index] == f"{metrics[f'test_mean_hd95_{key}_mm']:.2f}", key


#: Modules the Layout lists ahead of their creation (the cache and checkpoint code moving out of
#: preprocess.py and handlers.py); once they exist they are checked like every other module.
NOT_YET_CREATED: set[str] = set()


def _layout_section(text: str) -> str:
    return text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]


def _layout_modules(text: str) -> list[str]:
    """Paths under pipeline/ listed in the Layout block: ``name.py`` at the top, ``folder/name.py`` inside a subpackage, ``folder/``."""
    block = next(body for body in _code_blocks(_layout_section(text), ("",)) if body.startswith("pipeline/"))
    listed, folder = [], ""
    for line in block.splitlines()[1:]:
        match = re.match(r"( +)(\S+)", line)
        if match is None:  # back at the repository's top level
            break
        indent, name = len(match.group(1)), match.group(2)
        if indent == 2:
            folder = name if name.endswith("/") else ""
            listed.append(name)
        else:
            assert indent == 4 and folder, f"Layout: {name!r} is indented under no subpackage"
            listed.append(folder + name)
    return listed


def test_layout_lists_every_module_of_the_package_and_only_existing_ones():
    package = REPO / "pipeline"
    listed = _layout_modules(README.read_text())
    assert len(listed) == len(set(listed)), "Layout lists a module twice"
    for name in listed:
        assert (package / name).exists() or name in NOT_YET_CREATED, f"Layout lists pipeline/{name}, which does not exist"
    subpackages = {p.parent for p in package.glob("*/__init__.py")}
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if not (p.name == "__init__.py" and p.parent in subpackages)}
    modules |= {p.relative_to(package).as_posix() + "/" for p in subpackages}
    assert modules - set(listed) == set(), "modules of pipeline/ missing from the README's Layout"


def test_stage_table_names_existing_commands_modules_and_configs():
    section = _layout_section(README.read_text())
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith(("| stage", "| ---"))]
    assert [row.split("|")[1].strip() for row in rows] == [
        "synthetic cohort", "data list", "preprocess", "train", "predict", "evaluate", "export", "demo", "Python API",
    ]  # fmt: skip
    for row in rows:
        for path in re.findall(r"`(pipeline/[^`]*)`", row):
            assert (REPO / path).exists() or Path(path).name in NOT_YET_CREATED, f"{row}: {path} not found"
        configs = re.findall(r"`([\w.]+\.(?:yaml|json))`", row.split("|")[4])
        assert all((REPO / "bundles" / "brats_segmentation" / "configs" / name).is_file() for name in configs), row
    assert "| train |" in section and "`train.yaml`" in section


def test_make_test_runs_the_slow_tests_too():
    """The quick run is opt-in (``-m "not slow"``): neither make test nor the pytest settings deselect anything."""
    import configparser

    settings = configparser.ConfigParser()
    settings.read(REPO / "setup.cfg")
    assert "-m" not in shlex.split(settings["tool:pytest"]["addopts"])
    recipe = subprocess.run(["make", "--no-print-directory", "-n", "-W", ".venv/.installed", "test"], cwd=REPO, capture_output=True, text=True)
    runs = [tokens[tokens.index("pytest") + 1 :] for tokens in map(shlex.split, recipe.stdout.splitlines()) if "pytest" in tokens]
    assert runs and all("-m" not in arguments and "-k" not in arguments for arguments in runs), recipe.stdout
    assert '-m "not slow"' in README.read_text()
