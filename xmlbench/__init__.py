"""xmlbench: an extreme multi-label text classification benchmark suite (LightXML, variants, baselines)."""

__version__ = "0.1.0"
