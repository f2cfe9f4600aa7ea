"""Loading encoders (tokenizer + transformer returning all hidden states), offline-friendly.

transformers is imported lazily: it costs seconds, and most commands that only name an encoder never load
one.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from xmlbench.data.tokcache import tokenizer_lowercases
from xmlbench.encoders.specs import (
    ENCODERS,
    OFFLINE_ENCODERS,
    EncoderSpec,
    resolve_encoder,
    source_location,
    tokenizer_location,
)
from xmlbench.errors import UserError

HUB_PROBE_TIMEOUT_S = 3.0


@dataclass
class LoadedEncoder:
    """A ready encoder. ``model(input_ids=..., attention_mask=...)`` returns ``hidden_states``
    (embeddings + one per layer, each (B, L, hidden_size))."""

    name: str
    spec: EncoderSpec
    tokenizer: Any  # a transformers PreTrainedTokenizerBase (fast where the model has one)
    model: Any  # a transformers PreTrainedModel built with output_hidden_states=True, in eval mode
    hidden_size: int
    n_layers: int  # transformer layers; len(hidden_states) == n_layers + 1
    cls_position: str  # 'first' or 'last' (XLNet)

    @property
    def max_tokens(self) -> int | None:
        """The longest input its position embeddings cover (None: no such limit, e.g. XLNet)."""
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if not positions:
            return None
        # RoBERTa-style models number positions from padding_idx + 1: two fewer usable positions.
        offset = 2 if self.model.config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        return int(positions) - offset


def load_tokenizer(name: str | EncoderSpec) -> Any:
    """The encoder's tokenizer alone (no model weights), for tokenising a corpus into the token cache."""
    spec = name if isinstance(name, EncoderSpec) else resolve_encoder(name)
    auto_tokenizer = _transformers().AutoTokenizer
    # Always from a folder or hub id: in transformers 5, building a BERT tokenizer from a bare vocab file
    # silently yields a 5-token vocabulary.
    tokenizer = _from_pretrained(auto_tokenizer.from_pretrained, tokenizer_location(spec), spec)
    _check_vocabulary(tokenizer, spec)
    return tokenizer


def load_encoder(name: str, seed: int = 0) -> LoadedEncoder:
    """Tokenizer and model for a registered name, a local folder or a hub id.

    ``seed`` makes randomly initialised weights reproducible (the random encoders, and any head a
    pretrained checkpoint lacks); the global torch RNG is left untouched.
    """
    spec = resolve_encoder(name)
    tokenizer = load_tokenizer(spec)
    with _seeded(seed):
        model = _build_random_bert(spec, tokenizer) if spec.is_random else _load_pretrained(spec)
    model.eval()  # from_pretrained returns eval mode; make random models match, the trainer calls .train()
    config = model.config
    if spec.name not in ENCODERS:  # guesses made from the name; the loaded files know better
        cls_position = "last" if config.model_type == "xlnet" else "first"
        spec = replace(spec, cls_position=cls_position, lowercase=tokenizer_lowercases(tokenizer))
    return LoadedEncoder(
        name=spec.name,
        spec=spec,
        tokenizer=tokenizer,
        model=model,
        hidden_size=int(config.hidden_size),
        n_layers=int(config.num_hidden_layers),
        cls_position=spec.cls_position,
    )


def _transformers() -> Any:
    import transformers

    # Random models and partial checkpoints make transformers log long warnings; keep only errors.
    transformers.logging.set_verbosity_error()
    return transformers


def _build_random_bert(spec: EncoderSpec, tokenizer: Any) -> Any:
    transformers = _transformers()
    config = transformers.BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id or 0,
        output_hidden_states=True,
        **dict(spec.random_architecture),
    )
    return transformers.BertModel(config)


def _load_pretrained(spec: EncoderSpec) -> Any:
    auto_model = _transformers().AutoModel
    # transformers 5 defaults to dtype="auto" (the checkpoint's dtype); training wants float32 weights.
    load = functools.partial(auto_model.from_pretrained, output_hidden_states=True, dtype=torch.float32)
    return _from_pretrained(load, source_location(spec), spec)


def _from_pretrained(load: Callable[..., Any], location: str, spec: EncoderSpec) -> Any:
    """``load(location)``, turning "cannot download / cannot read" into one UserError line.

    When the hub is unreachable, only the local cache is tried: otherwise huggingface_hub retries for
    about half a minute, logging each attempt.
    """
    from_hub = not Path(location).is_dir()
    if not from_hub:
        _check_encoder_folder(Path(location), spec)
    local_only = from_hub and (_offline_requested() or not _hub_reachable())
    try:
        return load(location, local_files_only=True) if local_only else load(location)
    except (OSError, ValueError) as e:
        if local_only:
            raise UserError(_cannot_download_message(spec, location)) from e
        raise UserError(f"encoder {spec.name!r} ({location}) cannot be loaded: {one_line(e)}") from e


def _check_encoder_folder(folder: Path, spec: EncoderSpec) -> None:
    """A local encoder folder holds what ``save_pretrained`` writes; say what is missing, in full."""
    if not (folder / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:5]) or "nothing"
        raise UserError(f"encoder {spec.name!r}: {folder} holds no model config.json (found: {found}); an "
                        "encoder folder holds config.json, the weights and the tokenizer files that "
                        "save_pretrained writes")


def one_line(e: BaseException, limit: int = 400) -> str:
    """An exception's whole message on one line (transformers' messages span several, and the first
    alone is often cut mid-sentence)."""
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cannot_download_message(spec: EncoderSpec, location: str) -> str:
    what = f"encoder {spec.name!r}" if spec.name == location else f"encoder {spec.name!r} ({location})"
    unknown = ""
    if spec.name not in ENCODERS:
        unknown = f" and is not a registered encoder ({', '.join(ENCODERS.names())})"
    offline = ", ".join(OFFLINE_ENCODERS)
    return (
        f"{what} cannot be downloaded here (offline?){unknown}; "
        f"encoders that work offline: {offline}, or a local folder"
    )


def _offline_requested() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at import)."""
    return any(
        os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@functools.cache
def _hub_reachable() -> bool:
    """Whether a TCP connection to the hub endpoint opens within a few seconds (asked once per process)."""
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy decides; let huggingface_hub try
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _check_vocabulary(tokenizer: Any, spec: EncoderSpec) -> None:
    """Fail loudly on a tokenizer that maps ordinary English words to the unknown token (a broken vocab)."""
    ids = tokenizer("the market fell", add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if len(tokenizer) < 1000 or not ids or (unk is not None and unk in ids):
        raise UserError(
            f"encoder {spec.name!r}: its tokenizer has {len(tokenizer)} tokens and maps 'the market fell' to "
            f"{ids}; the tokenizer files look broken"
        )


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU RNG for weight initialisation, then restore the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
