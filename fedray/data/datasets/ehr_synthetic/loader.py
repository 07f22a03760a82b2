"""A generated electronic-health-record table, "ehr_synthetic", the second seed study's data.

The seed paper's tabular study uses records of "age, gender, medical history
and test results, with the binary outcome 'develops the condition'". No such
set can be shipped, so this module draws one from a fixed generative model,
identical for the same seed on every machine (``np.random.default_rng(seed)``).

Patients. Twelve columns, each with an a-priori clinical range that is public
knowledge (so :class:`~fedray.data.feature_scaling.FeatureScaling` leaks
nothing); continuous values are clipped to it:

* ``age`` ~ ``18 + 72 Beta(2.2, 2.6)`` years (mean 51); ``sex`` ~ Bernoulli(0.5), 1 = male;
* ``bmi`` ~ LogNormal(log 26.5 + 0.002 (age - 50), 0.17) kg/m²;
* ``systolic_bp`` = 102 + 0.5 age + 0.9 (bmi - 27) + 4 sex + N(0, 14²) mmHg;
* ``total_cholesterol`` = 195 + 0.6 (age - 50) + 1.2 (bmi - 27) - 6 sex + N(0, 36²) mg/dL;
* ``diabetes`` (history) ~ Bernoulli(σ(-2.9 + 0.045 (age - 50) + 0.13 (bmi - 27))), about 8%;
* ``hba1c``: N(7.4, 1.1²) % for diabetics, else N(5.3 + 0.008 (age - 50) + 0.025 (bmi - 27), 0.35²);
* ``egfr`` = 118 - 0.85 (age - 18) - 7 diabetes + N(0, 13²) mL/min/1.73 m²;
* ``smoker`` ~ Bernoulli(σ(-1.2 - 0.02 (age - 50) + 0.4 sex)), about 27%;
* ``hypertension`` (history) ~ Bernoulli(σ(-0.9 + 0.07 (sbp - 140) + 0.03 (age - 50))), about 24%;
* ``family_history`` ~ Bernoulli(0.2);
* ``prior_cvd`` ~ Bernoulli(σ(-3.4 + 0.06 (age - 50) + 0.7 smoker + 0.6 diabetes + 0.5 sex)), about 8%.

So blood pressure rises with age and BMI (correlations 0.49 and 0.33) and
kidney function falls with age (-0.71), as in real cohorts.

Outcome. With ``a = (age - 55) / 10`` and ``[.]_+ = max(., 0)``, label 1
("develops_condition") is drawn from ``P(y = 1 | x) = σ(b0 + r(x))``::

    r(x) = 0.54 a + 0.12 a² + 0.42 sex + 0.015 (sbp - 130) + 0.006 (chol - 200)
         + 1.0 [hba1c >= 6.5] + 0.3 [hba1c - 6.5]_+ + 0.65 smoker + 0.35 smoker [a > 0]
         + 0.55 family_history + 1.1 prior_cvd + 0.03 [60 - egfr]_+

risk accelerating with age, a diagnostic HbA1c threshold, a kidney-failure
hinge, and smoking that matters more after 55. ``hypertension`` and
``diabetes`` carry no effect of their own, only through the measurements they
correlate with. ``b0`` is solved (Brent) so that the mean of ``P(y = 1 | x)``
over the generated records is the clean positive rate (below).

Signal to noise (seed 0, 200,000 records, ``label_noise: 0``): the Bayes
classifier ``P(y = 1 | x)`` reaches AUC 0.805; a logistic regression on the
twelve standardised columns, fitted on 20,000 other records (seed 1), reaches
0.800 (the nonlinear terms cost it little); positive rate 0.252, consent
0.950. With ``label_noise: 0.1`` the same regression drops to 0.705. The outcome is
learnable but far from separable, like real risk scores (QRISK, Framingham:
0.75-0.85).

Label noise. Each label is then flipped independently with probability
``e = label_noise``; the clean rate is ``(positive_rate - e) / (1 - 2e)`` so
that the observed positive rate stays ``positive_rate``. Needs
``e < min(positive_rate, 1 - positive_rate)``. Noise lowers every AUC.

Consent. Each record independently carries informed consent with
probability ``consent_rate``, unrelated to its features or outcome (an
assumption: real refusals are rarely random).
"""

from __future__ import annotations


import numpy as np
import torch
from scipy.optimize import brentq
from scipy.special import expit

from fedray.data.datasets.ehr_synthetic import CLASS_NAMES, FEATURES, RANGES, EhrSyntheticData
from fedray.data.types import Loaded, Records
from fedray.errors import FedrayError



def _patients(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The twelve columns of ``n`` patients, drawn in a fixed order (see the module docstring)."""

    def bernoulli(p: np.ndarray | float) -> np.ndarray:
        return (rng.random(n) < p).astype(np.float64)

    def clip(name: str, values: np.ndarray) -> np.ndarray:
        return np.clip(values, *RANGES[name])

    age = 18 + 72 * rng.beta(2.2, 2.6, n)
    sex = bernoulli(0.5)
    bmi = clip("bmi", np.exp(rng.normal(np.log(26.5) + 0.002 * (age - 50), 0.17)))
    sbp = clip("systolic_bp", 102 + 0.5 * age + 0.9 * (bmi - 27) + 4 * sex + rng.normal(0, 14, n))
    chol = clip("total_cholesterol", 195 + 0.6 * (age - 50) + 1.2 * (bmi - 27) - 6 * sex + rng.normal(0, 36, n))
    diabetes = bernoulli(expit(-2.9 + 0.045 * (age - 50) + 0.13 * (bmi - 27)))
    normal_hba1c = rng.normal(5.3 + 0.008 * (age - 50) + 0.025 * (bmi - 27), 0.35)
    hba1c = clip("hba1c", np.where(diabetes == 1, rng.normal(7.4, 1.1, n), normal_hba1c))
    egfr = clip("egfr", 118 - 0.85 * (age - 18) - 7 * diabetes + rng.normal(0, 13, n))
    smoker = bernoulli(expit(-1.2 - 0.02 * (age - 50) + 0.4 * sex))
    hypertension = bernoulli(expit(-0.9 + 0.07 * (sbp - 140) + 0.03 * (age - 50)))
    family_history = bernoulli(0.2)
    prior_cvd = bernoulli(expit(-3.4 + 0.06 * (age - 50) + 0.7 * smoker + 0.6 * diabetes + 0.5 * sex))
    return {
        "age": age, "sex": sex, "bmi": bmi, "systolic_bp": sbp, "total_cholesterol": chol, "hba1c": hba1c,
        "egfr": egfr, "smoker": smoker, "diabetes": diabetes, "hypertension": hypertension,
        "family_history": family_history, "prior_cvd": prior_cvd,
    }  # fmt: skip


def _risk(x: dict[str, np.ndarray]) -> np.ndarray:
    """``r(x)``, the outcome's log-odds up to the intercept ``b0``."""
    a = (x["age"] - 55) / 10
    return (
        0.54 * a + 0.12 * a**2 + 0.42 * x["sex"]
        + 0.015 * (x["systolic_bp"] - 130) + 0.006 * (x["total_cholesterol"] - 200)
        + 1.0 * (x["hba1c"] >= 6.5) + 0.3 * np.maximum(x["hba1c"] - 6.5, 0)
        + 0.65 * x["smoker"] + 0.35 * x["smoker"] * (a > 0)
        + 0.55 * x["family_history"] + 1.1 * x["prior_cvd"] + 0.03 * np.maximum(60 - x["egfr"], 0)
    )  # fmt: skip


def make_ehr(
    *, num_records: int, positive_rate: float, consent_rate: float, label_noise: float, seed: int
) -> tuple[Records, np.ndarray]:
    """``num_records`` patients with ids ``ehr/000123`` and their bool consent ``[N]``."""
    rng = np.random.default_rng(seed)
    x = _patients(rng, num_records)
    risk = _risk(x)
    clean_rate = (positive_rate - label_noise) / (1 - 2 * label_noise)
    b0 = brentq(lambda b: expit(b + risk).mean() - clean_rate, -40.0, 40.0, xtol=1e-10)
    labels = rng.random(num_records) < expit(b0 + risk)
    labels ^= rng.random(num_records) < label_noise
    consent = rng.random(num_records) < consent_rate
    names = tuple(name for name, _, _ in FEATURES)
    records = Records(
        inputs=torch.from_numpy(np.stack([x[name] for name in names], axis=1).astype(np.float32)),
        labels=labels.astype(np.int64),
        ids=np.array([f"ehr/{i:06d}" for i in range(num_records)], dtype=object),
        class_names=CLASS_NAMES,
        feature_names=names,
        feature_ranges=np.array([[low, high] for _, low, high in FEATURES], dtype=np.float64),
        ranges_public=True,  # the generator's own constants (FEATURES), not the rows
    )
    return records, consent


def load_ehr_synthetic(data_cfg: EhrSyntheticData, seed: int) -> Loaded:
    """Generate the table ``data_cfg`` describes (``conf/data/ehr_synthetic.yaml``) from the run's ``seed``."""
    n, rate = data_cfg.num_records, data_cfg.positive_rate
    consent_rate, noise = data_cfg.consent_rate, data_cfg.label_noise
    if not 0 <= noise < min(rate, 1 - rate):
        raise FedrayError(
            f"data.label_noise={noise} must lie in [0, {min(rate, 1 - rate)}) for positive_rate {rate}: lower it"
        )
    records, consent = make_ehr(
        num_records=n, positive_rate=rate, consent_rate=consent_rate, label_noise=noise, seed=seed
    )
    return Loaded(
        records=records,
        consent=consent,
        skipped_files=(),
        source=f"ehr_synthetic (generated, seed {seed}, {n} records, positive rate {rate}, label noise {noise})",
    )
