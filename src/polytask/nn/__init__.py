"""Encoders h (shared or not) and task heads g_i.

Every encoder runs its layers through one protocol (``start``, ``layer(i)``; see
:mod:`polytask.nn.base`) and returns an :class:`EncoderOutput` holding each layer's output,
so a sharing architecture can tap any depth; heads read one such tensor (and the mask) and
return what the task's kind expects: (B, C) logits, (B, T, C) logits or :class:`TagScores`.
"""

from polytask.nn.base import Encoder, EncoderOutput, EncoderState
from polytask.nn.bilstm import BiLSTM, CharBiLSTM
from polytask.nn.cnn import CNN
from polytask.nn.crf import CRF, bio_allowed, is_bio
from polytask.nn.heads import ClassifierHead, TaggerHead, head_for, heads_for
from polytask.nn.lenet import LeNet
from polytask.nn.mlp import MLP
from polytask.nn.pooling import AttentionPooling, pool
from polytask.nn.tabular import TabularEmbedding, TabularMLP
from polytask.nn.transformer import SubwordTokenizer, Transformer, minilm_path
from polytask.registry import Registry

#: the encoders: a name or ``package.module:Class`` -> an :class:`Encoder` subclass
ENCODERS: Registry[type[Encoder]] = Registry(
    "encoder",
    base=Encoder,
    expects="a subclass of polytask.nn.Encoder",
    builtins={
        "mlp": MLP,
        "cnn": CNN,
        "bilstm": BiLSTM,
        "transformer": Transformer,
        "tabular": TabularMLP,
        "lenet": LeNet,
    },
)

__all__ = [
    "ENCODERS",
    "AttentionPooling",
    "BiLSTM",
    "CNN",
    "CRF",
    "CharBiLSTM",
    "ClassifierHead",
    "Encoder",
    "EncoderOutput",
    "EncoderState",
    "LeNet",
    "MLP",
    "SubwordTokenizer",
    "TabularEmbedding",
    "TabularMLP",
    "TaggerHead",
    "Transformer",
    "bio_allowed",
    "head_for",
    "heads_for",
    "is_bio",
    "minilm_path",
    "pool",
]
