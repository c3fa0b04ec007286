"""Brain-tumour segmentation of multi-modal MRI (BraTS) with MONAI."""

__version__ = "0.1.0"
