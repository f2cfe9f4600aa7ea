"""LightXML (Jiang et al., AAAI 2021): the model (``model``), its presets (``presets``), the balanced label
clustering (``clustering``) and the variants (``variants``, one file each)."""
