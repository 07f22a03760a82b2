"""The releases and refusals that several mechanisms declare alike.

- :func:`common_outputs`: what every run may write (the config, the released model's metrics on held-out
  records, the ledger, operations, the audit), each with the kind of release it is;
- :func:`feature_cache_timing`: what a hospital may report of its feature cache under any claim;
- :func:`noise_share_refusals`: the refusals of every mechanism whose hospitals add their noise in shares that
  only the masked sum of the whole federation completes (``distributed_dpsgd``, ``dp_prototypes``).

A mechanism's own module calls them from its ``output_releases``, ``hospital_releases`` and ``refuse``; nothing
here branches on a mechanism's name.
"""

from __future__ import annotations

from fedray.config.schema import Config
from fedray.privacy.ledger import Release


def common_outputs(*, counts_public: bool, clients_public: bool, cross_validated: bool) -> tuple[Release, ...]:
    """The releases every mechanism shares: the config, metrics of the released model, the ledger, operations.

    ``counts_public``: the hospitals' record counts may be published (zero-out record adjacency);
    ``clients_public``: each round's participants may be published (nothing rests on the sample being secret);
    ``cross_validated``: the held-out metrics come from test folds that train the other folds' models, so they
    are evaluation statistics outside the guarantee, not post-processing of one released model.
    """
    held_out = ("summary.final_test*", "summary.final_val*", "summary.best_val_round*", "summary.validation_choices*",
                "rounds.val.*", "rounds.test.*", "rounds.test_per_hospital.*")
    releases = [
        Release("config", ("config", "summary.status", "summary.mode", "summary.model", "summary.rounds",
                           "summary.data.source", "summary.data.licence", "summary.data.classes", "summary.data.fold",
                           "summary.data.val", "summary.data.test", "summary.data.per_fold_sizes",
                           "summary.data.hospital_sites", "rounds.round", "rounds.total_rounds", "rounds.fold"),
                "public", "fixed by the config, the federation's sites and the held-out sets' definition before "
                          "training"),
        Release("held-out metrics", held_out, "outside",
                "k-fold CV: each test fold's records train the other folds' models, so these metrics are "
                "un-noised evaluation statistics of training records, outside the guarantee")
        if cross_validated else
        Release("held-out metrics", held_out, "post-processing",
                "the released model's metrics on held-out records no hospital trains on"),
        Release("ledger", ("summary.privacy.*",), "public",
                "the declared schedule and its accounting: functions of public quantities only"),
        Release("operations", ("summary.hospital_restarts", "summary.wall_seconds", "summary.timing.*",
                               "summary.seconds_per_round",
                               "summary.gpu_hours", "summary.placement.*", "summary.feature_cache*",
                               "summary.resumed_after_round", "summary.status_note", "rounds.round_seconds",
                               "rounds.fit_seconds", "rounds.restarts", "rounds.feature_cache", "summary.provenance*"),
                "outside", "operational timings and placement: a timing side channel is outside the guarantee"),
        Release("data governance", ("summary.data.without_consent", "summary.data.skipped_files",
                                    "summary.data.dropped_by_partition"),
                "outside", "consent and decoding counts kept for the audit trail, not covered by the guarantee"),
        Release("audit", ("summary.audit*",), "outside",
                "the audit's statistics are computed on real training records: audit statistics, outside the "
                "guarantee"),
        Release("models", ("models.*",), "post-processing", "the trained model(s): the mechanism's output"),
    ]
    if cross_validated:
        releases.append(Release("cross-validation", ("summary.cv*",), "outside",
                                "each test fold trains the other folds: the per-fold metrics are evaluation "
                                "statistics outside the guarantee"))
    if counts_public:
        releases.append(Release("record counts", ("summary.data.train", "summary.data.hospital_train_sizes",
                                                  "rounds.clients.num_samples"),
                                "public", "the neighbouring relation keeps every record slot (zero-out nulls a "
                                "record in place, replace-one swaps it), so each hospital's count of training "
                                "records and of an audit's record slots is the same for neighbours: public"))
    if clients_public:
        releases.append(Release("participants", ("rounds.clients.hospital", "rounds.clients.local_steps",
                                                 "rounds.clients.dp_steps"),
                                "public", "who trained in each round, and the fixed step schedule: no privacy "
                                "rests on the sample"))
    return tuple(releases)


def noise_share_refusals(cfg: Config, *, shared: str) -> tuple[tuple[bool, str, str], ...]:
    """(broken, why, fix) of every mechanism whose hospitals add noise in shares that only a masked sum of the
    whole federation completes (``shared``: what each hospital's share is added to)."""
    k, t = cfg.fl.num_hospitals, cfg.privacy.colluders
    sampled = cfg.fl.clients_per_round is not None and cfg.fl.clients_per_round < k
    return (
        (not cfg.fl.secure_aggregation, f"each hospital adds only a share of the noise, which its {shared} must "
         "not be seen with", "set fl.secure_aggregation=true"),
        (sampled, "fl.clients_per_round samples a cohort, whose noise shares would not complete the noise",
         "set fl.clients_per_round=null"),
        (t >= k, f"privacy.colluders={t} with {k} hospitals leaves no honest noise share",
         f"set privacy.colluders below {k}"),
    )


def feature_cache_timing(hospital: int) -> Release:
    """What a hospital may report of its feature cache under any claim: its timing, never its record count."""
    return Release("feature-cache timing", ("feature_cache.views", "feature_cache.seconds", "feature_cache.from_disk"),
                   "outside", "operational timing", party=f"hospital {hospital}")
