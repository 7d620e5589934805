"""The locked operating point and the recalibration, on constructed data (models/operating_point.py,
models/calibration.py), and their config keys."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from models.calibration import Calibration, CalibrationError, fit_calibration
from models.operating_point import (
    GUARD,
    OPERATING_POINT_ASSET,
    OperatingPointError,
    OperatingPointSpec,
    choose_threshold,
    operating_point_record,
    rates_at,
    read_record,
    write_record,
)
from pipelines.config import DEFAULT_CONFIG, SourceConfig, config_from_dict
from pipelines.data import canonical_csv, materialize
from pipelines.errors import ConfigError, DataError
from pipelines.report import describe_operating_point

SENS = OperatingPointSpec(target="sensitivity", value=0.95)


def _f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ sensitivity


def test_sensitivity_target_takes_the_highest_threshold_that_reaches_it():
    # 20 positives scored 0.40, 0.43, ..., 0.97; 0.95 * 20 = 19 must be caught, so the 19th highest (0.43).
    positives = 0.40 + 0.03 * np.arange(20)
    negatives = np.linspace(0.0, 0.41, 30)
    p = _f32(np.concatenate([positives, negatives]))
    y = np.array([1] * 20 + [0] * 30)
    threshold = choose_threshold(p, y, SENS)
    assert threshold == pytest.approx(0.43 - GUARD, abs=1e-7)
    assert rates_at(p, y, threshold).sensitivity == 0.95
    # Highest: one float32 step above the pivot score drops the 19th positive, and the target with it.
    above = float(np.nextafter(np.float32(0.43), np.float32(1)))
    assert rates_at(p, y, above).sensitivity < 0.95


def test_sensitivity_of_one_takes_the_lowest_positive():
    p = _f32([0.9, 0.6, 0.2, 0.1, 0.5])
    y = np.array([1, 1, 1, 0, 0])
    threshold = choose_threshold(p, y, OperatingPointSpec(target="sensitivity", value=1.0))
    assert rates_at(p, y, threshold) == rates_at(p, y, 0.2)
    assert rates_at(p, y, threshold).sensitivity == 1.0 and threshold <= 0.2


def test_the_rounding_guard_never_crosses_to_the_next_lower_score():
    # The next lower score (a negative) is 1e-7 below the pivot: the threshold stays strictly between.
    p = _f32([0.5, 0.5 - 1e-7, 0.9])
    y = np.array([1, 0, 1])
    threshold = choose_threshold(p, y, OperatingPointSpec(target="sensitivity", value=1.0))
    assert p[1] < np.float32(threshold) <= p[0]
    assert rates_at(p, y, threshold).specificity == 1.0


def test_ties_at_the_threshold_fall_on_the_same_side():
    # Three positives and two negatives all score 0.7: the rule is on scores, so all five are flagged and
    # the achieved sensitivity exceeds the target rather than splitting tied rows.
    p = _f32([0.7, 0.7, 0.7, 0.7, 0.7, 0.95, 0.1])
    y = np.array([1, 1, 1, 0, 0, 1, 0])
    threshold = choose_threshold(p, y, OperatingPointSpec(target="sensitivity", value=0.5))
    decisions = p >= np.float32(threshold)
    assert decisions[:5].all() or not decisions[:5].any()
    assert rates_at(p, y, threshold).sensitivity >= 0.5


def test_a_tiny_eval_split_still_meets_the_target_in_steps_of_one_over_p():
    # 3 positives: 0.95 needs all 3 (2/3 = 0.67 < 0.95).
    p = _f32([0.3, 0.6, 0.8, 0.2])
    y = np.array([1, 1, 1, 0])
    threshold = choose_threshold(p, y, SENS)
    assert rates_at(p, y, threshold).sensitivity == 1.0 and threshold > 0.2


@pytest.mark.parametrize(
    ("target", "labels", "missing"),
    [("sensitivity", [0, 0, 0], "no positives"), ("specificity", [1, 1, 1], "no negatives")],
)
def test_an_eval_split_without_the_needed_class_is_refused(target, labels, missing):
    with pytest.raises(OperatingPointError, match=rf"3 rows .*{missing}.*{target} >= 0.9.*fixed"):
        choose_threshold(
            _f32([0.1, 0.5, 0.9]), np.array(labels), OperatingPointSpec(target=target, value=0.9)
        )


# ------------------------------------------------------------------------------------------------ specificity


def test_specificity_target_takes_the_lowest_threshold_that_reaches_it():
    negatives = np.linspace(0.0, 0.6, 10)  # 0.9 * 10 = 9 below the threshold: above the 9th lowest
    positives = _f32([0.55, 0.58, 0.62, 0.9])
    p = _f32(np.concatenate([negatives, positives]))
    y = np.array([0] * 10 + [1] * 4)
    threshold = choose_threshold(p, y, OperatingPointSpec(target="specificity", value=0.9))
    ninth = np.float32(negatives[8])
    assert ninth < np.float32(threshold) <= ninth + np.float32(GUARD) + np.float32(1e-7)
    rates = rates_at(p, y, threshold)
    assert rates.specificity == 0.9
    # Lowest: at the 9th negative's own score it would be flagged and specificity falls to 0.8.
    assert rates_at(p, y, float(ninth)).specificity == 0.8


def test_fixed_threshold_is_kept_and_its_eval_rates_recorded():
    p = _f32([0.2, 0.4, 0.6, 0.8])
    y = np.array([0, 1, 0, 1])
    spec = OperatingPointSpec(fixed=0.5)
    threshold = choose_threshold(p, y, spec)
    assert threshold == 0.5
    record = operating_point_record(threshold, spec, rates_at(p, y, threshold), "none", {})
    assert record == {
        "threshold": 0.5,
        "target": {"fixed": 0.5},
        "chosen_on": "eval",
        "eval": {"n": 4, "positives": 2, "sensitivity": 0.5, "specificity": 0.5},
        "calibration": {"method": "none", "params": {}},
    }


def test_the_record_round_trips_through_the_export_asset(tmp_path):
    p, y = _f32([0.1, 0.9]), np.array([0, 1])
    record = operating_point_record(
        0.9, SENS, rates_at(p, y, 0.9), "platt", {"slope": 2.0, "intercept": -1.0}
    )
    write_record(str(tmp_path), record)
    assert json.loads((tmp_path / OPERATING_POINT_ASSET).read_text()) == record
    assert read_record(str(tmp_path)) == record
    assert read_record(str(tmp_path / "older-model")) is None
    (tmp_path / OPERATING_POINT_ASSET).write_text('{"threshold": "high"}')
    with pytest.raises(OperatingPointError, match="no numeric 'threshold'"):
        read_record(str(tmp_path))


# ------------------------------------------------------------------------------------------------ calibration


def _miscalibrated(seed: int = 0, n: int = 4000, slope: float = 0.5, intercept: float = 1.0):
    """Labels drawn from sigmoid(z), reported as sigmoid((z - intercept) / slope): a known miscalibration."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    reported = 1.0 / (1.0 + np.exp(-(z - intercept) / slope))
    return reported, labels


def _nll(p, y) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_platt_recovers_a_known_slope_and_intercept():
    reported, labels = _miscalibrated()
    fitted = fit_calibration("platt", reported, labels)
    assert fitted.slope == pytest.approx(0.5, abs=0.05)
    assert fitted.intercept == pytest.approx(1.0, abs=0.15)
    assert _nll(fitted.apply(reported), labels) < _nll(reported, labels)
    assert set(fitted.params) == {"slope", "intercept"}


def test_temperature_scaling_softens_overconfident_scores_and_keeps_the_ranking():
    reported, labels = _miscalibrated(slope=0.5, intercept=0.0)  # twice as confident as it should be
    fitted = fit_calibration("temperature", reported, labels)
    assert fitted.params["temperature"] == pytest.approx(2.0, rel=0.1)
    calibrated = fitted.apply(reported)
    assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(reported, kind="stable"))
    assert _nll(calibrated, labels) < _nll(reported, labels)


def test_separable_eval_split_keeps_the_fit_finite():
    # Perfectly separated: maximum likelihood would send the slope to infinity; Platt's targets stop it.
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    for method in ("platt", "temperature"):
        fitted = fit_calibration(method, p, y)
        assert np.isfinite(fitted.slope) and abs(fitted.slope) < 100
        assert np.all((fitted.apply(p) > 0) & (fitted.apply(p) < 1))


def test_none_is_the_identity_and_fitting_needs_both_classes():
    p = np.array([0.2, 0.9])
    assert fit_calibration("none", p, np.array([1, 1])) == Calibration()
    np.testing.assert_array_equal(Calibration().apply(p), p)
    with pytest.raises(CalibrationError, match=r"needs both classes .* 2 rows and 2 positives"):
        fit_calibration("platt", p, np.array([1, 1]))
    with pytest.raises(CalibrationError, match="use one of"):
        fit_calibration("isotonic", p, np.array([0, 1]))


def test_the_graph_applies_the_same_calibration_as_numpy():
    import tensorflow as tf

    reported, labels = _miscalibrated(n=500)
    fitted = fit_calibration("platt", reported, labels)
    in_graph = fitted.apply_tf(tf.constant(reported, tf.float32)).numpy()
    np.testing.assert_allclose(in_graph, fitted.apply(reported), atol=1e-5)


# ------------------------------------------------------------------------------------------------ config


def _config_with(**wdbc):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["datasets"]["wdbc"].update(wdbc)
    return config_from_dict(raw)


def test_the_screening_default_and_the_packaged_wdbc_entry():
    cfg = _config_with()
    assert cfg.data.operating_point == OperatingPointSpec(target="sensitivity", value=0.95)
    assert cfg.data.calibration == "none"
    # A dataset without the key gets the screening default; image datasets keep their fixed threshold.
    assert cfg.datasets["heart"].operating_point.target == "sensitivity"
    assert cfg.datasets["pneumoniamnist"].operating_point == OperatingPointSpec(fixed=0.5)
    chosen = _config_with(operating_point={"target": "specificity", "value": 0.9}, calibration="platt")
    assert chosen.data.operating_point.to_dict() == {"metric": "specificity", "value": 0.9}
    assert _config_with(operating_point={"fixed": 0.3}).data.operating_point.to_dict() == {"fixed": 0.3}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"operating_point": {"target": "sensitvity", "value": 0.9}},
            r"operating_point\.target is 'sensitvity'.*did you mean 'sensitivity'",
        ),
        (
            {"operating_point": {"target": "sensitivity", "value": 1.5}},
            r"operating_point\.value is 1\.5.*\(0, 1\]",
        ),
        ({"operating_point": {"target": "sensitivity"}}, r"operating_point\.value is None"),
        ({"operating_point": {"fixed": 0.5, "target": "specificity"}}, r"either \{fixed.*not both"),
        (
            {"operating_point": {"fixed": 2}},
            r"operating_point\.fixed is 2; it must be a threshold between 0 and 1",
        ),
        (
            {"operating_point": {"fixd": 0.3}},
            r"unknown key 'datasets\.wdbc\.operating_point\.fixd' \(did you mean 'fixed'\?\)",
        ),
        (
            {"operating_point": "high"},
            r"datasets\.wdbc\.operating_point is 'high' \(str\); expected a mapping",
        ),
        ({"calibration": "plat"}, r"datasets\.wdbc\.calibration is 'plat'.*did you mean 'platt'"),
    ],
    ids=[
        "target-typo",
        "value-range",
        "value-missing",
        "both-forms",
        "fixed-range",
        "unknown-key",
        "not-mapping",
        "calibration-typo",
    ],
)
def test_invalid_operating_point_config_names_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        _config_with(**changes)


def test_image_datasets_may_choose_a_target_and_a_recalibration_too():
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["datasets"]["pneumoniamnist"]["operating_point"] = {"target": "specificity", "value": 0.8}
    raw["datasets"]["pneumoniamnist"]["calibration"] = "temperature"
    data = config_from_dict(raw).datasets["pneumoniamnist"]
    assert (data.operating_point.target, data.calibration) == ("specificity", "temperature")


def test_an_eval_split_the_trainer_could_not_use_is_refused_before_anything_runs(tmp_path, default_cfg):
    # Only benign rows: no split has a malignant case, so no threshold can reach a sensitivity target.
    header, *lines = canonical_csv(default_cfg.data).splitlines()
    label = header.split(",").index("label")
    benign = tmp_path / "benign.csv"
    benign.write_text("\n".join([header, *(x for x in lines if x.split(",")[label] == "0")]) + "\n")
    data = dataclasses.replace(
        default_cfg.data,
        source=SourceConfig(kind="csv", path=str(benign)),
        label_column="label",
        label_map={},
    )
    with pytest.raises(
        DataError,
        match=r"benign\.csv: the eval split has \d+ rows, 0 positive and \d+ negative; operating_point "
        r"target sensitivity needs a positive \(malignant\).*split\.eval.*\{fixed: <threshold>\}",
    ):
        materialize(data, tmp_path / "input")
    assert not (tmp_path / "input").exists()  # refused before anything was written
    with pytest.raises(DataError, match="calibration platt needs both classes"):
        materialize(
            dataclasses.replace(data, operating_point=OperatingPointSpec(fixed=0.5), calibration="platt"),
            tmp_path / "input",
        )
    # A fixed threshold without recalibration needs neither class on the eval split.
    fixed = materialize(
        dataclasses.replace(data, operating_point=OperatingPointSpec(fixed=0.5)), tmp_path / "in"
    )
    assert fixed.sizes["eval"] > 0


def test_the_run_summary_names_the_locked_threshold_and_its_eval_rates():
    p, y = _f32([0.1, 0.3, 0.6, 0.9]), np.array([0, 1, 0, 1])
    threshold = choose_threshold(p, y, SENS)
    record = operating_point_record(threshold, SENS, rates_at(p, y, threshold), "platt", {"slope": 1.0})
    assert describe_operating_point(record) == (
        f"Operating point: threshold {threshold:.4f} locked on the eval split for sensitivity >= 0.95, platt "
        "recalibration (eval: 4 rows, 2 positive; sensitivity 1.000, specificity 0.500). Served as `decision` "
        "with the probability."
    )
    fixed = operating_point_record(0.5, OperatingPointSpec(fixed=0.5), rates_at(p, y, 0.5), "none", {})
    assert "threshold 0.5000 fixed in the config (eval: 4 rows" in describe_operating_point(fixed)
