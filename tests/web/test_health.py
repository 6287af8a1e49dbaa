"""Liveness and readiness: a load balancer sends traffic only to an up-to-date database."""

import importlib.util
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace

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


def provider_lookups_of_a_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, sdk_installed: bool
) -> int:
    """How often FastAPI asks OpenTelemetry for its providers while serving one request."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: (
            (find_spec("opentelemetry") if sdk_installed else None)
            if name == "opentelemetry.sdk"
            else find_spec(name, *args)
        ),
    )
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", log_json=False)
    lookups = 0
    get_tracer_provider = trace.get_tracer_provider

    def counted() -> trace.TracerProvider:
        nonlocal lookups
        lookups += 1
        return get_tracer_provider()

    with TestClient(create_app(settings), base_url="https://testserver") as client:
        monkeypatch.setattr(trace, "get_tracer_provider", counted)
        assert client.get("/healthz").status_code == 200
    return lookups


def test_without_the_opentelemetry_sdk_requests_do_not_look_for_its_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert provider_lookups_of_a_request(tmp_path, monkeypatch, sdk_installed=False) == 0
    # With the SDK (an operator running opentelemetry-instrument), FastAPI's telemetry is on.
    assert provider_lookups_of_a_request(tmp_path, monkeypatch, sdk_installed=True) > 0
