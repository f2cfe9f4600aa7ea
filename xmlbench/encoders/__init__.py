"""Encoders: the registry of transformer encoders by CLI name, loading them, and pooling their output.

``ENCODERS`` and ``resolve_encoder`` are cheap; ``load_encoder`` / ``load_tokenizer`` import transformers.
"""

from xmlbench.encoders.loading import LoadedEncoder, load_encoder, load_tokenizer
from xmlbench.encoders.pooling import (
    classification_token_index,
    cls_embedding,
    layer_stack,
    mean_token_embedding,
)
from xmlbench.encoders.specs import ENCODERS, OFFLINE_ENCODERS, EncoderSpec, minilm_dir, resolve_encoder

__all__ = [
    "ENCODERS",
    "OFFLINE_ENCODERS",
    "EncoderSpec",
    "LoadedEncoder",
    "classification_token_index",
    "cls_embedding",
    "layer_stack",
    "load_encoder",
    "load_tokenizer",
    "mean_token_embedding",
    "minilm_dir",
    "resolve_encoder",
]
