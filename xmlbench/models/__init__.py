"""The model registry: every name usable as ``xmlbench train DATASET --model NAME``.

To add a model: write one module with a ``Model`` subclass and a frozen config dataclass, then register a
``ModelEntry`` below. ``tests/test_models.py`` picks it up from ``MODELS.names()`` (fit, predict, save,
reload, identical predictions) without any edit.
"""

from __future__ import annotations

from xmlbench.models.base import FitContext, Model, ModelEntry
from xmlbench.models.baselines.label_frequency import LabelFrequency, LabelFrequencyConfig
from xmlbench.models.baselines.tfidf import TfidfOvr, TfidfOvrConfig
from xmlbench.models.baselines.tree import Tree, TreeConfig, low_memory_preset
from xmlbench.registry import Registry

MODELS: Registry[ModelEntry] = Registry("model")

MODELS.register(
    "label-frequency",
    ModelEntry(
        name="label-frequency",
        cls=LabelFrequency,
        config_cls=LabelFrequencyConfig,
        description="predict the most frequent training labels for every document (the floor)",
    ),
)


def _register_lightxml() -> None:
    from xmlbench.models.lightxml import model as lightxml
    from xmlbench.models.lightxml import presets

    MODELS.register(
        "lightxml",
        ModelEntry(
            name="lightxml",
            cls=lightxml.LightXML,
            config_cls=lightxml.LightXMLConfig,
            description="LightXML: encoder + label clusters + generator/discriminator (flat or clustered)",
            presets=presets.presets(),
            protocols=presets.protocols(),
            neural=True,
        ),
    )


_register_lightxml()


def _register_linear_heads() -> None:
    from xmlbench.models.baselines import linear_heads as lh

    presets = {"default": lh.default_preset, "smoke": lh.smoke_preset}
    for cls, description in (
        (lh.SoftmaxLinear, "encoder + linear layer, LogSoftmax + class-weighted NLL (DistilBERT + Linear)"),
        (lh.SigmoidLinear, "encoder [CLS] + linear layer, one sigmoid per label, binary cross-entropy"),
    ):
        MODELS.register(cls.name, ModelEntry(name=cls.name, cls=cls, config_cls=lh.LinearHeadConfig,
                                             description=description, presets=presets, neural=True))


_register_linear_heads()


def _register_bilstm() -> None:
    from xmlbench.models.baselines import bilstm

    MODELS.register("bilstm", ModelEntry(
        name="bilstm", cls=bilstm.BiLSTM, config_cls=bilstm.BiLSTMConfig,
        description="token embeddings + 1-2 layer BiLSTM + max/mean/attention pooling + sigmoid (softmax "
                    "for single-label data) head; the distillation student",
        presets={"default": bilstm.default_preset, "smoke": bilstm.smoke_preset}, neural=True))


_register_bilstm()

MODELS.register(
    "tfidf-ovr",
    ModelEntry(
        name="tfidf-ovr",
        cls=TfidfOvr,
        config_cls=TfidfOvrConfig,
        description="TF-IDF (1-2 grams) + one linear SVM per label (liblinear); up to max_labels labels",
    ),
)

MODELS.register(
    "tree",
    ModelEntry(
        name="tree",
        cls=Tree,
        config_cls=TreeConfig,
        description="TF-IDF + partitioned label trees (Omikuji: Parabel, or Bonsai with mode=bonsai)",
        requires=("omikuji",),
        presets={"low-memory": low_memory_preset},
    ),
)

__all__ = ["MODELS", "FitContext", "Model", "ModelEntry"]
