"""Tables: the synthetic EHR generator, breast cancer, a user's CSV, and feature scaling."""

import json

import numpy as np
import pytest
import sklearn.datasets
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from fedray.data.datasets.breast_cancer.loader import load_breast_cancer
from fedray.data.datasets.ehr_synthetic import FEATURES
from fedray.data.datasets.ehr_synthetic.loader import load_ehr_synthetic
from conftest import data_cfg

from fedray.config import compose_config
from fedray.data.feature_scaling import FeatureScaling
from fedray.data.datasets.table.loader import load_table
from fedray.errors import FedrayError


def _ehr(seed=0, **cfg):
    return load_ehr_synthetic(data_cfg("ehr_synthetic", **{"num_records": 2000, **cfg}), seed)


def _inside_ranges(records):
    x = records.inputs.double().numpy()
    return bool((x >= records.feature_ranges[:, 0]).all() and (x <= records.feature_ranges[:, 1]).all())


def test_ehr_is_deterministic_given_the_seed_and_changes_with_it():
    a, again, other = _ehr(0), _ehr(0), _ehr(1)
    assert torch.equal(a.records.inputs, again.records.inputs)
    assert np.array_equal(a.records.labels, again.records.labels) and np.array_equal(a.consent, again.consent)
    assert not torch.equal(a.records.inputs, other.records.inputs)
    assert not np.array_equal(a.records.labels, other.records.labels)
    assert not np.array_equal(a.consent, other.consent)


def test_ehr_records_follow_the_table_contract_inside_public_ranges():
    loaded = _ehr()
    r = loaded.records
    assert r.inputs.dtype == torch.float32 and tuple(r.inputs.shape) == (2000, len(FEATURES))
    assert 10 <= len(FEATURES) <= 14 and r.feature_names == tuple(name for name, _, _ in FEATURES)
    assert r.labels.dtype == np.int64 and set(np.unique(r.labels)) == {0, 1}
    assert r.class_names == ("no_condition", "develops_condition")
    assert r.ids[123] == "ehr/000123" and len(set(r.ids)) == 2000
    assert r.ranges_public and r.feature_ranges.dtype == np.float64 and r.feature_ranges.shape == (len(FEATURES), 2)
    assert tuple(r.feature_ranges[r.feature_names.index("age")]) == (18, 90)
    assert _inside_ranges(r)
    binary = [j for j, (_, low, high) in enumerate(FEATURES) if (low, high) == (0, 1)]
    assert set(np.unique(r.inputs[:, binary].numpy())) == {0.0, 1.0}
    assert loaded.consent.dtype == bool and loaded.consent.shape == (2000,) and loaded.test is None


def test_ehr_measurements_correlate_as_in_real_cohorts():
    r = _ehr(num_records=5000).records
    column = {name: r.inputs[:, j].double().numpy() for j, name in enumerate(r.feature_names)}

    def corr(a, b):
        return np.corrcoef(column[a], column[b])[0, 1]

    assert corr("age", "systolic_bp") > 0.3 and corr("bmi", "systolic_bp") > 0.2
    assert corr("age", "egfr") < -0.5 and corr("diabetes", "hba1c") > 0.5


@pytest.mark.parametrize(("rate", "noise"), [(0.25, 0.0), (0.1, 0.0), (0.25, 0.1)])
def test_ehr_positive_and_consent_rates_hit_their_targets(rate, noise):
    cfg = {"num_records": 20000, "positive_rate": rate, "consent_rate": 0.8, "label_noise": noise}
    loaded = load_ehr_synthetic(data_cfg("ehr_synthetic", **cfg), seed=3)
    assert loaded.records.labels.mean() == pytest.approx(rate, abs=0.015)
    assert loaded.consent.mean() == pytest.approx(0.8, abs=0.015)


def test_ehr_logistic_regression_auc_matches_the_docstring():
    """Fit on 20k records, score 20k others: 0.800 documented; label noise must cost signal."""
    train = load_ehr_synthetic(data_cfg("ehr_synthetic", num_records=20000), seed=0).records
    scaler = StandardScaler().fit(train.inputs.numpy())
    model = LogisticRegression(max_iter=1000).fit(scaler.transform(train.inputs.numpy()), train.labels)

    def auc(**cfg):
        test = load_ehr_synthetic(data_cfg("ehr_synthetic", num_records=20000, **cfg), seed=1).records
        return roc_auc_score(test.labels, model.predict_proba(scaler.transform(test.inputs.numpy()))[:, 1])

    assert auc() == pytest.approx(0.80, abs=0.02)
    assert auc(label_noise=0.1) < auc() - 0.05


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"positive_rate": 0.0}, "positive_rate"),
        ({"positive_rate": 1.5}, "positive_rate"),
        ({"consent_rate": 1.2}, "consent_rate"),
        ({"num_records": 1}, "num_records"),
        ({"label_noise": 0.3}, "label_noise"),
    ],
)
def test_ehr_bad_config_is_a_one_line_error(cfg, match):
    (key, value), = cfg.items()
    with pytest.raises(FedrayError, match=match) as err:
        if key == "label_noise":  # depends on positive_rate: the loader checks it
            _ehr(**cfg)
        else:
            compose_config(["data=ehr_synthetic", f"data.{key}={value}"])
    assert "\n" not in str(err.value)


def test_breast_cancer_shape_and_malignant_is_label_1():
    loaded = load_breast_cancer(data_cfg("breast_cancer"), seed=0)
    r = loaded.records
    assert tuple(r.inputs.shape) == (569, 30) and r.inputs.dtype == torch.float32
    assert r.class_names == ("benign", "malignant") and int(r.labels.sum()) == 212
    assert np.array_equal(r.labels, 1 - sklearn.datasets.load_breast_cancer().target)
    radius = r.inputs[:, r.feature_names.index("mean radius")].numpy()
    assert radius[r.labels == 1].mean() > radius[r.labels == 0].mean()  # malignant nuclei are larger
    assert r.ids[5] == "breast_cancer/000005" and len(set(r.ids)) == 569
    assert r.ranges_public and _inside_ranges(r)  # the bundled public ranges (tests/data/test_declared_ranges.py)
    assert loaded.consent is None


def test_breast_cancer_rejects_a_consent_column_and_takes_declared_public_ranges():
    with pytest.raises(FedrayError, match="consent_column"):  # its schema has no such key
        compose_config(["data=breast_cancer", "+data.consent_column=consent", "model=mlp"])
    names = load_breast_cancer(data_cfg("breast_cancer"), seed=0).records.feature_names
    declared = {name: [0.0, 5000.0] for name in names}
    records = load_breast_cancer(data_cfg("breast_cancer", feature_ranges=declared), seed=0).records
    assert records.ranges_public and records.feature_ranges.tolist() == [[0.0, 5000.0]] * len(names)


TABLE = """patient,age,bmi,smoker,consent,outcome
p1,34,22.5,0,yes,0
p2,71,31.0,1,Y,1
p3,55,27.2,1,1,1
p4,62,24.0,0,no,0
p5,48,29.9,0,,0
p6,80,35.1,1, True ,1
"""


def _table(tmp_path, text=TABLE, **cfg):
    path = tmp_path / "patients.csv"
    path.write_text(text)
    return load_table(data_cfg("table", **{"path": str(path), "label_column": "outcome", **cfg}), seed=0)


def test_csv_with_consent_ids_and_public_ranges(tmp_path):
    ranges = {"age": [18, 90], "bmi": [15, 60], "smoker": [0, 1]}
    loaded = _table(tmp_path, consent_column="consent", id_column="patient", feature_ranges=ranges)
    r = loaded.records
    assert r.feature_names == ("age", "bmi", "smoker") and r.inputs.dtype == torch.float32
    assert torch.equal(r.inputs[1], torch.tensor([71.0, 31.0, 1.0]))
    assert r.class_names == ("0", "1") and r.labels.tolist() == [0, 1, 1, 0, 0, 1]
    assert r.ids.tolist() == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert loaded.consent.tolist() == [True, True, True, False, False, True]
    assert r.ranges_public and r.feature_ranges.tolist() == [[18, 90], [15, 60], [0, 1]]


def test_csv_defaults_text_labels_and_ranges_from_data(tmp_path):
    text = "age,bmi,smoker,outcome\n34,22.5,0,benign\n71,31.0,1,malignant\n80,35.1,1,malignant\n"
    loaded = _table(tmp_path, text, feature_ranges={"age": [18, 90]})
    r = loaded.records
    assert r.feature_names == ("age", "bmi", "smoker") and loaded.consent is None and r.ids[2] == "table/000002"
    assert r.class_names == ("benign", "malignant") and r.labels.tolist() == [0, 1, 1]
    assert not r.ranges_public and _inside_ranges(r)
    assert r.feature_ranges[r.feature_names.index("bmi")].tolist() == pytest.approx([22.5, 35.1])


def test_csv_numeric_labels_sort_as_numbers(tmp_path):
    loaded = _table(tmp_path, "x,outcome\n1,10\n2,2\n3,10\n")
    assert loaded.records.class_names == ("2", "10") and loaded.records.labels.tolist() == [1, 0, 1]


NO_CONSENT = "\n".join(",".join(line.split(",")[:4] + line.split(",")[5:]) for line in TABLE.splitlines())


@pytest.mark.parametrize(
    ("text", "cfg", "match"),
    [
        (None, {"path": "missing.csv"}, "does not exist"),
        (NO_CONSENT, {"label_column": "diagnosis"}, "no column 'diagnosis' .columns: patient, age, bmi, smoker, outc"),
        (NO_CONSENT, {}, "'patient' is not numeric .data row 0: 'p1'"),
        (TABLE.replace(",1\n", ",0\n"), {"id_column": "patient", "consent_column": "consent"}, "at least 2 classes"),
        (TABLE.replace("31.0", ""), {"id_column": "patient", "consent_column": "consent"}, "'bmi' has 1 empty"),
        (NO_CONSENT, {"id_column": "patient", "feature_ranges": {"height": [1, 2]}}, "names 'height'"),
        (NO_CONSENT, {"id_column": "patient", "feature_ranges": {"age": [90, 18]}}, "high must be"),
        (NO_CONSENT, {"id_column": "patient", "feature_ranges": {"age": [18]}}, r"give it as \[low, high\]"),
        (NO_CONSENT, {"id_column": "patient", "consent_column": "agreed"}, "no column 'agreed'.*consent_column"),
        (NO_CONSENT.replace("p2", "p1"), {"id_column": "patient"}, "repeats 'p1'"),
        (NO_CONSENT, {"id_column": "patient", "label_column": None}, "label_column is not set"),
        ("x,y,outcome\n1,5,0\n2,5,1\n", {}, "'y' is constant"),
        ("x,outcome\n1,0,7\n2,1\n", {}, "cannot read .* as CSV"),
    ],
)
def test_csv_bad_input_is_a_helpful_one_line_error(tmp_path, text, cfg, match):
    with pytest.raises(FedrayError, match=match) as err:
        if text is None:
            load_table(data_cfg("table", **{"label_column": "outcome", **cfg, "path": str(tmp_path / cfg["path"])}),
                       seed=0)
        else:
            _table(tmp_path, text, **cfg)
    assert "\n" not in str(err.value)


def test_feature_scaling_maps_ranges_to_unit_interval_and_clips():
    scaling = FeatureScaling.from_ranges(np.array([[0.0, 10.0], [-1.0, 1.0]]))
    x = torch.tensor([[0.0, -1.0], [10.0, 1.0], [5.0, 0.0], [-3.0, 7.0]], dtype=torch.float64)
    y = scaling.apply(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.0, 1.0]]))


def test_feature_scaling_of_real_ranges_spans_exactly_zero_to_one():
    r = load_breast_cancer(data_cfg("breast_cancer"), seed=0).records
    stored = r.inputs.double().numpy()  # ranges as a loader takes them from the rows: the stored extremes
    y = FeatureScaling.from_ranges(np.stack([stored.min(axis=0), stored.max(axis=0)], axis=1)).apply(r.inputs)
    assert torch.equal(y.min(dim=0).values, torch.zeros(30)) and torch.equal(y.max(dim=0).values, torch.ones(30))


def test_feature_scaling_state_dict_round_trips_through_json():
    scaling = FeatureScaling.from_ranges(np.array([[18.0, 90.0], [80.0, 220.0]]))
    state = json.loads(json.dumps(scaling.state_dict()))
    assert state["kind"] == "feature_scaling"
    x = torch.tensor([[50.0, 300.0], [17.0, 120.0]])
    assert torch.equal(FeatureScaling.from_state_dict(state).apply(x), scaling.apply(x))


@pytest.mark.parametrize("ranges", [[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, np.inf]], [0.0, 1.0]])
def test_feature_scaling_rejects_empty_or_malformed_ranges(ranges):
    with pytest.raises(ValueError):
        FeatureScaling.from_ranges(np.array(ranges))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_feature_scaling_runs_on_the_batch_device():
    scaling = FeatureScaling.from_ranges(np.array([[0.0, 10.0]]))
    y = scaling.apply(torch.tensor([[5.0], [20.0]], device="cuda"))
    assert y.device.type == "cuda" and y.cpu().tolist() == [[0.5], [1.0]]
