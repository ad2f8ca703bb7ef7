"""The deployment files parse and agree with the code (no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.settings import HubSettings

ROOT = Path(__file__).resolve().parents[2]


def _setting_names() -> set[str]:
    names = {f"SCHAKEL_{name.upper()}" for name in HubSettings.model_fields}
    return names | {"KAFKA_BOOTSTRAP_SERVERS"}


def test_compose_parses_and_uses_only_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"kafka", "postgres", "hub"} <= set(compose["services"])
    hub_env = compose["services"]["hub"]["environment"]
    unknown = set(hub_env) - _setting_names()
    assert not unknown, f"docker-compose.yml sets variables the hub does not read: {unknown}"
    assert hub_env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert compose["services"]["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert (ROOT / compose["services"]["hub"]["build"]["dockerfile"]).is_file()


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for package in ("schemas", "adapters", "services"):
        assert f"COPY {package} " in text
