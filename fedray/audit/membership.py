r"""Membership-inference attacks: the attacker's view of a trained model.

An attack sees a model's output on a record and scores how likely the record
was in the training set ("member"); a higher score means "member". Scores for
known members and non-members give the attack's ROC curve, its power at low
false-positive rates (Carlini et al. 2022, "Membership Inference Attacks From
First Principles", argue this is the figure that matters), and an empirical
lower bound on epsilon that any correct DP guarantee must exceed.

Attacks (all black-box, on the per-record loss
:math:`\ell = -\log p_y`, where :math:`p_y` is the predicted probability of the
true label):

* loss threshold (Yeom et al. 2018): score :math:`= -\ell`.
* difficulty calibration (Watson et al. 2022): score
  :math:`= -(\ell - \frac1R\sum_r \ell_r)`, where :math:`\ell_r` is the record's
  loss under reference model :math:`r`, trained on the same distribution but
  *not* on the record.
* offline LiRA (Carlini et al. 2022, Sec. IV-C): with logit-scaled confidence
  :math:`\phi = \log\frac{p_y}{1-p_y}`, fit :math:`\mathcal N(\mu_{out},\sigma^2_{out})`
  per record to the :math:`R` reference values and score the one-sided
  :math:`\log \Pr[Z < \phi_{target}]`, :math:`Z \sim \mathcal N(\mu_{out},\sigma^2_{out})`.
  With fewer than 64 reference models :math:`\sigma_{out}` is pooled over all
  records (the paper's "global variance", better for small :math:`R`).
* offline RMIA (Zarifzadeh et al. 2024): :func:`rmia_scores`, on the true-label
  probability :math:`p = e^{-\ell}` of the target, of the reference models and
  of population records that no model trained on.

The reference models must not have seen the scored records; otherwise the
calibration is biased toward "non-member" and the attack is weakened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta, norm

from fedray.errors import FedrayError

MIN_LOSS = 1e-12  # caps phi at about 27.6 when p_y rounds to 1
GLOBAL_VARIANCE_BELOW = 64  # reference models; Carlini et al. 2022, Sec. VI-A
# Offline RMIA's a in Pr(x) = ((1+a) Pr_OUT(x) + 1-a)/2 (Zarifzadeh et al. 2024, offline RMIA). The paper tunes a
# per dataset on a pair of reference models, one IN and one OUT for each record; the auditor's reference models all
# train on the same records, so it has no such pair, and it takes 0.3, the default of the authors' Privacy Meter.
RMIA_OFFLINE_A = 0.3
RMIA_GAMMA = 1.0  # the paper's default threshold on the pairwise likelihood ratio LR(x, z)


def per_example_losses(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    r"""Cross-entropy :math:`-\log p_{i,y_i}` from probabilities ``probs`` [N, K] and ``labels`` [N].

    :math:`p` is clipped to :math:`[10^{-12}, 1]` so a confident mistake gives a
    finite loss (about 27.6).

    >>> per_example_losses(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([0, 1])).round(3)
    array([ 0.693, 27.631])
    """
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return -np.log(np.clip(p, MIN_LOSS, 1.0))


def loss_threshold_scores(
    member_losses: np.ndarray, nonmember_losses: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Yeom et al. (2018) scores :math:`-\\ell` and membership labels (1 = member), members first."""
    losses = np.concatenate([member_losses, nonmember_losses]).astype(np.float64)
    is_member = np.concatenate([np.ones(len(member_losses)), np.zeros(len(nonmember_losses))])
    return -losses, is_member.astype(int)


def _logit_confidence(losses: np.ndarray) -> np.ndarray:
    r""":math:`\phi = \log\frac{p}{1-p}`, :math:`p = e^{-\ell}`, computed stably as :math:`-\ell - \log(-\mathrm{expm1}(-\ell))`."""
    loss = np.maximum(np.asarray(losses, dtype=np.float64), MIN_LOSS)
    return -loss - np.log(-np.expm1(-loss))


def calibrated_scores(
    target_losses: np.ndarray, reference_losses: np.ndarray, *, method: str = "lira"
) -> np.ndarray:
    """Per-record calibrated scores; ``reference_losses`` is [R, N] from R models that never saw the N records.

    ``method="difficulty"``: Watson et al. (2022); ``method="lira"``: offline
    LiRA (Carlini et al. 2022), global variance when R < 64.
    """
    ref = np.atleast_2d(np.asarray(reference_losses, dtype=np.float64))
    target = np.asarray(target_losses, dtype=np.float64)
    if ref.shape[1] != target.shape[0]:
        raise FedrayError(
            f"reference losses have shape {ref.shape} but there are {target.shape[0]} records: pass [R, N]"
        )
    if method == "difficulty":
        return -(target - ref.mean(axis=0))
    if method != "lira":
        raise FedrayError(f"calibration method={method!r} is unknown: use 'lira' or 'difficulty'")
    phi_ref = _logit_confidence(ref)
    mu = phi_ref.mean(axis=0)
    if ref.shape[0] < 2:
        raise FedrayError("offline LiRA needs at least 2 reference models: train more shadow models")
    if ref.shape[0] < GLOBAL_VARIANCE_BELOW:
        sd = np.full_like(mu, np.std(phi_ref - mu, ddof=1))
    else:
        sd = phi_ref.std(axis=0, ddof=1)
    return norm.logcdf(_logit_confidence(target), loc=mu, scale=np.maximum(sd, 1e-6))


def rmia_scores(
    target_losses: np.ndarray,
    reference_losses: np.ndarray,
    population_losses: np.ndarray,
    population_reference_losses: np.ndarray,
    *,
    a: float = RMIA_OFFLINE_A,
    gamma: float = RMIA_GAMMA,
) -> np.ndarray:
    r"""Offline RMIA (Zarifzadeh, Liu & Shokri, ICML 2024): the share of population records ``x`` dominates.

    Losses are cross-entropies of the true label, so :math:`p = e^{-\ell}`:
    ``target_losses`` [n] and ``reference_losses`` [R, n] on the scored records,
    ``population_losses`` [m] and ``population_reference_losses`` [R, m] on
    population records :math:`z`. The R reference models and the target must
    never have trained on any :math:`z`, and the reference models never on the
    scored records. With :math:`\bar p_{OUT}(x)` the mean over reference models,

    .. math:: p(x) = \tfrac12\big((1+a)\,\bar p_{OUT}(x) + 1 - a\big),\qquad
              r(x) = \frac{p(x\mid\theta)}{p(x)},\qquad
              \mathrm{Score}(x) = \frac1m\sum_z \mathbb 1\Big[\frac{r(x)}{r(z)} \ge \gamma\Big].

    :math:`p(x)` is the paper's offline approximation of
    :math:`\tfrac12(p_{IN}(x) + p_{OUT}(x))`, the probability averaged over
    models half of which trained on :math:`x`: it assumes
    :math:`p_{IN} \approx a\,p_{OUT} + 1 - a`. Every :math:`z` is OUT for every
    reference model too, so :math:`p(z)` takes the same approximation (as in
    the authors' Privacy Meter code). For a fixed population the score
    is non-decreasing in :math:`r(x)`: it ranks records as :math:`r(x)` does,
    in :math:`m + 1` steps, and reads as a false-positive rate (a score
    threshold :math:`s` flags about :math:`1 - s` of non-members such as the
    :math:`z`), so ``m`` should not be much below the scored non-members.

    >>> loss = lambda p: -np.log(np.array(p))
    >>> rmia_scores(loss([0.9, 0.6, 0.2]), loss([[0.3, 0.4, 0.4]]), loss([0.5, 0.6]), loss([[0.5, 0.25]]), a=1.0)
    array([1. , 0.5, 0. ])
    """
    ref_x = np.atleast_2d(np.asarray(reference_losses, dtype=np.float64))
    ref_z = np.atleast_2d(np.asarray(population_reference_losses, dtype=np.float64))
    target_x = np.asarray(target_losses, dtype=np.float64)
    target_z = np.asarray(population_losses, dtype=np.float64)
    if ref_x.shape != (ref_x.shape[0], len(target_x)) or ref_z.shape != (ref_x.shape[0], len(target_z)):
        raise FedrayError(f"RMIA needs reference losses [R, n] and [R, m] from the same R models: got {ref_x.shape} "
                          f"for {len(target_x)} scored records and {ref_z.shape} for {len(target_z)} population ones")
    if len(target_z) == 0:
        raise FedrayError("RMIA needs population records that no model trained on: there are none")

    def ratio(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
        marginal = 0.5 * ((1.0 + a) * np.exp(-reference).mean(axis=0) + 1.0 - a)
        return np.exp(-target) / marginal

    population = np.sort(ratio(target_z, ref_z))
    # r(x)/r(z) >= gamma  <=>  r(z) <= r(x)/gamma: count the population ratios at or below r(x)/gamma
    return np.searchsorted(population, ratio(target_x, ref_x) / gamma, side="right") / len(population)


@dataclass
class AttackReport:
    """One attack's ROC summary and empirical epsilon lower bound (see :func:`evaluate_attack`)."""

    attack: str
    auc: float
    advantage: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    epsilon_lower_bound: float
    epsilon_lower_bound_point: float
    n_members: int
    n_nonmembers: int

    def as_dict(self) -> dict:
        return asdict(self)


def clopper_pearson_upper(errors: np.ndarray, n: int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound at ``level`` on a rate with ``errors`` of ``n``."""
    with np.errstate(invalid="ignore"):  # errors == n has no beta quantile; the bound is 1 there
        upper = beta.ppf(level, errors + 1, n - errors)
    return np.where(errors >= n, 1.0, upper)


def epsilon_from_error_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """The DP lower bound on epsilon implied by (FPR, FNR) pairs (Kairouz et al. 2015); NaN where none is implied."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.fmax(np.log((1 - delta - fnr) / fpr), np.log((1 - delta - fpr) / fnr))


def evaluate_attack(
    scores: np.ndarray, is_member: np.ndarray, *, attack: str, delta: float, confidence: float = 0.95
) -> AttackReport:
    r"""ROC figures and an empirical epsilon lower bound for one attack.

    AUC from ``roc_auc_score``; advantage :math:`\max_t(\mathrm{TPR}_t-\mathrm{FPR}_t)`
    (Yeom et al. 2018); TPR at FPR :math:`\le` 1% and 0.1%, read conservatively
    as the best TPR among thresholds whose FPR does not exceed the target.

    Epsilon lower bound (Kairouz et al. 2015; Jagielski et al. 2020; Nasr et
    al. 2021): an :math:`(\varepsilon,\delta)`-DP mechanism forces every test to
    satisfy :math:`\mathrm{FPR} + e^\varepsilon\mathrm{FNR} \ge 1-\delta` and
    :math:`\mathrm{FNR} + e^\varepsilon\mathrm{FPR} \ge 1-\delta`, so for each
    threshold

    .. math:: \varepsilon \ge \max\Big(\log\frac{1-\delta-\overline{\mathrm{FNR}}}{\overline{\mathrm{FPR}}},\
              \log\frac{1-\delta-\overline{\mathrm{FPR}}}{\overline{\mathrm{FNR}}}\Big),

    with :math:`\overline{\cdot}` the one-sided Clopper-Pearson upper bounds,
    each at level :math:`1-(1-c)/2` so that both hold jointly with
    probability :math:`\ge c` (union bound). The reported value is the max over
    thresholds, clipped at 0; like the cited papers it does not correct for
    choosing the threshold on the same data, so it is slightly optimistic.
    ``epsilon_lower_bound_point`` is the same formula with the raw rates at
    that threshold: an estimate, not a bound (infinite when the attack
    separates perfectly). Maximising raw rates over all thresholds instead
    would be useless: the extreme threshold with FPR = 0 always gives infinity.

    Sample size caps the bound: with zero errors among :math:`N` non-members
    :math:`\overline{\mathrm{FPR}} = 1-(\tfrac{1-c}{2})^{1/N} \approx 3.7/N` at
    :math:`c=0.95`, so :math:`\varepsilon_{lb} \lesssim \log(N/3.7)`.
    Certifying :math:`\varepsilon_{lb}\ge\varepsilon` needs about
    :math:`3.7e^\varepsilon` members and as many non-members, even for a
    perfect attack (eps=2: 30; eps=4: 204; eps=8: 10,999).
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member).astype(int)
    n_members, n_nonmembers = int(is_member.sum()), int((1 - is_member).sum())
    if n_members == 0 or n_nonmembers == 0:
        raise FedrayError(
            f"the audit has {n_members} members and {n_nonmembers} non-members: hold out records of both kinds"
        )
    from sklearn.metrics import roc_auc_score, roc_curve  # the auditor's: the parties import this module too

    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    level = 1.0 - (1.0 - confidence) / 2.0
    fp = np.rint(fpr * n_nonmembers)
    fn = np.rint(fnr * n_members)
    bounds = epsilon_from_error_rates(
        clopper_pearson_upper(fp, n_nonmembers, level), clopper_pearson_upper(fn, n_members, level), delta
    )
    best = int(np.nanargmax(np.nan_to_num(bounds, nan=-np.inf)))
    point = epsilon_from_error_rates(fpr[best], fnr[best], delta)
    return AttackReport(
        attack=attack,
        auc=float(roc_auc_score(is_member, scores)),
        advantage=float(np.max(tpr - fpr)),
        tpr_at_1pct_fpr=float(tpr[fpr <= 0.01].max()),
        tpr_at_0_1pct_fpr=float(tpr[fpr <= 0.001].max()),
        epsilon_lower_bound=max(0.0, float(np.nan_to_num(bounds[best], nan=0.0))),
        epsilon_lower_bound_point=max(0.0, float(np.nan_to_num(point, nan=0.0, posinf=np.inf))),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
    )
