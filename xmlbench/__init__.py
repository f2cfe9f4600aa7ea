"""xmlbench: an extreme multi-label text classification benchmark suite (LightXML, variants, baselines)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``import xmlbench`` stays cheap (no torch, no scipy) until the API is used.
    if name == "load":
        from xmlbench.runs.api import load

        return load
    raise AttributeError(f"module 'xmlbench' has no attribute {name!r}")
