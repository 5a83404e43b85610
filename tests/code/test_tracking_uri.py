from pathlib import Path

from components.register import resolve_tracking_uri


def test_environment_wins_over_params(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == "http://mlflow.team:5000"


def test_relative_sqlite_is_taken_from_the_base_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("http://x:5000", Path("/nowhere")) == "http://x:5000"
