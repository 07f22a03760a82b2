"""fedray: measure what privacy costs in federated medical imaging."""

__version__ = "0.1.0"
