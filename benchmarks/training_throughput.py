"""Training throughput and memory: the model's step rate against the loader's sample rate, and peak RSS against cohort size.

Three measurements on this machine, with the network and sampling settings of the bundle's
``configs/train.yaml`` (plus any ``--config`` override files, e.g. ``gpu_train.yaml`` on a GPU):

1. model step rate: forward + backward + Adam step on random batches of the training shape,
   in samples/s, per mode (2d, 2.5d, 3d);
2. loader sample rate: the real training loader (``pipeline.training.loaders``, augmentation on, the
   configured ``num_workers``) drawing from a cache, in samples/s, per mode; the loader must
   deliver several times the step rate so the model never waits;
3. peak resident memory of a whole training run (``pipeline.training.workflow.train``, one short epoch,
   workers included) on a 10-case and a 200-case cache: it must not grow with the cohort,
   because the datasets memory-map cases lazily and keep a bounded number open.

The cache is written here (random contents in the cache layout, ``(Z, C, X, Y)`` float16 of the
synthetic ``small`` cohort's cropped size) unless ``--cache``/``--datalist`` point at a real one.
It prints a table; nothing is asserted.

Usage:
    python benchmarks/training_throughput.py [--modes 2d 2.5d 3d] [--steps 10] [--batches 20] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.preprocessing.cache import FORMAT_VERSION  # noqa: E402
from pipeline.training.workflow import training_config_files  # noqa: E402

CASE_SHAPE = (60, 4, 72, 80)  # (Z, C, X, Y): a small synthetic case after brain cropping


def write_cache(root: Path, cases: int, seed: int = 0) -> tuple[Path, Path]:
    """``cases`` random cases in the cache layout and a 5-fold data list over them; returns (datalist, cache)."""
    rng = np.random.default_rng(seed)
    cache = root / "cache"
    z, _, x, y = CASE_SHAPE
    entries = []
    for index in range(cases):
        case_id = f"Bench_{index:04d}"
        folder = cache / case_id
        folder.mkdir(parents=True, exist_ok=True)
        label = np.zeros((z, x, y), dtype=np.uint8)
        label[z // 3 : z // 2, x // 3 : x // 2, y // 3 : y // 2] = rng.integers(1, 4, size=(z // 2 - z // 3, x // 2 - x // 3, y // 2 - y // 3))
        np.save(folder / "image.npy", rng.standard_normal(CASE_SHAPE, dtype=np.float32).astype(np.float16))
        np.save(folder / "label.npy", label)
        meta = {"case_id": case_id, "complete": True, "has_label": True, "shape": list(CASE_SHAPE), "format_version": FORMAT_VERSION,
                "foreground_per_slice": [int(n) for n in (label > 0).reshape(z, -1).sum(1)]}
        (folder / "meta.json").write_text(json.dumps(meta))
        images = [f"{case_id}/{case_id}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")]
        entries.append({"case_id": case_id, "image": images, "label": f"{case_id}/{case_id}_seg.nii.gz", "fold": index % 5})
    datalist = {"name": "bench", "label_convention": "brats2017", "data_root": "data", "num_folds": 5,
                "training": [e for e in entries if e["fold"]], "validation": [e for e in entries if not e["fold"]], "test": []}
    (root / "bench.json").write_text(json.dumps(datalist))
    return root / "bench.json", cache


def bundle_settings(config_files: list[str], mode: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in training_config_files(mode, config_files)])
    parser["mode"] = mode
    return parser


def step_rate(parser: ConfigParser, shape: tuple[int, ...], steps: int, device: torch.device) -> float:
    """Samples/s of forward + backward + step of the configured network and loss on random batches."""
    network = parser.get_parsed_content("network_def").to(device).train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    batch_size = int(parser.get_parsed_content("batch_size"))
    images = torch.randn(batch_size, *shape, device=device)
    labels = torch.randint(0, 4, (batch_size, 1, *shape[1:]), device=device)
    amp = bool(parser.get_parsed_content("amp")) and device.type == "cuda"

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(network(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: first-call allocations and kernel selection
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def loader_rate(parser: ConfigParser, cache: Path, case_ids: list[str], batches: int) -> tuple[float, tuple[int, ...]]:
    """Samples/s of the training loader (augmentation on) and the sample shape."""
    from pipeline.training.loaders import build_train_dataset, build_train_loader, build_train_sampler

    get = parser.get_parsed_content
    dataset = build_train_dataset(cache, case_ids, get("mode"), context=get("context"), patch_size=get("patch_size"),
                                  slice_size=get("slice_size"), foreground_ratio=get("foreground_ratio"), augment=True, seed=0)
    batch_size = int(get("batch_size"))
    sampler = build_train_sampler(dataset, num_samples=batch_size * (batches + 2), seed=0)
    loader = build_train_loader(dataset, batch_size=batch_size, sampler=sampler, num_workers=int(get("num_workers")))
    iterator = iter(loader)
    first = next(iterator)  # workers started, first batch ready
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += batch["image"].shape[0]
    return count / (time.perf_counter() - start), tuple(first["image"].shape[1:])


def peak_memory(
    datalist: Path, cache: Path, mode: str, out: Path, samples: int, config_files: tuple[str, ...] = (), device: str = "cpu"
) -> tuple[float, float]:
    """Peak RSS (MiB) of the training process and of its largest loader worker, for one short epoch.

    ``config_files`` are bundle override files merged after ``train.yaml``, as ``train(config_files=...)`` takes them.
    """
    code = (
        "import resource, sys\n"
        "from benchmarks.machine import peak_rss_mib\n"
        "from pipeline.training.workflow import train\n"
        f"train({str(datalist)!r}, {str(cache)!r}, {str(out)!r}, {mode!r}, 1, device={device!r}, config_files={list(map(str, config_files))!r}, "
        f"overrides={{'samples_per_epoch': {samples}, 'val_interval': 1000, 'progress': False}})\n"
        "print('RSS', peak_rss_mib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RSS"))
    _, main_mib, worker_mib = line.split()
    return float(main_mib), float(worker_mib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["2d", "2.5d", "3d"])
    parser.add_argument("--config", action="append", default=[], help="override file merged after train.yaml")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches per mode")
    parser.add_argument("--cache", type=Path, help="an existing cache (default: a generated one)")
    parser.add_argument("--datalist", type=Path, help="its data list")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-samples", type=int, default=320, help="samples in the measured epoch")
    args = parser.parse_args()
    device = torch.device(args.device)
    default_threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.cache is None:
            datalist, cache = write_cache(work / "c10", 10)
        else:
            datalist, cache = args.datalist, args.cache
        case_ids = sorted(p.parent.name for p in Path(cache).glob("*/meta.json"))
        print(f"# training throughput, torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, device {device}")
        print(f"cache: {cache} ({len(case_ids)} cases), configs: train.yaml {' '.join(args.config)}\n")
        print("| mode | batch | torch threads | loader workers | sample shape | model step rate (samples/s) | loader rate (samples/s) | loader / model |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in args.modes:
            settings = bundle_settings(args.config, mode)
            threads = settings.get_parsed_content("cpu_threads")
            torch.set_num_threads(int(threads) if threads else default_threads)  # as the training run sets it
            rate_loader, shape = loader_rate(settings, Path(cache), case_ids, args.batches)
            rate_model = step_rate(settings, shape, args.steps, device)
            print(f"| {mode} | {settings.get_parsed_content('batch_size')} | {torch.get_num_threads()} | {settings.get_parsed_content('num_workers')} | {shape} | {rate_model:.1f} | {rate_loader:.1f} | {rate_loader / rate_model:.1f}x |", flush=True)

        if not args.skip_memory:
            print("\n| cached cases | peak RSS, training process (MiB) | peak RSS, largest loader worker (MiB) |")
            print("|---|---|---|")
            for cases in (10, 200):
                small_list, small_cache = write_cache(work / f"m{cases}", cases)
                main_mib, worker_mib = peak_memory(small_list, small_cache, "2.5d", work / f"run{cases}", args.memory_samples)
                print(f"| {cases} | {main_mib:.0f} | {worker_mib:.0f} |", flush=True)


if __name__ == "__main__":
    main()
