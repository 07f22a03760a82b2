"""Ray Tune sweeps over federated experiments, and the privacy-utility frontier they produce."""
