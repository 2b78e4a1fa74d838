"""File-based dataset readers, one module per dataset; importing this package registers them."""

from segattn.data.datasets import camvid  # noqa: F401
from segattn.data.datasets.base import DatasetError, SegmentationDataset

__all__ = ["DatasetError", "SegmentationDataset"]
