"""The baseline choice: champion, else latest blessed model, never the candidate itself."""

import pytest

from components.baseline.core import ModelRef, choose_baseline

OLD = ModelRef(3, "/p/Trainer/model/3")
MIDDLE = ModelRef(7, "/p/Trainer/model/7")
NEW = ModelRef(12, "/p/Trainer/model/12")
MODELS = [MIDDLE, OLD, NEW]  # deliberately out of id order


def choose(candidate=None, champion=None, blessed=(3, 7, 12), models=MODELS):
    return choose_baseline(
        candidates=[] if candidate is None else [candidate],
        champion=champion,
        models=models,
        blessed_model_ids=blessed,
    )


def test_no_champion_gives_the_latest_blessed_model():
    assert choose(candidate=ModelRef(20, "/p/Trainer/model/20")) == NEW


def test_the_candidate_is_never_its_own_baseline():
    # A cached re-run: the candidate is the model the previous run trained and blessed.
    assert choose(candidate=NEW) == MIDDLE


def test_unblessed_models_are_skipped():
    assert choose(candidate=ModelRef(20, "/x"), blessed=(3,)) == OLD


def test_no_blessed_model_means_no_baseline():
    assert choose(candidate=ModelRef(20, "/x"), blessed=()) is None
    assert choose(candidate=NEW, blessed=(12,)) is None
    assert choose(candidate=None, models=[], blessed=()) is None


def test_a_known_champion_wins_over_newer_blessed_models():
    assert choose(candidate=ModelRef(20, "/x"), champion=OLD) == OLD


def test_a_champion_that_is_the_candidate_falls_back_to_the_latest_other_blessed_model():
    # Re-running the production model's exact inputs must compare it with what its first run did.
    assert choose(candidate=NEW, champion=NEW) == MIDDLE


@pytest.mark.parametrize(
    "champion",
    [ModelRef(99, "/p/Trainer/model/12"), ModelRef(99, "/p/Trainer/model/12/")],
    ids=["same-uri", "trailing-slash"],
)
def test_the_candidate_is_recognised_by_uri_as_well_as_by_id(champion):
    # An imported champion can carry another id for the same directory.
    assert choose(candidate=NEW, champion=champion) == MIDDLE


def test_without_a_candidate_the_latest_blessed_model_is_chosen():
    assert choose(candidate=None) == NEW
