"""Report corpora: the common schema, synthetic generators, real-format loaders and patient splits.

>>> from dpcore.data import generate_reports, split_by_patient, dataset_meta
>>> dd = split_by_patient(generate_reports(kind="cxr", n=100, seed=0))
>>> dataset_meta(dd["test"]).source
'synthetic-cxr'
"""

from dpcore.data.schema import (
    COLUMNS,
    FEATURES,
    DataError,
    DatasetMeta,
    LoadLog,
    binary_labels,
    dataset_meta,
    make_dataset,
)
from dpcore.data.splits import check_no_patient_leak, split_by_patient
from dpcore.data.synthetic import generate_reports

__all__ = [
    "COLUMNS",
    "FEATURES",
    "DataError",
    "DatasetMeta",
    "LoadLog",
    "binary_labels",
    "check_no_patient_leak",
    "dataset_meta",
    "generate_reports",
    "make_dataset",
    "split_by_patient",
]
