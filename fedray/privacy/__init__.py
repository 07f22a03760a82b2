"""The privacy layer: DP-SGD accounting and wiring, client-level DP-FedAvg, Laplace, membership audits.

Pure torch/numpy/Opacus/dp_accounting; no Ray. See docs/privacy.md for what
each guarantee protects and what voids it. Import the modules themselves
(``fedray.privacy.accounting``, ``.opacus_wiring``, ``.membership``, …): importing
Opacus costs seconds, and every hospital process would pay it even without DP.
"""
