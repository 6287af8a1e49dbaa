"""Liveness and readiness: a load balancer sends traffic only to an up-to-date database."""

from pathlib import Path

from fastapi.testclient import TestClient

from core.settings import Settings
from web.app import create_app


def test_the_process_answers_that_it_is_alive(client: TestClient) -> None:
    answer = client.get("/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_a_migrated_database_is_ready(client: TestClient, backend: str) -> None:
    answer = client.get("/readyz")

    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ready"
    assert body["database"] == ("postgresql" if backend == "postgres" else "sqlite")
    assert body["schema"] == body["expected_schema"] is not None


def test_an_empty_database_is_not_ready_and_says_what_to_run(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", log_json=False)
    app = create_app(settings)

    with TestClient(app, base_url="https://testserver") as client:
        answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json()["status"] == "not_ready"
    assert answer.json()["schema"] is None
    assert "labshare db upgrade" in answer.json()["detail"]
