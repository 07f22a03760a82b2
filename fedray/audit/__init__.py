"""The privacy audit: what a real attacker learns, measured against the ledger's ε (docs/privacy.md).

One package, behind the seams the training path offers to any observer
(it knows nothing of audits):

- a gradient hook in each hospital's step (:mod:`fedray.training.hooks`),
  which :mod:`.gradient_canaries` uses to add the auditor's gradient canaries
  and to read every step back (its round report travels with the update);
- a round observer at the driver (:mod:`fedray.federation.observers`), which
  scores those canaries from what the driver receives;
- a client insertion in the DP-FedAvg sum (:class:`fedray.strategies.base.ClientInsertion`),
  which adds the canary clients;
- record slots in the hospitals' shards, which hold the input canaries.

The modules, in the order a run uses them: :mod:`.settings` (``audit.*``),
:mod:`.plan` (what is inserted where, decided before any actor starts),
:mod:`.canaries` (the canaries' designs and scores), :mod:`.gradient_canaries`,
:mod:`.step_view` (the step-level observer),
:mod:`.auditor` (the task after the rounds, and the summary), :mod:`.pools`,
:mod:`.membership` and :mod:`.fair_attack` (the held-out membership attacks),
:mod:`.canary_bounds` and :mod:`.fdp_bounds` (the one-run bounds, Steinke et
al.'s and under f-DP), :mod:`.report` (the CLI's lines,
the folds' combination), :mod:`.columns` (the frontier's audit columns) and
:mod:`.family` (a sweep's audits corrected together, Holm).

Importing the package registers only the settings (no torch): the config's
``COMPONENT_PACKAGES`` imports it before composing.
"""

from fedray.audit.settings import MIN_CANARIES, AuditSettings, inserted_record_slots

__all__ = ["MIN_CANARIES", "AuditSettings", "inserted_record_slots"]
