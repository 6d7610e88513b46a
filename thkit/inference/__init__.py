"""Inference and evaluation: streaming animation of a source image by a driving video (``thkit animate``),
the field's evaluation protocols (``thkit eval``) and the offline demo (``thkit demo``)."""
