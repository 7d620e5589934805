"""The model card's content: built from the run's artifacts in the shapes the clinical evaluation and the
Trainer's operating point write, escaped in both formats, degraded clearly when a source is absent, and
never carrying a patient's value.
"""

from __future__ import annotations

import copy
import dataclasses
import html.parser
import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import ConfigError, config_from_dict
from pipelines.mlflow_mlmd import PipelineOutputs
from pipelines.mlflow_tfma import Evaluation
from pipelines.model_card import attach, facts, render

CLINICAL = {
    "n": 114,
    "positives": 42,
    "threshold": 0.3125,
    "auc": {"value": 0.991, "lower": 0.975, "upper": 0.999},
    "at_threshold": {
        "sensitivity": {"value": 0.952, "lower": 0.842, "upper": 0.987, "method": "wilson"},
        "specificity": {"value": 0.944, "lower": 0.866, "upper": 0.978, "method": "wilson"},
        "ppv": {"value": 0.909, "lower": 0.790, "upper": 0.964, "method": "wilson"},
        "npv": {"value": 0.971, "lower": 0.900, "upper": 0.992, "method": "wilson"},
    },
    "calibration": {"slope": 0.87, "intercept": -0.12, "ece": 0.041, "ici": 0.033, "bins": []},
    "slices": [
        {
            "feature": "sex",
            "value": "female",
            "n": 60,
            "positives": 20,
            "status": "ok",
            "metrics": {"sensitivity": {"value": 0.95, "lower": 0.76, "upper": 0.99}},
        },
        {
            "feature": "sex",
            "value": "male",
            "n": 7,
            "positives": 2,
            "status": "insufficient_evidence",
            "metrics": {},
        },
    ],
    "decision_curve": [
        {"threshold": t / 100, "net_benefit": 0.35 - t / 400, "treat_all": 0.37 - t / 100, "treat_none": 0.0}
        for t in range(1, 100)
    ],
    "noninferiority": None,
    "bootstrap": {"resamples": 2000, "seed": 7},
}
OPERATING_POINT = {
    "threshold": 0.3125,
    "target": {"metric": "sensitivity", "value": 0.95},
    "chosen_on": "eval",
    "eval": {"n": 113, "positives": 41, "sensitivity": 0.951, "specificity": 0.93},
    "calibration": {"method": "platt", "params": {"a": 1.1, "b": -0.2}},
}


def full_facts() -> dict:
    return {
        "card_format": 1,
        "model": {"name": "wdbc", "version": "3", "digest": "ab" * 32, "registered_at": "2026-11-30T23:00:00Z",
                  "author": "alice", "run_id": "r1", "tfx_run_id": "t1"},
        "gate": {"passed": True, "failures": [], "policy_digest": "p1", "compared_with": "none (no champion yet)"},
        "dataset": {"name": "wdbc", "positive_class": "malignant", "kind": "table"},
        "intended": {"intended_use": "Triage of aspirates.", "intended_users": "Cytopathologists",
                     "out_of_scope": "Screening", "limitations": ["One centre, 1995."]},
        "data": {"splits": {"train": {"examples": 342, "positives": 127}, "test": {"examples": 114, "positives": 42}},
                 "features": [{"name": "radius", "type": "FLOAT", "missing": 0, "mean": 14.0, "std_dev": 3.5,
                               "p10": 10.0, "median": 13.0, "p90": 19.0}],
                 "method": "by a hash of each row's feature values",
                 "leakage": {"identical_rows_across_splits": 0, "shared_groups": None}},
        "anomalies": {"train": 0, "test": 0},
        "schema": [{"name": "radius", "type": "FLOAT", "required": True, "domain": "0 to 50"}],
        "metrics": {"Overall": {"auc": 0.99, "recall": 0.95, "example_count": 114.0}},
        "clinical": copy.deepcopy(CLINICAL),
        "operating_point": copy.deepcopy(OPERATING_POINT),
        "notes": [],
    }  # fmt: skip


def test_every_section_is_built_from_the_facts():
    card = attach.build(full_facts())
    md = card.markdown
    for title in ("Intended use", "Limitations", "Data", "Schema", "Operating point", "Performance on the test split",
                  "Subgroups", "Calibration", "Clinical utility (decision curve)"):  # fmt: skip
        assert f"## {render.md_escape(title)}" in md
    assert "| AUC | 0.991 | 0.975 to 0.999 |" in md
    assert "| sensitivity | 0.952 | 0.842 to 0.987 (wilson) |" in md
    assert "Threshold: 0.3125 (chosen for sensitivity ≥ 0.950, on the eval split)" in md
    assert "Recalibration: platt" in md
    assert "| sex | male | 7 | 2 | insufficient evidence |" in md
    assert "Calibration slope (1 is ideal): 0.870" in md
    assert "Bootstrap: 2000 resamples, seed 7." in md
    curve_rows = [line for line in md.split("## Clinical utility")[1].splitlines() if line.startswith("| 0.")]
    assert 2 <= len(curve_rows) <= render.DECISION_CURVE_ROWS
    assert "| test | 114 | 42 | 0.368 |" in md
    assert card.summary[0] == "test split n = 114 (42 malignant); AUC 0.991 [0.975 to 0.999]"
    assert card.summary[1].startswith("at threshold 0.3125: sensitivity 0.952 [0.842 to 0.987 (wilson)]")
    assert "insufficient evidence for subgroup(s): sex=male" in card.summary
    assert json.loads(card.facts)["clinical"]["n"] == 114


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


def test_hostile_names_stay_text_in_both_formats():
    f = full_facts()
    f["data"]["features"][0]["name"] = "<script>alert(1)</script>"
    f["schema"][0]["name"] = "<img src=x onerror=alert(1)>"
    f["clinical"]["slices"][0]["value"] = "</td><iframe src=//evil>"
    f["intended"]["intended_use"] = "[click](javascript:alert(1)) | <b>bold</b>\n# heading"
    card = attach.build(f)
    parser = _Tags()
    parser.feed(card.html)
    assert parser.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "ul", "li",
                           "table", "thead", "tbody", "tr", "th", "td"}, parser.tags  # fmt: skip
    assert "onerror" not in parser.attrs and "src" not in parser.attrs
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card.html
    for needle in ("<script", "<img", "<iframe", "<b>"):
        assert needle not in card.markdown, needle
    assert "\\[click\\](javascript" in card.markdown  # brackets escaped: no link
    assert "&lt;script&gt;" in card.markdown
    # A pipe in a cell cannot add a column; a newline cannot start a heading.
    row = next(line for line in card.markdown.splitlines() if "script" in line and line.startswith("|"))
    assert row.count(" | ") == 6, row
    assert not any(
        line.startswith("# heading") or line.startswith("\\# heading") for line in card.markdown.splitlines()
    )


def test_a_run_without_clinical_evaluation_or_operating_point_says_so():
    f = full_facts()
    f.update(clinical=None, operating_point=None, notes=["no clinical evaluation for this run: ..."])
    f["metrics"]["sex:female"] = {"auc": 0.97, "example_count": 60.0}
    card = attach.build(f)
    assert "Not recorded with this model (an older export): threshold 0.5, no recalibration." in card.markdown
    assert "No decision curve was recorded for this run." in card.markdown
    assert "No calibration analysis was recorded for this run." in card.markdown
    assert "Per slice (TFMA point estimates; no intervals were computed for this run):" in card.markdown
    assert "| sex:female | 0.970 |" in card.markdown
    assert "Found while building this card:" in card.markdown
    assert card.summary[0] == "test split n = 114: auc 0.990, recall 0.950 (point estimates, no intervals)"
    assert "operating point not recorded: threshold 0.5" in card.summary


def _write_stats(frame: pd.DataFrame, root: Path) -> str:
    import tensorflow_data_validation as tfdv

    uri = root / "statistics"
    for split, part in (("train", frame.iloc[: len(frame) // 2]), ("test", frame.iloc[len(frame) // 2 :])):
        stats = tfdv.generate_statistics_from_dataframe(part)
        (uri / f"Split-{split}").mkdir(parents=True)
        (uri / f"Split-{split}" / "FeatureStats.pb").write_bytes(stats.SerializeToString())
    return str(uri)


def test_the_data_summary_holds_aggregates_never_a_patients_values(tmp_path):
    n = 200
    frame = pd.DataFrame(
        {
            "age": [40.0 + (i % 30) for i in range(n)],
            # One patient stands out: their exact value must not appear.
            "crp": [3.0 + (i % 7) * 0.5 if i != 17 else 987.654321 for i in range(n)],
            # A rare category names its rows.
            "site": ["north" if i % 2 else "south" for i in range(n - 1)] + ["Zebulon-Clinic-7"],
            "label": [float(i % 3 == 0) for i in range(n)],
        }
    )
    outputs = PipelineOutputs("dxpipe-x", "t1", "/none", statistics_uri=_write_stats(frame, tmp_path))
    f = facts.gather(outputs, Evaluation({"Overall": {"auc": 0.9}}), context={"dataset": "x"})
    f["model"], f["gate"] = {"name": "x", "version": "1"}, {"passed": True}
    card = attach.build(f)
    text = card.markdown + card.html + card.facts
    for secret in ("987.654321", "987.65", "987.7", "Zebulon"):
        assert secret not in text, secret
    assert f["data"]["splits"] == {
        "train": {"examples": 100, "positives": 34},
        "test": {"examples": 100, "positives": 33},
    }
    crp = next(x for x in f["data"]["features"] if x["name"] == "crp")
    assert set(crp) <= {"name", *facts._FEATURE_KEYS} and "min" not in crp and "max" not in crp
    site = next(x for x in f["data"]["features"] if x["name"] == "site")
    assert sorted(v["value"] for v in site["top_values"]) == ["north", "south"]
    assert "no clinical evaluation for this run" in " ".join(f["notes"])


def test_split_report_and_schema_from_the_pipeline_inputs(tmp_path, default_cfg):
    from pipelines import data as data_lib
    from schemas.files import schema_path

    data_lib.materialize(default_cfg.data, tmp_path / "input")
    report = facts.split_report(tmp_path / "input")
    assert report["method"].startswith("by a hash of each row's feature values")
    assert report["leakage"] == {"identical_rows_across_splits": 0, "shared_groups": None}
    schema_dir = tmp_path / "schema"
    schema_dir.mkdir()
    (schema_dir / "schema.pbtxt").write_bytes(schema_path(default_cfg.data.schema_dir).read_bytes())
    schema = facts.schema_summary(str(schema_dir))
    assert len(schema) == 31 and {s["name"] for s in schema} >= {"label", "mean_radius"}
    assert facts.split_report(tmp_path / "nothing") is None


def test_clinical_evaluation_and_operating_point_are_read_from_this_runs_artifacts(tmp_path):
    root = tmp_path / "pipelines" / "dxpipe-wdbc"
    model = root / "Trainer" / "model" / "5"
    (model / "Format-Serving" / "assets.extra").mkdir(parents=True)
    (model / "Format-Serving" / "assets.extra" / "dxpipe_operating_point.json").write_text(
        json.dumps(OPERATING_POINT)
    )
    for execution, n in ((8, 114), (99, 1)):  # 99 belongs to another run
        out = root / "ClinicalEvaluator" / "evaluation" / str(execution)
        out.mkdir(parents=True)
        (out / "clinical_evaluation.json").write_text(json.dumps({**CLINICAL, "n": n}))
    outputs = PipelineOutputs("dxpipe-wdbc", "t1", "/none", model_uri=str(model),
                              execution_ids={"Trainer": 5, "ClinicalEvaluator": 8})  # fmt: skip
    f = facts.gather(outputs)
    assert f["clinical"]["n"] == 114 and f["operating_point"]["threshold"] == 0.3125
    assert "too few test cases to judge these subgroups (insufficient evidence): sex=male" in f["notes"]
    other = dataclasses.replace(outputs, execution_ids={"Trainer": 5})
    assert facts.gather(other)["clinical"] is None
    (root / "ClinicalEvaluator" / "evaluation" / "8" / "clinical_evaluation.json").write_text("{not json")
    broken = facts.gather(outputs)
    assert broken["clinical"] is None
    assert any(
        n.startswith("the clinical evaluation (") and "could not be read" in n for n in broken["notes"]
    )
    # The artifact the registry gate was given wins: a cached ClinicalEvaluator's directory is that of
    # the execution that wrote it, not one of this run's (and a Kubeflow pod has no metadata to ask).
    given = dataclasses.replace(
        outputs, execution_ids={}, clinical_uri=str(root / "ClinicalEvaluator" / "evaluation" / "99")
    )
    assert facts.gather(given)["clinical"]["n"] == 1


def test_model_card_config_is_validated(default_cfg):
    import yaml

    from pipelines.config import DEFAULT_CONFIG

    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    raw["datasets"]["wdbc"]["model_card"]["intended_usee"] = "x"
    with pytest.raises(
        ConfigError, match=r"unknown key 'datasets.wdbc.model_card.intended_usee' \(did you mean"
    ):
        config_from_dict(raw)
    raw["datasets"]["wdbc"]["model_card"] = {"limitations": ["fine", "  "]}
    with pytest.raises(ConfigError, match="model_card.limitations holds an empty entry"):
        config_from_dict(raw)
    assert default_cfg.data.model_card.limitations[0].startswith("569 aspirates from one centre")
