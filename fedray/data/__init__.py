"""Data layer: load, filter by consent, split, partition and preprocess images or tables (no Ray).

:func:`fedray.data.splits.load_splits` is the entry point: it loads the
dataset that ``data.name`` names (one folder each under
:mod:`fedray.data.datasets`, :mod:`fedray.data.registry`), removes records
without informed consent (:mod:`fedray.data.consent`), and splits the rest
into :class:`~fedray.data.types.Splits`. :mod:`fedray.data.deal` then
partitions the training labels among hospitals (:mod:`fedray.data.partition`);
inputs are mapped per batch on the device
(:class:`~fedray.data.whitening.ColorWhitening` for images,
:class:`~fedray.data.feature_scaling.FeatureScaling` for tables).

Importing the package imports nothing: the dataset folders register their
settings while the config is composed, before torch is loaded.
"""
