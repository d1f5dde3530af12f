"""Teacher labels: a rule labeler, an LLM labeler, a cache and agreement with ground truth.

>>> from dpcore.labeling import RuleTeacher, label_dataset
>>> RuleTeacher().name
'rules-chexpert'
"""

from dpcore.labeling.base import LabelVector, Teacher
from dpcore.labeling.cache import LabelCache
from dpcore.labeling.dataset import (
    LabelingResult,
    label_dataset,
    label_dataset_with_stats,
    label_texts_cached,
)
from dpcore.labeling.llm import CredentialedDataError, LLMTeacher, ReplyError, parse_reply
from dpcore.labeling.rules import RuleTeacher

__all__ = [
    "CredentialedDataError",
    "LLMTeacher",
    "LabelCache",
    "LabelVector",
    "LabelingResult",
    "ReplyError",
    "RuleTeacher",
    "Teacher",
    "label_dataset",
    "label_dataset_with_stats",
    "label_texts_cached",
    "parse_reply",
]
