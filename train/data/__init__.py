"""Dataset format (YOLO layout + grades + subjects), checks, statistics and importers.

Torch-free: ``grimace data`` and ``grimace synth`` work with only the core install.
"""

from train.data.format import (
    IMG_EXTS,
    DatasetInfo,
    LabelBox,
    LabelError,
    Subject,
    format_label_line,
    image_to_label_path,
    list_images,
    load_dataset,
    parse_label_line,
    read_labels,
    read_subjects,
    write_data_yaml,
    write_labels,
    write_subjects,
)

__all__ = [
    "IMG_EXTS",
    "DatasetInfo",
    "LabelBox",
    "LabelError",
    "Subject",
    "format_label_line",
    "image_to_label_path",
    "list_images",
    "load_dataset",
    "parse_label_line",
    "read_labels",
    "read_subjects",
    "write_data_yaml",
    "write_labels",
    "write_subjects",
]
