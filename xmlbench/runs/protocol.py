"""Protocols: ``fair`` (the default) and ``original`` (LightXML's run scripts, point by point).

A protocol has two halves. The run half lives here and the runner applies it: the seed, the split that
selects checkpoints and the size of the held-out part of train, each only where the user did not pass
``--seed``, ``--select-on`` or ``--valid-size`` (explicit flags win). The model half is a named bundle of
config keys in the model's registry entry (``ModelEntry.protocols``), merged above the preset: defaults <
preset < protocol bundle < ``--config`` file < ``--set``. Every key of a bundle also works alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmlbench.registry import Registry

ORIGINAL_SEED = 6088  # the original's --seed default
ORIGINAL_HOLD_OUT = 4000  # documents the original holds out of train on the clustered datasets (--valid)


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    seed: int  # the run's seed unless --seed is given
    flat_select_on: str  # "valid" or "test": the split that selects checkpoints on flat datasets
    valid_size: float  # held out of train when selecting on valid: a fraction (< 1) or a count
    clustered_valid_size: float  # the same on clustered datasets
    # A count is capped at this share of train, so that the original's 4,000 documents still leave a
    # training split on small (synthetic) data; a fraction is used as it is.
    max_valid_share: float = 1.0

    def select_on(self, regime: str) -> str:
        return self.flat_select_on if regime == "flat" else "valid"

    def hold_out(self, regime: str, n_train: int) -> float:
        size = self.clustered_valid_size if regime == "clustered" else self.valid_size
        if size >= 1:
            return float(min(size, max(1, int(n_train * self.max_valid_share))))
        return size


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.register("fair", Protocol(
    "fair", "select on a seeded 10% of train, read the test split once (the default)",
    seed=0, flat_select_on="valid", valid_size=0.1, clustered_valid_size=0.1,
))
PROTOCOLS.register("original", Protocol(
    "original", "LightXML's run scripts: seed 6088, flat datasets select on TEST, clustered ones hold out "
    "4,000 training documents; the model's bundle adds the original's training quirks",
    seed=ORIGINAL_SEED, flat_select_on="test", valid_size=0.1, clustered_valid_size=ORIGINAL_HOLD_OUT,
    max_valid_share=0.1,
))


def protocol_seed(protocol: str, seed: int | None) -> int:
    """The run's seed: the one given, else the protocol's."""
    return PROTOCOLS.get(protocol).seed if seed is None else seed
