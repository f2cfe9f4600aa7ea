"""Synthetic XMC datasets in the LightXML/AttentionXML text format: the suite's offline default.

``write_synthetic(preset, out_dir, seed)`` writes ``{train,test}_{texts,labels}.txt`` and, last,
``synth.json`` (so its presence means the dataset is complete). Output is byte-identical for a given
(preset, seed).

The generative model, chosen so that results on it mean something:

* **Vocabulary.** Pronounceable lower-case ASCII pseudo-words built from syllables ("taluvi", "koremas"),
  so a WordPiece tokenizer splits them into a few sub-words. Three disjoint pools: short *background*
  words shared by every document (Zipf-distributed, like function words), *topic* words, and label
  *signature* words.
* **Labels and topics.** Labels are grouped into latent topics of Dirichlet-varied sizes. Each topic owns
  a vocabulary (Zipf within the topic); each label owns a few signature words drawn from a shared pool,
  so a label is identified by a combination of its topic's words and its own words.
* **Label frequencies.** Zipf-like popularity over labels with a long tail. Train counts are allocated
  exactly (every label seen at least once, except a few test-only tail labels), so the average
  docs/label and labels/doc match the preset. Test counts are drawn from the train frequencies.
* **Co-occurrence.** Label occurrences are laid out grouped by topic and cut into documents, so a
  document's labels mostly come from one topic; a fraction of documents swap half their labels with a
  partner document (two topics), and a small fraction of occurrences is shuffled globally (noise).
  Every swap is a permutation of occurrences, so the per-label counts stay exact.
* **Texts.** Lognormal lengths. Each document mixes background words (a per-document Beta share: some
  documents are background-heavy), its labels' topic words and its labels' signature words. Some
  signature words are missing from a given document and some label occurrences have none at all, so the
  task is learnable but not perfectly separable. Word order is shuffled within a document so that a
  truncating encoder sees every kind of word.

Large presets are generated with vectorised numpy in chunks of documents and streamed to disk, so memory
stays bounded: synth-amazon670k took 46 s at a 0.7 GB peak, synth-amazon3m 20 min at 7.5 GB (its label
layout is held whole; measured with /usr/bin/time -v, the latter while a tree shared the 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np

from xmlbench.errors import UserError
from xmlbench.io import atomic_path, make_tmp_dir, naming
from xmlbench.outputs import Output, writing
from xmlbench.registry import Registry

FORMAT = "xmlbench-synth/1"
SPLITS = ("train", "test")
TOKENS_PER_CHUNK = 4_000_000  # bounds memory per chunk (~ a few hundred MB of temporaries)

# Syllable inventory for pseudo-words. Vowels are repeated to make them more frequent than diphthongs.
_ONSETS = "b c d f g h j k l m n p r s t v w z br ch dr gr kr pl sh st th tr".split()
_VOWELS = "a e i o u a e i o u ai ou ea".split()
_CODAS = ("", "", "", "", "n", "s", "r", "l", "m", "t", "k")


@dataclass(frozen=True)
class SynthSpec:
    """Every knob of one synthetic dataset. Counts are exact; the rest are distribution parameters."""

    description: str
    n_train: int
    n_test: int
    n_labels: int
    labels_per_doc: float  # mean over train documents (exact up to de-duplication of a few occurrences)
    n_topics: int
    words_per_topic: int  # size of each topic's vocabulary
    topic_word_pool: int  # distinct topic words; topics draw from it, so some words are shared by topics
    signature_words: int  # signature words per label
    signature_pool: int  # distinct signature words; labels draw from it, so some are shared by labels
    background_vocab: int  # common words shared by all documents
    doc_len_mean: float  # words per document: lognormal with this mean ...
    doc_len_sigma: float  # ... and this sigma of log-length
    doc_len_min: int
    doc_len_max: int
    label_zipf: float = 0.7  # exponent s of label popularity (rank + shift) ** -s
    label_zipf_shift: float = 2.0  # flattens the very head so the top label is not absurdly frequent
    label_count_dispersion: float = 4.0  # labels/doc is 1 + NegBinomial(mean - 1, this dispersion)
    test_only_label_frac: float = 0.0  # tail labels that never occur in train, only in test
    topic_size_alpha: float = 8.0  # Dirichlet concentration of topic sizes: smaller = more uneven
    topic_purity: float = 0.45  # mean fraction of a document's words that are topic or signature words
    purity_concentration: float = 6.0  # Beta concentration of the per-document purity: smaller = more varied
    signature_share: float = 0.2  # fraction of those content words that are label signature words
    signature_dropout: float = 0.4  # probability a signature word of a label is absent from a document
    silent_label_frac: float = 0.2  # label occurrences with no signature words at all (topic only)
    second_topic_frac: float = 0.3  # documents that swap half their labels with a partner document
    label_noise_frac: float = 0.03  # label occurrences shuffled across all documents
    background_zipf: float = 1.0
    topic_word_zipf: float = 0.8

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_test, self.n_labels, self.n_topics) < 1:
            raise ValueError("n_train, n_test, n_labels and n_topics must be >= 1")
        if self.labels_per_doc < 1:
            raise ValueError("labels_per_doc must be >= 1: every document has a label")
        if self.n_train * self.labels_per_doc < self.n_labels:
            raise ValueError("too few train label occurrences to show every label once")
        if not 0 < self.doc_len_min <= self.doc_len_max:
            raise ValueError("need 0 < doc_len_min <= doc_len_max")
        if self.words_per_topic > self.topic_word_pool:
            raise ValueError("words_per_topic must not exceed topic_word_pool")

    @property
    def docs_per_label(self) -> float:
        return self.n_train * self.labels_per_doc / self.n_labels


PRESETS: Registry[SynthSpec] = Registry("synthetic preset")

# One compact block per preset reads better than one argument per line.
# fmt: off
PRESETS.register("tiny", SynthSpec(
    description="unit tests: 300 train / 100 test documents, 60 labels, 30-60 words",
    n_train=300, n_test=100, n_labels=60, labels_per_doc=2.5, n_topics=8,
    words_per_topic=60, topic_word_pool=400, signature_words=4, signature_pool=200, background_vocab=300,
    doc_len_mean=45, doc_len_sigma=0.2, doc_len_min=30, doc_len_max=60,
    label_zipf=0.8, label_count_dispersion=6.0, topic_purity=0.55, signature_share=0.5,
))
PRESETS.register("small", SynthSpec(
    description="CPU demo in a few minutes: 3,000 train / 1,000 test documents, 500 labels, ~100 words",
    n_train=3_000, n_test=1_000, n_labels=500, labels_per_doc=3.0, n_topics=20,
    words_per_topic=150, topic_word_pool=5_000, signature_words=4, signature_pool=2_000,
    background_vocab=1_500, doc_len_mean=100, doc_len_sigma=0.4, doc_len_min=25, doc_len_max=400,
    label_zipf=1.1, label_zipf_shift=10.0,
))
# Eurlex-4K's counts. Real Eurlex documents have a median of ~1,000+ words; we use ~450 on average (median
# ~380) to keep tokenising affordable; encoders truncate at 512 tokens anyway. signature_share is tuned so
# that TF-IDF + one-vs-rest linear models land near their real Eurlex-4K scores (P@1 ~ 80).
PRESETS.register("synth-eurlex4k", SynthSpec(
    description="Eurlex-4K's counts (15,449 / 3,865 documents, 3,956 labels, 5.30 labels/doc), ~450 words",
    n_train=15_449, n_test=3_865, n_labels=3_956, labels_per_doc=5.30, n_topics=60,
    words_per_topic=400, topic_word_pool=30_000, signature_words=5, signature_pool=15_000,
    background_vocab=3_000, doc_len_mean=450, doc_len_sigma=0.6, doc_len_min=40, doc_len_max=4_000,
    label_zipf=1.1, label_zipf_shift=20.0, signature_share=0.12,
))
PRESETS.register("synth-amazon670k", SynthSpec(
    description="Amazon-670K's counts (490,449 / 153,025 documents, 670,091 labels, 5.45 labels/doc), "
    "short product-like documents of ~100 words",
    n_train=490_449, n_test=153_025, n_labels=670_091, labels_per_doc=5.45, n_topics=2_000,
    words_per_topic=150, topic_word_pool=100_000, signature_words=4, signature_pool=150_000,
    background_vocab=5_000, doc_len_mean=100, doc_len_sigma=0.45, doc_len_min=20, doc_len_max=600,
    label_zipf=1.0, label_zipf_shift=50.0, label_count_dispersion=10.0, test_only_label_frac=0.004,
    topic_purity=0.5, signature_share=0.35, silent_label_frac=0.25,
))
PRESETS.register("synth-wiki500k", SynthSpec(
    description="Wiki-500K's counts (1,779,881 / 769,421 documents, 501,070 labels, 4.75 labels/doc), "
    "~110 words: for load-scale tests",
    n_train=1_779_881, n_test=769_421, n_labels=501_070, labels_per_doc=4.75, n_topics=2_000,
    words_per_topic=150, topic_word_pool=100_000, signature_words=4, signature_pool=150_000,
    background_vocab=5_000, doc_len_mean=110, doc_len_sigma=0.5, doc_len_min=20, doc_len_max=1_000,
    label_zipf=1.0, label_zipf_shift=10.0, test_only_label_frac=0.002,
))
# Amazon-3M's counts (Bhatia et al.'s repository: 1,717,899 / 742,507 points, 2,812,281 labels, 36.04 labels
# per point, 22.02 points per label); product texts of ~100 words like synth-amazon670k. Generated on first
# use like every preset: 2.5 GB of text, about 20 min and 7.5 GB peak on 2 cores (measured).
PRESETS.register("synth-amazon3m", replace(
    PRESETS.get("synth-amazon670k"),  # the same kind of documents and label structure, at Amazon-3M's counts
    description="Amazon-3M's counts (1,717,899 / 742,507 documents, 2,812,281 labels, 36.04 labels/doc), "
    "~100 words",
    n_train=1_717_899, n_test=742_507, n_labels=2_812_281, labels_per_doc=36.04, n_topics=8_000,
    topic_word_pool=200_000, signature_pool=400_000,
))
# fmt: on


# ----------------------------------------------------------------------------------------------------
# Public entry point


def write_synthetic(preset: str, out_dir: str | Path, seed: int = 0, progress: bool = True,
                    force: bool = False) -> dict:
    """Generate preset ``preset`` with ``seed`` into ``out_dir``; return the counts (also in synth.json).

    All or nothing: the files are generated in a temporary folder inside ``out_dir`` and moved into
    place only once every one of them is complete (a full disk leaves no partial dataset behind).
    ``out_dir`` must be new, empty, or this same synthetic dataset (preset and seed), unless ``force``.
    """
    spec = PRESETS.get(preset)
    preset = PRESETS.canonical(preset)
    if not 0 <= seed < 2**63:
        raise UserError(f"option --seed must be in [0, 2**63), got {seed}")
    out = Path(out_dir)
    target = Output("dataset", ident=f"synthetic {preset}, seed {seed}", adopt=is_synthetic_folder)
    with writing(out, target, force=force):
        tmp = make_tmp_dir(out, "synth")
        try:
            counts = _generate(spec, preset, seed, tmp, progress)
            _move_into_place(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return counts


def is_synthetic_folder(folder: Path) -> bool:
    """A synthetic dataset an older xmlbench wrote (before output markers): its synth.json."""
    try:
        return json.loads((folder / "synth.json").read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _move_into_place(tmp: Path, out: Path) -> None:
    """Data files first, synth.json last: until it is there, the folder does not claim to be complete."""
    (out / "synth.json").unlink(missing_ok=True)  # a stale one must not vouch for files being replaced
    names = sorted(p.name for p in tmp.iterdir() if p.name != "synth.json") + ["synth.json"]
    for name in names:
        with naming(out / name):
            os.replace(tmp / name, out / name)


def _generate(spec: SynthSpec, preset: str, seed: int, out: Path, progress: bool) -> dict:
    world_rng, train_rng, test_rng = (np.random.default_rng(s) for s in _seed_sequence(preset, seed).spawn(3))
    world = _build_world(spec, world_rng)
    train_counts, test_counts = _label_counts(spec, world, world_rng)

    counts: dict = {
        "n_train": spec.n_train,
        "n_test": spec.n_test,
        "n_labels": spec.n_labels,
        "vocab_size": len(world.words),
    }
    seen: dict[str, np.ndarray] = {}
    for split, n_docs, label_counts, rng in (
        ("train", spec.n_train, train_counts, train_rng),
        ("test", spec.n_test, test_counts, test_rng),
    ):
        offsets, labels = _assign_labels(rng, spec, world, label_counts, n_docs)
        counts[split] = _write_split(out, split, spec, world, offsets, labels, rng, progress)
        seen[split] = np.bincount(labels, minlength=spec.n_labels)
    counts.update(_label_statistics(seen["train"], seen["test"]))

    meta = {"format": FORMAT, "preset": preset, "seed": seed, "spec": asdict(spec), "counts": counts}
    with atomic_path(out / "synth.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return counts


def _seed_sequence(preset: str, seed: int) -> np.random.SeedSequence:
    # crc32, not hash(): str hashes are salted per process and would break determinism.
    return np.random.SeedSequence([int(seed), zlib.crc32(preset.encode("utf-8"))])


# ----------------------------------------------------------------------------------------------------
# The hidden generative model: vocabulary, topics, label signatures


@dataclass(frozen=True)
class _World:
    words: np.ndarray  # object array of str: every word type
    background_ids: np.ndarray  # (background_vocab,) word ids, most frequent first
    background_cdf: np.ndarray
    topic_words: np.ndarray  # (n_topics, words_per_topic) word ids, most frequent first
    topic_word_cdf: np.ndarray
    label_topic: np.ndarray  # (n_labels,) topic of each label
    label_signatures: np.ndarray  # (n_labels, signature_words) word ids
    label_popularity: np.ndarray  # (n_labels,) Zipf weights, in label-id order (ids are shuffled ranks)
    label_names: np.ndarray  # object array of str: "l000123"


def _build_world(spec: SynthSpec, rng: np.random.Generator) -> _World:
    taken: set[str] = set()
    # Common words are short, as in natural language; label-specific words are longer.
    background = _pseudo_words(rng, spec.background_vocab, (1, 2), taken)
    topical = _pseudo_words(rng, spec.topic_word_pool, (2, 3), taken)
    signature = _pseudo_words(rng, spec.signature_pool, (2, 3), taken)
    words = np.array(background + topical + signature, dtype=object)
    topic_base, signature_base = len(background), len(background) + len(topical)

    topic_words = topic_base + _rows_without_repeats(
        rng, spec.n_topics, spec.words_per_topic, spec.topic_word_pool
    )
    label_signatures = signature_base + _rows_without_repeats(
        rng, spec.n_labels, spec.signature_words, spec.signature_pool
    )
    topic_sizes = rng.dirichlet(np.full(spec.n_topics, spec.topic_size_alpha))
    label_topic = rng.choice(spec.n_topics, size=spec.n_labels, p=topic_sizes)
    # Label ids are a random permutation of popularity ranks: ids carry no frequency information.
    popularity = _zipf_weights(spec.n_labels, spec.label_zipf, spec.label_zipf_shift)[
        rng.permutation(spec.n_labels)
    ]
    width = max(6, len(str(spec.n_labels - 1)))
    names = np.array([f"l{i:0{width}d}" for i in range(spec.n_labels)], dtype=object)
    return _World(
        words=words,
        background_ids=np.arange(len(background)),
        background_cdf=_cdf(_zipf_weights(len(background), spec.background_zipf, 1.0)),
        topic_words=topic_words,
        topic_word_cdf=_cdf(_zipf_weights(spec.words_per_topic, spec.topic_word_zipf, 1.0)),
        label_topic=label_topic,
        label_signatures=label_signatures,
        label_popularity=popularity,
        label_names=names,
    )


def _pseudo_words(rng: np.random.Generator, n: int, syllables: tuple[int, int], taken: set[str]) -> list[str]:
    """``n`` new distinct pronounceable words of ``syllables`` (min, max) syllables, not in ``taken``."""
    syllable_list = np.array([o + v for o in _ONSETS for v in _VOWELS] + [""], dtype=object)
    empty = len(syllable_list) - 1
    codas = np.array(_CODAS, dtype=object)
    found: list[str] = []
    while len(found) < n:
        m = int((n - len(found)) * 1.3) + 16
        ids = rng.integers(0, empty, size=(m, syllables[1]))
        lengths = rng.integers(syllables[0], syllables[1] + 1, size=m)
        ids[np.arange(syllables[1]) >= lengths[:, None]] = empty  # pad short words with ""
        parts = syllable_list[ids]
        candidates = parts[:, 0].copy()
        for c in range(1, syllables[1]):
            candidates += parts[:, c]
        candidates += codas[rng.integers(0, len(codas), size=m)]
        for w in candidates.tolist():
            if w not in taken and len(w) >= 2:
                taken.add(w)
                found.append(w)
                if len(found) == n:
                    break
    return found


def _rows_without_repeats(rng: np.random.Generator, rows: int, k: int, pool: int) -> np.ndarray:
    """(rows, k) ids from ``range(pool)``, distinct within each row (rows may share ids)."""
    out = rng.integers(0, pool, size=(rows, k))
    for _ in range(1000):  # collisions are rare (k << pool): re-draw only the repeated cells
        order = np.argsort(out, axis=1, kind="stable")
        srt = np.take_along_axis(out, order, axis=1)
        repeated = np.zeros_like(out, dtype=bool)
        np.put_along_axis(repeated, order[:, 1:], srt[:, 1:] == srt[:, :-1], axis=1)
        if not repeated.any():
            return out
        out[repeated] = rng.integers(0, pool, size=int(repeated.sum()))
    raise RuntimeError("could not draw distinct ids; the pool is too small")


def _zipf_weights(n: int, exponent: float, shift: float) -> np.ndarray:
    return (np.arange(1, n + 1) + shift) ** -exponent


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


# ----------------------------------------------------------------------------------------------------
# Label counts and label -> document assignment


def _label_counts(spec: SynthSpec, world: _World, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exact train occurrences per label, and test occurrences drawn from the train frequencies."""
    n_test_only = int(round(spec.test_only_label_frac * spec.n_labels))
    # Test-only labels come from the rare half: a frequent label never seen in training is unrealistic.
    rare_half = np.argsort(world.label_popularity)[: spec.n_labels // 2]
    test_only = rng.choice(rare_half, size=min(n_test_only, len(rare_half)), replace=False)
    in_train = np.ones(spec.n_labels, dtype=bool)
    in_train[test_only] = False

    total = int(round(spec.n_train * spec.labels_per_doc))
    train = np.zeros(spec.n_labels, dtype=np.int64)
    # Cap at half the documents so de-duplication can always spread a label over distinct documents.
    train[in_train] = _allocate_at_least_one(total, world.label_popularity[in_train], cap=spec.n_train // 2)

    test_total = int(round(spec.n_test * spec.labels_per_doc))
    weights = train + (~in_train)  # test-only labels get the weight of the rarest train labels
    test = rng.multinomial(test_total, weights / weights.sum()).astype(np.int64)
    test[~in_train] = np.maximum(test[~in_train], 1)
    test = np.minimum(test, max(1, spec.n_test // 2))
    return train, test


def _allocate_at_least_one(total: int, weights: np.ndarray, cap: int) -> np.ndarray:
    """Integers >= 1 summing to ``total``, proportional to ``weights`` beyond the 1, none above ``cap``."""
    counts = np.ones(len(weights), dtype=np.int64)
    rest = total - len(weights)
    free = np.ones(len(weights), dtype=bool)
    while rest > 0:
        share = rest * weights * free / (weights * free).sum()
        add = np.floor(share).astype(np.int64)
        # Largest remainders get the leftover units, so the sum is exact.
        left = rest - int(add.sum())
        if left:
            add[np.argsort(-(share - add), kind="stable")[:left]] += 1
        counts += add
        over = counts > cap
        rest = int((counts[over] - cap).sum())
        counts[over] = cap
        free &= ~over
        if rest and not free.any():
            raise ValueError("label counts do not fit under the cap")
    return counts


def _doc_sizes(rng: np.random.Generator, n_docs: int, total: int, spec: SynthSpec) -> np.ndarray:
    """Labels per document: 1 + NegBinomial with the preset's mean, adjusted to sum to ``total``."""
    extra_mean = max(total / n_docs - 1.0, 1e-9)
    r = spec.label_count_dispersion
    sizes = 1 + rng.negative_binomial(r, r / (r + extra_mean), size=n_docs)
    sizes = np.minimum(sizes, spec.n_labels)
    diff = total - int(sizes.sum())
    while diff > 0:
        room = np.nonzero(sizes < spec.n_labels)[0]
        pick = rng.choice(room, size=min(diff, len(room)), replace=False)
        sizes[pick] += 1
        diff -= len(pick)
    while diff < 0:
        room = np.nonzero(sizes > 1)[0]
        pick = rng.choice(room, size=min(-diff, len(room)), replace=False)
        sizes[pick] -= 1
        diff += len(pick)
    return sizes


def _assign_labels(
    rng: np.random.Generator, spec: SynthSpec, world: _World, label_counts: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, labels) of each document's sorted labels, documents in (random) file order."""
    n_labels = len(label_counts)
    occurrences = np.repeat(np.arange(n_labels), label_counts)
    # Lay occurrences out grouped by topic; consecutive cuts become documents. Within a topic, a label's
    # c occurrences sit at jittered fractions (j + u) / c of the topic's run, evenly spaced, so one
    # document rarely gets a label twice (which would push it out of the topic when de-duplicating).
    spread = (_ranges(label_counts) + rng.random(len(occurrences))) / label_counts[occurrences]
    slots = occurrences[np.lexsort((spread, world.label_topic[occurrences]))]
    sizes = _doc_sizes(rng, n_docs, len(slots), spec)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    _swap_with_partner_documents(rng, slots, sizes, starts, spec.second_topic_frac)
    noisy = np.nonzero(rng.random(len(slots)) < spec.label_noise_frac)[0]
    slots[noisy] = slots[rng.permutation(noisy)]
    slots, sizes = _spread_duplicates(rng, slots, sizes, n_labels)

    # Documents were laid out in topic order; the files list them in random order.
    order = rng.permutation(n_docs)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sizes = sizes[order]
    slots = slots[np.repeat(starts[order], sizes) + _ranges(sizes)]
    return np.concatenate([[0], np.cumsum(sizes)]), slots


def _swap_with_partner_documents(
    rng: np.random.Generator, slots: np.ndarray, sizes: np.ndarray, starts: np.ndarray, fraction: float
) -> None:
    """Pair a fraction of documents and swap about half their labels: two-topic documents."""
    chosen = rng.permutation(np.nonzero(rng.random(len(sizes)) < fraction)[0])
    chosen = chosen[: len(chosen) // 2 * 2]
    a, b = chosen[0::2], chosen[1::2]
    m = np.maximum(1, np.minimum(sizes[a], sizes[b]) // 2)
    pa = np.repeat(starts[a], m) + _ranges(m)
    pb = np.repeat(starts[b], m) + _ranges(m)
    slots[pa], slots[pb] = slots[pb], slots[pa].copy()


def _spread_duplicates(
    rng: np.random.Generator, slots: np.ndarray, sizes: np.ndarray, n_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Move repeated labels of a document elsewhere (counts preserved); drop the few left; sort each doc."""
    doc = np.repeat(np.arange(len(sizes)), sizes)
    for round_ in range(60):
        key = doc * n_labels + slots
        order = np.argsort(key, kind="stable")
        dup = order[1:][key[order][1:] == key[order][:-1]]
        if len(dup) == 0:
            break
        # Swap each duplicate with a nearby slot (same topic region, since slots are laid out by topic);
        # the window widens each round so that labels too frequent for their topic still find room.
        window = min(len(slots), 16 << round_)
        partner = np.clip(dup + rng.integers(-window, window + 1, size=len(dup)), 0, len(slots) - 1)
        # Swaps must be disjoint pairs for the counts to stay exact: drop partners that are duplicates
        # themselves or already taken by another duplicate.
        ok = ~np.isin(partner, dup)
        dup, partner = dup[ok], partner[ok]
        partner, first = np.unique(partner, return_index=True)
        dup = dup[first]
        slots[dup], slots[partner] = slots[partner], slots[dup].copy()
    key = np.unique(doc * n_labels + slots)  # sorted, and drops duplicates that survived
    doc, slots = key // n_labels, key % n_labels
    return slots, np.bincount(doc, minlength=len(sizes))


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(n)`` for each n in ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)


# ----------------------------------------------------------------------------------------------------
# Document texts


def _write_split(
    out: Path,
    split: str,
    spec: SynthSpec,
    world: _World,
    offsets: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    progress: bool,
) -> dict:
    """Stream one split's texts and labels to disk chunk by chunk; return its counts."""
    from tqdm.auto import tqdm

    n_docs = len(offsets) - 1
    chunk = max(100, int(TOKENS_PER_CHUNK / spec.doc_len_mean))
    salt = int(rng.integers(0, 2**62))  # keys the per-occurrence signature dropout hash
    lengths = np.empty(n_docs, dtype=np.int64)
    text_table = _line_tables(world.words)
    label_table = _line_tables(world.label_names)
    with ExitStack() as stack:
        texts = open(stack.enter_context(atomic_path(out / f"{split}_texts.txt")), "wb")
        label_file = open(stack.enter_context(atomic_path(out / f"{split}_labels.txt")), "wb")
        stack.enter_context(texts)
        stack.enter_context(label_file)
        bar = stack.enter_context(tqdm(total=n_docs, desc=f"synth {split}", unit="doc", disable=not progress))
        for lo in range(0, n_docs, chunk):
            hi = min(n_docs, lo + chunk)
            local_offsets = offsets[lo : hi + 1] - offsets[lo]
            local_labels = labels[offsets[lo] : offsets[hi]]
            token_sizes, tokens = _sample_tokens(
                rng, spec, world, local_offsets, local_labels, salt, first_occurrence=int(offsets[lo])
            )
            lengths[lo:hi] = token_sizes
            _write_lines(texts, text_table, tokens, token_sizes)
            _write_lines(label_file, label_table, local_labels, np.diff(local_offsets))
            bar.update(hi - lo)
    n_occ = int(offsets[-1])
    return {
        "docs": n_docs,
        "label_occurrences": n_occ,
        "labels_per_doc": round(n_occ / n_docs, 4),
        "distinct_labels": int(len(np.unique(labels))),
        "words_mean": round(float(lengths.mean()), 2),
        "words_median": float(np.median(lengths)),
        "words_total": int(lengths.sum()),
        "texts_bytes": (out / f"{split}_texts.txt").stat().st_size,
        "labels_bytes": (out / f"{split}_labels.txt").stat().st_size,
    }


def _sample_tokens(
    rng: np.random.Generator,
    spec: SynthSpec,
    world: _World,
    offsets: np.ndarray,
    labels: np.ndarray,
    salt: int,
    first_occurrence: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Word ids of a chunk of documents (shuffled within each document) and each document's length."""
    n_docs = len(offsets) - 1
    n_labels_doc = np.diff(offsets)
    lengths = _doc_lengths(rng, spec, n_docs)
    purity = rng.beta(
        spec.topic_purity * spec.purity_concentration,
        (1 - spec.topic_purity) * spec.purity_concentration,
        size=n_docs,
    )
    n_content = rng.binomial(lengths, purity)
    n_signature = rng.binomial(n_content, spec.signature_share)

    background = world.background_ids[
        np.searchsorted(world.background_cdf, rng.random(int((lengths - n_content).sum())))
    ]

    # Each content word belongs to one of its document's labels, picked uniformly.
    doc = np.repeat(np.arange(n_docs), n_content)
    slot = offsets[doc] + (rng.random(len(doc)) * n_labels_doc[doc]).astype(np.int64)
    label = labels[slot]
    rank = np.minimum(np.searchsorted(world.topic_word_cdf, rng.random(len(doc))), spec.words_per_topic - 1)
    content = world.topic_words[world.label_topic[label], rank]
    # The first n_signature content words of a document are meant to be signature words; those whose word
    # is dropped for this label occurrence (or whose occurrence is silent) stay topic words.
    is_signature = _ranges(n_content) < np.repeat(n_signature, n_content)
    which = rng.integers(0, spec.signature_words, size=len(doc))
    occurrence = slot + first_occurrence
    kept = (_hash_uniform(occurrence, which, salt) >= spec.signature_dropout) & (
        _hash_uniform(occurrence, np.full_like(which, spec.signature_words), salt) >= spec.silent_label_frac
    )
    use = is_signature & kept
    content[use] = world.label_signatures[label[use], which[use]]

    # Interleave background and content words, then shuffle within each document.
    bg_doc = np.repeat(np.arange(n_docs), lengths - n_content)
    all_doc = np.concatenate([doc, bg_doc])
    tokens = np.concatenate([content, background])
    order = np.argsort(all_doc + rng.random(len(all_doc)), kind="stable")
    return lengths, tokens[order]


def _doc_lengths(rng: np.random.Generator, spec: SynthSpec, n_docs: int) -> np.ndarray:
    mu = np.log(spec.doc_len_mean) - spec.doc_len_sigma**2 / 2  # so that the mean is doc_len_mean
    raw = rng.lognormal(mu, spec.doc_len_sigma, size=n_docs)
    return np.clip(np.rint(raw), spec.doc_len_min, spec.doc_len_max).astype(np.int64)


def _hash_uniform(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic uniform [0, 1) per (a, b) pair (splitmix64 finaliser)."""
    h = (
        a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        + b.astype(np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        + np.uint64(salt)
    )
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _line_tables(names: np.ndarray) -> np.ndarray:
    """Each name followed by a space (ids < n) or by a newline (ids n..2n-1, for a line's last item)."""
    return np.concatenate(
        [np.array([w + " " for w in names], dtype=object), np.array([w + "\n" for w in names], dtype=object)]
    )


def _write_lines(f: BinaryIO, table: np.ndarray, ids: np.ndarray, sizes: np.ndarray) -> None:
    """Write ``ids`` as lines of ``sizes`` items each; one join per chunk, no per-document Python loop."""
    ids = ids.astype(np.int64)  # a copy: the caller's array is left alone
    ends = np.cumsum(sizes) - 1
    ids[ends] += len(table) // 2
    f.write("".join(table[ids].tolist()).encode("utf-8"))


def _label_statistics(train: np.ndarray, test: np.ndarray) -> dict:
    in_train = train > 0
    freq = train[in_train]
    return {
        "labels_in_train": int(in_train.sum()),
        "labels_in_test": int((test > 0).sum()),
        "test_only_labels": int(((test > 0) & ~in_train).sum()),
        "docs_per_label_train": round(float(freq.mean()), 3),
        "label_freq_train_max": int(freq.max()),
        "label_freq_train_median": float(np.median(freq)),
        "labels_with_at_most_5_train_docs": round(float((freq <= 5).mean()), 4),
    }
