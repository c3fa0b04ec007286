"""The plain baseline: a 2.5D MONAI UNet trained the way the original BraTS systems did, until a wall-clock deadline.

    python -m benchmarks.baseline_unet25d --datalist FOLD.json --out DIR --deadline UNIX_SECONDS [--device cpu]

Trains on every labelled non-test case of the data list (training and validation: there is no
validation and no post-processing), reading the NIfTI files with nibabel: each modality z-scored
on the brain (nonzero) voxels, cropped to the brain box padded to a multiple of 16; inputs are the
centre slice and 2 on each side of the 4 modalities (20 channels); DiceCE over softmax classes
background/NEC/ED/ET, random flips, slices drawn with weight towards tumour, Adam with the learning
rate falling linearly to 0 at the deadline. Then every slice of each test case is predicted
(argmax) and written as ``DIR/<case>_seg.nii.gz`` on the input's grid in the case's own label
values, with ``DIR/baseline.json`` (seconds, CPU seconds and steps of the training).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from pipeline.datasets.datalist import load_datalist
from pipeline.datasets.records import CaseRecord
from pipeline.core.io import save_nifti, write_json
from pipeline.tasks.labels import get_convention
from pipeline.inference.writers import segmentation_filename

__all__ = ["CONTEXT", "build_network", "load_case", "slice_stack", "train", "predict_volume", "main"]

CONTEXT, MULTIPLE, BATCH_SIZE, LEARNING_RATE, TUMOUR_SHARE = 2, 16, 16, 1e-3, 0.7


def build_network() -> UNet:
    """A 2D MONAI UNet with five levels over 20 input channels (5 slices x 4 modalities) and 4 classes."""
    return UNet(2, 4 * (2 * CONTEXT + 1), 4, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)


def load_case(record: CaseRecord) -> tuple[np.ndarray, np.ndarray | None, tuple[slice, ...]]:
    """The case's z-scored modalities ``(Z, 4, X, Y)`` and internal labels ``(Z, X, Y)`` in its brain box (X, Y padded to 16), and the box."""
    volume = np.stack([np.asarray(nib.load(path).dataobj, dtype=np.float32) for path in record.images])
    brain = volume.any(axis=0)
    for channel in volume:
        channel[brain] = (channel[brain] - channel[brain].mean()) / max(float(channel[brain].std()), 1e-6)
    box = tuple(slice(int(idx[0]), int(idx[-1]) + 1) for idx in (np.flatnonzero(brain.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))))
    pad = [(0, 0), (0, -(box[0].stop - box[0].start) % MULTIPLE), (0, -(box[1].stop - box[1].start) % MULTIPLE), (0, 0)]
    image = np.pad(volume[(slice(None), *box)], pad).transpose(3, 0, 1, 2)
    if record.label is None:
        return np.ascontiguousarray(image), None, box
    label = get_convention(record.label_convention).to_internal(np.asarray(nib.load(record.label).dataobj))
    return np.ascontiguousarray(image), np.pad(label[box], pad[1:]).transpose(2, 0, 1).copy(), box


def slice_stack(image: np.ndarray, z: int) -> np.ndarray:
    """Slices ``z - CONTEXT .. z + CONTEXT`` (clamped at the ends) of all modalities as 20 channels ``(20, X, Y)``."""
    index = np.clip(np.arange(z - CONTEXT, z + CONTEXT + 1), 0, len(image) - 1)
    return image[index].reshape(-1, *image.shape[2:])


def train(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    deadline: float,
    device: str = "cpu",
    seed: int = 0,
    max_steps: int | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[UNet, int]:
    """Train until ``clock()`` reaches ``deadline`` (wall time by default; ``time.process_time`` for a CPU budget) or ``max_steps``; returns the network and the number of steps."""
    rng, _ = np.random.default_rng(seed), torch.manual_seed(seed)
    size = tuple(max(image.shape[d] for image in images) for d in (2, 3))
    images = [np.pad(im, [(0, 0), (0, 0), (0, size[0] - im.shape[2]), (0, size[1] - im.shape[3])]) for im in images]
    labels = [np.pad(lab, [(0, 0), (0, size[0] - lab.shape[1]), (0, size[1] - lab.shape[2])]) for lab in labels]
    slices = [(c, z) for c, label in enumerate(labels) for z in range(len(label))]
    tumour = np.array([labels[c][z].any() for c, z in slices])
    weights = np.where(tumour, TUMOUR_SHARE / max(tumour.sum(), 1), (1 - TUMOUR_SHARE) / max((~tumour).sum(), 1))
    network = build_network().to(device).train()
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    start, steps = clock(), 0
    while (now := clock()) < deadline and (max_steps is None or steps < max_steps):
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * (deadline - now) / max(deadline - start, 1e-6)
        xs, ys = [], []
        for c, z in (slices[i] for i in rng.choice(len(slices), BATCH_SIZE, p=weights / weights.sum())):
            x, y = slice_stack(images[c], z), labels[c][z][None]
            for axis in (1, 2):
                if rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
            xs.append(x), ys.append(y)
        x, y = torch.from_numpy(np.stack(xs)).to(device), torch.from_numpy(np.stack(ys)).to(device)
        optimizer.zero_grad()
        loss = loss_function(network(x), y)
        loss.backward()
        optimizer.step()
        steps += 1
    return network.eval(), steps


@torch.no_grad()
def predict_volume(network: UNet, image: np.ndarray, device: str = "cpu", batch: int = 32) -> np.ndarray:
    """Internal labels ``(Z, X, Y)`` of every slice of ``image`` (argmax, no post-processing)."""
    parts = []
    for z0 in range(0, len(image), batch):
        x = np.stack([slice_stack(image, z) for z in range(z0, min(z0 + batch, len(image)))])
        parts.append(network(torch.from_numpy(x).to(device)).argmax(1).cpu().numpy().astype(np.uint8))
    return np.concatenate(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_unet25d", description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, required=True, help="data list: trains on training+validation, predicts test")
    parser.add_argument("--out", type=Path, required=True, help="folder of the predictions and baseline.json")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--deadline", type=float, help="time.time() at which training stops (a wall-time budget)")
    budget.add_argument("--cpu-seconds", type=float, help="CPU seconds of this process (all threads) after which training stops")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started, listing = time.time(), load_datalist(args.datalist)
    cases = [load_case(record) for record in listing.cases("training") + listing.cases("validation")]
    images, labels = [c[0] for c in cases], [c[1] for c in cases]
    if args.cpu_seconds is not None:
        network, steps = train(images, labels, time.process_time() + args.cpu_seconds, args.device, args.seed, clock=time.process_time)
    else:
        network, steps = train(images, labels, args.deadline, args.device, args.seed)
    trained, cpu = time.time(), time.process_time()
    for record in listing.cases("test"):
        image, _, box = load_case(record)
        reference = nib.load(record.images[0])
        labels = np.zeros(reference.shape[:3], np.uint8)
        labels[box] = predict_volume(network, image, args.device).transpose(1, 2, 0)[: box[0].stop - box[0].start, : box[1].stop - box[1].start]
        seg = nib.Nifti1Image(get_convention(record.label_convention).from_internal(labels), reference.affine, reference.header)
        seg.set_data_dtype(np.uint8)
        save_nifti(args.out / segmentation_filename(record.case_id), seg)
    summary = {"train_seconds": trained - started, "train_cpu_seconds": cpu, "steps": steps, "predict_seconds": time.time() - trained}
    write_json(args.out / "baseline.json", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
