"""File-based dataset readers, one module per dataset; importing this package registers them."""

from segattn.data.datasets import ade20k, camvid, cityscapes, folder, voc  # noqa: F401
from segattn.data.datasets.base import DatasetError, SegmentationDataset

__all__ = ["DatasetError", "SegmentationDataset"]
