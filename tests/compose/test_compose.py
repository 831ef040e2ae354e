"""compose/: one fedimg datasite per hospital plus PostgreSQL, loopback-only, no inline secret.

The files are checked statically (YAML, the Dockerfile, the init script); when
``docker compose`` is installed, ``docker compose config`` validates the file too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from datasite_setup.convert.client_data import find_federation_root
from datasite_setup.convert.federated_format import CLIENTS_DIR, FEDERATION_FILE
from datasite_setup.site.credentials import ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV
from datasite_setup.site.datasite import serve_command
from datasite_setup.site.serve import DB_URL_ENV

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
HOSPITALS = ["hospital_a", "hospital_b", "hospital_c"]
CONTAINER_PORT = 8080
STATE_DIR = "/state"

VAR_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
# ${VAR}, ${VAR:-default}, ${VAR:?error message}: group 1 the name, 2 the operator, 3 the default or message
ONLY_A_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}$")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|PASSWD|_KEY$", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values = {}
    for number, line in enumerate(
        (COMPOSE / ".env.example").read_text(encoding="utf-8").splitlines(), start=1
    ):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f".env.example line {number}: {line!r}"
        assert key not in values, f".env.example: {key} twice"
        values[key] = value
    return values


def strings(node) -> list[str]:
    """Every string (keys and values) in a YAML tree."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volume_mounts(service: dict) -> list[tuple[str, str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        assert isinstance(volume, str), f"long volume syntax not expected here: {volume!r}"
        # The source may hold ${VAR:?message with: colons}; split on the last ':' parts only.
        source, target, *mode = re.split(r":(?=/|ro$|rw$)", volume)
        mounts.append((source, target, mode[0] if mode else "rw"))
    return mounts


# --- services ------------------------------------------------------------------------------


def test_three_hospitals_and_postgres(compose: dict) -> None:
    assert set(compose["services"]) == {"postgres", *HOSPITALS}
    assert compose["services"]["postgres"]["image"].startswith("postgres:")


def test_hospitals_inherit_the_datasite_anchor(compose: dict) -> None:
    anchor = compose["x-datasite"]
    for name in HOSPITALS:
        service = compose["services"][name]
        for key, value in anchor.items():
            assert service[key] == value, f"{name}.{key} does not come from x-datasite"
        assert service["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", HOSPITALS)
def test_command_is_fedimg_datasite_serve(compose: dict, name: str) -> None:
    expected = serve_command(
        name=name,
        data=f"/data/{CLIENTS_DIR}/{name}",
        port=CONTAINER_PORT,
        host="0.0.0.0",
        state_dir=STATE_DIR,
    )
    assert expected[0] == "fedimg"
    assert compose["services"][name]["command"] == expected[1:]


def test_ports_are_published_on_loopback_only(compose: dict) -> None:
    host_ports = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as 'HOST_IP:HOST_PORT:CONTAINER_PORT' strings"
            host_ip, host_port, container_port = port.split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {port}: not loopback"
            assert container_port == str(CONTAINER_PORT)
            host_ports.append(int(host_port))
    assert "ports" not in compose["services"]["postgres"], (
        "the database is reached only inside the compose network"
    )
    assert all(compose["services"][name].get("ports") for name in HOSPITALS)
    assert len(host_ports) == len(set(host_ports)) == len(HOSPITALS)


@pytest.mark.parametrize("name", HOSPITALS)
def test_each_hospital_mounts_only_its_own_data_read_only(compose: dict, name: str) -> None:
    service = compose["services"][name]
    mounts = volume_mounts(service)
    by_target = {target: (source, mode) for source, target, mode in mounts}
    assert len(by_target) == len(mounts) == 3
    data_dir = f"/data/{CLIENTS_DIR}/{name}"

    source, mode = by_target[f"/data/{FEDERATION_FILE}"]
    assert mode == "ro" and source.startswith("${FEDIMG_DATA") and source.endswith(f"}}/{FEDERATION_FILE}")
    source, mode = by_target[data_dir]
    assert mode == "ro" and source == f"${{FEDIMG_DATA}}/{CLIENTS_DIR}/{name}"
    assert by_target[STATE_DIR] == (f"{name}_state", "rw")
    assert f"{name}_state" in compose["volumes"]

    # The client dir the command names is the mounted one, and its federation root holds federation.json.
    command = service["command"]
    assert command[command.index("--data") + 1] == data_dir
    assert command[command.index("--state-dir") + 1] == STATE_DIR
    assert str(PurePosixPath(find_federation_root(Path(data_dir)))) + f"/{FEDERATION_FILE}" in by_target

    others = [other for other in HOSPITALS if other != name]
    text = " ".join(strings({k: v for k, v in service.items() if k != "healthcheck"}))
    assert not any(other in text for other in others), f"{name} refers to another hospital"


@pytest.mark.parametrize("name", HOSPITALS)
def test_database_url_points_at_the_hospitals_own_database(compose: dict, name: str) -> None:
    env = environment(compose["services"][name])
    url = urlsplit(env[DB_URL_ENV])
    assert url.scheme.startswith("postgresql")
    assert url.username == name and url.path == f"/{name}"
    assert url.hostname == "postgres" and url.port == 5432
    assert url.password == f"${{{name.upper()}_DB_PASSWORD}}"
    assert set(env) == {DB_URL_ENV, ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV}
    # Empty by default: the site then generates its admin password into its state volume.
    for key in (ADMIN_EMAIL_ENV, ADMIN_PASSWORD_ENV):
        match = ONLY_A_REF.match(env[key])
        assert match and match.group(1).startswith(name.upper()) and (match.group(3) or "") == ""


def test_healthchecks(compose: dict) -> None:
    for name in HOSPITALS:
        check = compose["services"][name]["healthcheck"]
        test = " ".join(check["test"])
        assert check["test"][0] == "CMD" and f"127.0.0.1:{CONTAINER_PORT}/" in test
        assert check["retries"] >= 1 and "start_period" in check
    postgres = compose["services"]["postgres"]["healthcheck"]
    assert "pg_isready" in postgres["test"]


@pytest.mark.parametrize("name", HOSPITALS)
def test_each_site_runs_contained(compose: dict, name: str) -> None:
    """Issue 10: no capability, our seccomp profile, no new privileges, the image's user, a read-only root."""
    service = compose["services"][name]
    options = service["security_opt"]
    assert "no-new-privileges:true" in options
    (seccomp,) = [option for option in options if option.startswith(("seccomp=", "seccomp:"))]
    profile = COMPOSE / seccomp.split("=", 1)[-1].split(":", 1)[-1]
    assert profile.resolve() == (COMPOSE / "seccomp.json").resolve() and profile.is_file()
    assert service["cap_drop"] == ["ALL"] and "cap_add" not in service and "privileged" not in service
    runs = " ".join(arg for op, arg in dockerfile_instructions() if op == "RUN")
    uid = re.search(r"useradd\b[^&;]*--uid (\d+)", runs)
    gid = re.search(r"groupadd\b[^&;]*--gid (\d+)", runs)
    assert uid and gid and service["user"] == f"{uid.group(1)}:{gid.group(1)}" and uid.group(1) != "0"
    assert service["read_only"] is True
    mounts = {entry.split(":", 1)[0]: entry for entry in service["tmpfs"]}
    assert "/tmp" in mounts, "workers' private folders and PySyft's temporary files live in /tmp"
    assert all("noexec" in entry and "nosuid" in entry for entry in mounts.values())
    for key in ("pid", "ipc", "network_mode", "userns_mode"):
        assert service.get(key) != "host", f"{name}.{key}: host shares the host's namespace"
    assert "devices" not in service


# --- secrets -------------------------------------------------------------------------------


def test_no_secret_value_is_inline(compose: dict) -> None:
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if SECRET_KEY.search(key):
                match = ONLY_A_REF.match(value)
                assert match, f"{name}.{key} = {value!r}: a secret must come from a ${{VAR}} reference"
                operator, text = match.group(2) or "", match.group(3) or ""
                assert operator.endswith("?") or text == "", f"{name}.{key} has a default value"
    for text in strings(compose):
        # user:password@ in any URL must be a ${VAR} reference
        for userinfo in re.findall(r"://([^/@\s]+)@", text):
            _, _, password = userinfo.partition(":")
            assert not password or ONLY_A_REF.match(password), f"inline password in {text!r}"
    raw = COMPOSE_FILE.read_text(encoding="utf-8").lower()
    for literal in ("changethis", "password123", "secret123", "postgres:postgres@", "admin:admin"):
        assert literal not in raw


def test_required_passwords_fail_loudly_when_unset(compose: dict) -> None:
    env = environment(compose["services"]["postgres"])
    for key in ["POSTGRES_PASSWORD"] + [f"{name.upper()}_DB_PASSWORD" for name in HOSPITALS]:
        match = ONLY_A_REF.match(env[key])
        assert match and match.group(1) == key and match.group(2) == ":?", f"{key} must be ${{{key}:?...}}"


def test_every_variable_is_documented_and_none_is_filled_in(
    compose: dict, env_example: dict[str, str]
) -> None:
    used = {m.group(1) for m in VAR_REF.finditer(COMPOSE_FILE.read_text(encoding="utf-8"))}
    assert {"FEDIMG_DATA", "POSTGRES_PASSWORD"} <= used
    missing = used - set(env_example)
    assert not missing, f"compose/.env.example does not document {sorted(missing)}"
    unused = set(env_example) - used
    assert not unused, f"compose/.env.example lists variables compose never reads: {sorted(unused)}"
    for key, value in env_example.items():
        if SECRET_KEY.search(key):
            assert value == "", f".env.example ships a value for {key}"
    assert env_example["FEDIMG_DATA"], "the data path has a useful example value"


def test_init_script_creates_one_database_per_hospital(compose: dict) -> None:
    script = COMPOSE / "postgres-init.sh"
    assert os.access(script, os.X_OK), "the postgres entrypoint runs (not sources) executable *.sh files"
    text = script.read_text(encoding="utf-8")
    loop = re.search(r"for site in ([^;]+);", text)
    assert loop and loop.group(1).split() == HOSPITALS
    assert "set -euo pipefail" in text and "ON_ERROR_STOP=1" in text
    postgres = compose["services"]["postgres"]
    assert f"./{script.name}:/docker-entrypoint-initdb.d/" in " ".join(postgres["volumes"])
    env = environment(postgres)
    for name in HOSPITALS:
        assert f"{name.upper()}_DB_PASSWORD" in env
    assert not re.search(r"PASSWORD\s+'[^:]", text), "no literal password in the SQL"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_init_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(COMPOSE / "postgres-init.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (COMPOSE / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_base_install_and_user() -> None:
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms == ["python:3.11-slim"]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires

    runs = " && ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(r"pip install (.* )?-c constraints\.txt( .*)? \.", runs), runs

    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith(("root:", "0:"))
    last_user = max(i for i, (op, _) in enumerate(instructions) if op == "USER")
    assert all(op not in ("RUN",) for op, _ in instructions[last_user + 1 :]), (
        "nothing runs as root after USER"
    )
    created = re.search(r"useradd\b([^&;]*)", runs)
    assert created and users[-1] == created.group(1).split()[-1], "USER is the account the image creates"

    entrypoint = [arg for op, arg in instructions if op == "ENTRYPOINT"]
    assert entrypoint == ['["fedimg"]']
    assert serve_command(name="x", data="d", port=1, host="h", state_dir="s")[0] == "fedimg"


def test_dockerfile_copies_what_exists() -> None:
    for op, arg in dockerfile_instructions():
        if op == "COPY":
            *sources, _ = arg.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert (REPO / "constraints.txt").is_file()


def test_state_dir_is_writable_by_the_user() -> None:
    runs = " ".join(arg for op, arg in dockerfile_instructions() if op == "RUN")
    assert re.search(rf"chown\s+\S+\s+{STATE_DIR}\b", runs) or re.search(
        rf"chown\s+\S+\s+.*{STATE_DIR}", runs
    )


# --- docker compose, when installed -------------------------------------------------------


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not docker_compose_available(),
    reason="'docker compose' is not available on this machine (docker compose version fails)",
)
def test_docker_compose_config(env_example: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **{key: value or "example-value" for key, value in env_example.items()}}
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_filled_in_env_file_is_never_committed() -> None:
    def ignored(path: str) -> bool:
        return (
            subprocess.run(
                ["git", "-C", str(REPO), "check-ignore", "-q", path], capture_output=True
            ).returncode
            == 0
        )

    assert ignored("compose/.env"), "compose/.env (the filled-in passwords) must be git-ignored"
    assert not ignored("compose/.env.example")
