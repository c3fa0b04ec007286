"""The MONAI model zoo ``brats_mri_segmentation`` bundle's inference, as its ``configs/inference.json`` defines it.

The reference every whole-case figure is compared with, run on the same case on the same
machine: ``LoadImaged`` of the four modality files, ``NormalizeIntensityd(nonzero=True,
channel_wise=True)``, a 3D ``SegResNet(blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1],
init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2)`` through a
``SlidingWindowInferer(roi_size=[240, 240, 160], sw_batch_size=1, overlap=0.5)``, sigmoid,
threshold at 0.5, the bundle's TC/WT/ET -> BraTS label conversion, and ``SaveImaged`` (uint8,
no resampling). The bundle's ``Invertd`` step is left out: with no spatial transform in its
preprocessing it changes nothing. AMP as in the bundle, on CUDA only.

Untrained weights: the work per case does not depend on them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import SegResNet
from monai.transforms import Compose, LoadImaged, NormalizeIntensityd, SaveImage

#: The bundle's sliding window (X, Y, Z).
REFERENCE_ROI = (240, 240, 160)


def reference_network() -> SegResNet:
    """The bundle's ``network_def``."""
    return SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2)


def reference_preprocessing() -> Compose:
    """The bundle's ``preprocessing``."""
    return Compose([LoadImaged(keys="image"), NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)])


def regions_to_brats_labels(regions: torch.Tensor) -> torch.Tensor:
    """The bundle's ``Lambdad``: thresholded (TC, WT, ET) -> BraTS labels 4 (ET), 1 (TC), 2 (WT), 0."""
    return torch.where(regions[[2]] > 0, 4, torch.where(regions[[0]] > 0, 1, torch.where(regions[[1]] > 0, 2, 0)))


class ReferenceBundle:
    """The bundle's inference for one case at a time.

    Args:
        device: ``cpu`` or ``cuda``.
        roi_size: the sliding window (the bundle's :data:`REFERENCE_ROI` unless shrunk for tiny test volumes).
    """

    def __init__(self, device: str = "cpu", roi_size: Sequence[int] = REFERENCE_ROI) -> None:
        self.device = torch.device(device)
        self.network = reference_network().to(self.device).eval()
        self.preprocessing = reference_preprocessing()
        self.inferer = SlidingWindowInferer(roi_size=tuple(roi_size), sw_batch_size=1, overlap=0.5)
        self.amp = self.device.type == "cuda"

    @torch.no_grad()
    def __call__(self, image_files: Sequence[str | Path], out_dir: Path) -> Path:
        """Segment one case (its four modality files) and write ``<name>_seg.nii.gz`` into ``out_dir``."""
        data = self.preprocessing({"image": [str(p) for p in image_files]})
        image = data["image"].unsqueeze(0).to(self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.inferer(image, self.network)
        regions = (torch.sigmoid(logits[0].float()) > 0.5).to(torch.uint8).cpu()
        labels = regions_to_brats_labels(regions)
        labels.meta = data["image"].meta  # the input's header, as Invertd would restore it
        writer = SaveImage(output_dir=str(out_dir), output_postfix="seg", output_dtype="uint8", resample=False, separate_folder=False, print_log=False)
        writer(labels)
        return Path(out_dir)


def time_reference(
    image_files: Sequence[str | Path],
    out_dir: Path,
    device: str = "cpu",
    repeats: int = 1,
    warmup: bool = True,
    roi_size: Sequence[int] = REFERENCE_ROI,
) -> float:
    """Median seconds per case of the bundle's inference, end to end (read, normalise, infer, write)."""
    bundle = ReferenceBundle(device, roi_size)
    if warmup:
        bundle(image_files, out_dir)
    times = []
    for _ in range(repeats):
        if bundle.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        bundle(image_files, out_dir)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
