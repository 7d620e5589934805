"""`dxpipe approve | rollback | status | sync | ui`: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines import registry_cli
from pipelines.mlflow_store import TrackingConfig
from tests.registry.support import BAD, BETTER, GOOD, register

REPO = Path(__file__).resolve().parents[2]


# Who runs the command. The embedded store's identity is the OS account; a second person on the same
# machine is a second OS account, which a test cannot create, so `os_account` is replaced (the only double).
ACTING = {"name": "root"}


@pytest.fixture(autouse=True)
def os_user(monkeypatch):
    from pipelines import identity

    monkeypatch.setattr(
        identity, "os_account", lambda: identity.Identity(ACTING["name"], False, "os-account (test)")
    )
    yield ACTING
    ACTING["name"] = "root"


def run_cli(capsys, *argv: str, as_user: str | None = None) -> tuple[int, str, str]:
    """Runs the CLI as `as_user` (default: the person named by --reviewer, else the current one)."""
    if as_user is None and "--reviewer" in argv:
        as_user = argv[argv.index("--reviewer") + 1]
    if as_user is not None:
        ACTING["name"] = as_user
    code = registry_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, text: str) -> None:
    assert err.startswith("dxpipe: error: "), err
    assert text in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_approve_status_rollback_round_trip(cfg, fixtures, capsys):
    wd = cfg.workdir
    register(cfg, fixtures, "good", GOOD, author="alice")
    code, out, _ = run_cli(
        capsys, "approve", "wdbc", "1", "--reviewer", "bob", "--note", "ok", "--workdir", wd
    )
    assert code == 0
    assert (
        out.strip().splitlines()[0]
        == "approved 'wdbc' version 1 by bob: production now serves it as version 1 (log entry 2)."
    )
    assert out.strip().splitlines()[1].startswith("model card model_card/model_card.html, sha256 ")
    register(cfg, fixtures, "better", BETTER, author="alice")
    code, out, _ = run_cli(
        capsys, "approve", "wdbc", "2", "--reviewer", "carol", "--note", "ok", "--workdir", wd
    )
    assert code == 0 and "(replacing version 1)" in out

    code, out, _ = run_cli(capsys, "status", "wdbc", "--workdir", wd)
    assert code == 0
    assert "champion:  2" in out and "serves v2 = registry version 2" in out and "consistent" in out

    code, out, _ = run_cli(
        capsys, "rollback", "wdbc", "--reviewer", "dave", "--note", "site B", "--workdir", wd
    )
    assert code == 0
    assert out.strip().startswith(
        "rolled back 'wdbc' from version 2 to version 1: production now serves it as version 3"
    )

    code, out, _ = run_cli(capsys, "status", "wdbc", "--json", "--workdir", wd)
    report = json.loads(out)
    assert code == 0 and report["consistent"] is True
    assert report["champion"] == "1" and report["production"]["version"] == 3
    assert [r["event"] for r in report["recent"]] == [
        "register",
        "approve",
        "register",
        "approve",
        "rollback",
    ]


def test_approve_a_failed_version_exits_2_with_one_line(cfg, fixtures, capsys):
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    code, out, err = run_cli(
        capsys, "approve", "wdbc", "1", "--reviewer", "bob", "--note", "x", "--workdir", cfg.workdir
    )
    assert code == 2 and out == ""
    assert_one_line_error(
        err,
        "'wdbc' version 1 fails the gate re-derived from its evidence and can never become the served champion",
    )


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (
            ["approve", "wdbc", "7", "--reviewer", "bob", "--note", "x"],
            "'wdbc' has no version 7 (versions: 1)",
        ),
        (
            ["approve", "wdbc", "1", "--reviewer", "alice", "--note", "x"],
            "reviewer 'alice' is the author of its run",
        ),
        (["approve", "heart", "1", "--reviewer", "bob", "--note", "x"], "no registered model 'heart'"),
        (
            ["rollback", "wdbc", "--reviewer", "bob", "--note", "x"],
            "'wdbc' has never had a champion promoted",
        ),
        (["status", "pima"], "no registered model 'pima' (registered models: wdbc)"),
        (["approve", "../x", "1", "--reviewer", "bob", "--note", "x"], "model name '../x' is not usable"),
    ],
    ids=[
        "no-such-version",
        "four-eyes",
        "no-such-model",
        "rollback-without-champion",
        "status-unknown",
        "bad-name",
    ],
)
def test_user_errors_exit_2_with_one_line(cfg, fixtures, capsys, argv, text):
    register(cfg, fixtures, "good", GOOD, author="alice")
    code, _, err = run_cli(capsys, *argv, "--workdir", cfg.workdir)
    assert code == 2
    assert_one_line_error(err, text)


def test_status_exits_1_when_registry_and_serving_disagree(cfg, fixtures, capsys):
    import shutil

    register(cfg, fixtures, "good", GOOD, author="alice")
    assert (
        run_cli(capsys, "approve", "wdbc", "1", "--reviewer", "bob", "--note", "x", "--workdir", cfg.workdir)[
            0
        ]
        == 0
    )
    shutil.rmtree(cfg.resolved().production_path("wdbc") / "1")
    code, out, _ = run_cli(capsys, "status", "wdbc", "--workdir", cfg.workdir)
    assert code == 1 and "! production serves nothing, not the champion version 1" in out
    code, out, _ = run_cli(capsys, "sync", "wdbc", "--workdir", cfg.workdir)
    assert code == 0 and "champion version 1 re-published as production version 2" in out
    assert run_cli(capsys, "status", "wdbc", "--workdir", cfg.workdir)[0] == 0


def test_sync_refusing_a_ui_alias_exits_2(cfg, fixtures, capsys):
    register(cfg, fixtures, "bad", BAD, author="alice", blessed=False)
    resolved = cfg.resolved()
    MlflowClient(tracking_uri=resolved.tracking_uri).set_registered_model_alias("wdbc", "champion", "1")
    code, out, _ = run_cli(capsys, "sync", "wdbc", "--workdir", cfg.workdir)
    assert code == 2 and "was refused" in out and "fails the gate re-derived from its evidence" in out


def test_the_reviewer_is_who_runs_the_command_and_reviewer_must_match_it(cfg, fixtures, capsys):
    register(cfg, fixtures, "good", GOOD, author="alice")
    code, _, err = run_cli(
        capsys,
        "approve",
        "wdbc",
        "1",
        "--reviewer",
        "bob",
        "--note",
        "x",
        "--workdir",
        cfg.workdir,
        as_user="alice",
    )
    assert code == 2
    assert_one_line_error(err, "--reviewer 'bob' is not you: you are 'alice' (the OS account running dxpipe)")
    code, _, err = run_cli(
        capsys, "approve", "wdbc", "1", "--note", "x", "--workdir", cfg.workdir, as_user="alice"
    )
    assert code == 2
    assert_one_line_error(err, "the reviewer 'alice' is the author of its run")
    # A zero-width space or another case does not make the author a second person.
    code, _, err = run_cli(
        capsys, "approve", "wdbc", "1", "--note", "x", "--workdir", cfg.workdir, as_user="ALICE\u200b"
    )
    assert code == 2 and "is the author of its run" in err
    code, out, _ = run_cli(
        capsys, "approve", "wdbc", "1", "--note", "x", "--workdir", cfg.workdir, as_user="bob"
    )
    assert code == 0 and "by bob" in out


def test_missing_note_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        registry_cli.main(["approve", "wdbc", "1"])
    assert exc.value.code == 2
    assert "--note" in capsys.readouterr().err


def test_config_file_supplies_workdir_and_serving_root(cfg, fixtures, capsys):
    register(cfg, fixtures, "good", GOOD, author="alice")
    config = REPO / "pipelines" / "configs" / "default.yaml"
    code, out, _ = run_cli(capsys, "status", "wdbc", "--config", str(config), "--workdir", cfg.workdir)
    assert code == 0 and f"(MLflow: sqlite:///{Path(cfg.workdir).resolve()}/mlflow.db;" in out


def test_ui_command_binds_loopback_over_the_embedded_store(cfg):
    command = registry_cli.ui_command(cfg, 5123)
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert (
        command[command.index("--backend-store-uri") + 1]
        == f"sqlite:///{Path(cfg.workdir).resolve()}/mlflow.db"
    )


def test_ui_refuses_without_a_store_or_with_a_server(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, _, err = run_cli(capsys, "ui", "--workdir", str(tmp_path / "empty"))
    assert code == 2
    assert_one_line_error(err, "no MLflow store at sqlite:///")
    code, _, err = run_cli(capsys, "ui", "--tracking-uri", "http://127.0.0.1:5999")
    assert code == 2
    assert_one_line_error(err, "open that URL in a browser instead of `dxpipe ui`")


def test_tracking_config_from_args_overrides(tmp_path):
    import argparse

    args = argparse.Namespace(
        config=None, workdir=str(tmp_path), tracking_uri="http://h:1", serving_root="/srv"
    )
    assert registry_cli.tracking_config(args) == TrackingConfig(
        workdir=str(tmp_path), tracking_uri="http://h:1", serving_root="/srv"
    )
