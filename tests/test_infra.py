"""infra/ is checked (docs/operations/deployment.md, "What is checked where"): the files of the Docker Compose
and Kubernetes shapes, which no development machine or CI run can deploy, are validated by real
schema validators, offline:

- infra/compose.yaml against the Compose specification's JSON schema (vendored,
  infra/schemas/compose-spec.json);
- the core Kubernetes manifests in infra/k8s/ against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: an unknown field is an error);
- the CloudNativePG Cluster against the operator's own CRD schema (vendored), closed like the API
  server's strict field validation;
- the Airflow chart values against a schema of ours (infra/schemas/README.md says why);

and each validator is shown to reject a deliberately broken copy. Every command the files run
is parsed by the real CLI (fashion-search's and Airflow's parsers: a subcommand or option that
does not exist fails), and every COPY source of the Dockerfile exists. Fast: nothing is
deployed, no database is needed.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
SCHEMAS = INFRA / "schemas"
K8S_VERSION = "1.33"  # the oldest Kubernetes the manifests target (autoscaling/v2, policy/v1)
CNPG_CRD = SCHEMAS / "cnpg-1.30.0-postgresql.cnpg.io_clusters.yaml"
VALUES = K8S / "airflow-values.yaml"
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=Loader)


def _manifests() -> list[tuple[str, dict]]:
    """Every Kubernetes object in infra/k8s/ (the chart values are not one)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path != VALUES:
            docs += [(f"{path.name}:{d['kind']}", d) for d in yaml.safe_load_all(path.read_text())]
    return docs


def _compose() -> dict:
    return _yaml(INFRA / "compose.yaml")  # YAML merge keys (<<: *app) resolved, as compose does


# ------------------------------------------------------------------ validators


def _compose_errors(doc: dict) -> list[str]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)  # the schema's $schema: draft-07
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def _closed(node: Any) -> Any:
    """The CRD's openAPIV3Schema as the API server applies it with strict field validation
    (kubectl's default): an object with listed properties accepts no other field, unless the
    schema preserves unknown fields or types its extra values (additionalProperties)."""
    if isinstance(node, dict):
        node = {k: _closed(v) for k, v in node.items()}
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def _cnpg_errors(doc: dict) -> list[str]:
    crd = _yaml(CNPG_CRD)
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    assert doc["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert doc["kind"] == crd["spec"]["names"]["kind"]
    schema = _closed(version["schema"]["openAPIV3Schema"])
    # OpenAPI 3.0 schema objects are JSON Schema draft 4 (boolean exclusiveMinimum/Maximum)
    validator = jsonschema.Draft4Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def _k8s_errors(doc: dict) -> list[str]:
    if doc["apiVersion"].startswith("postgresql.cnpg.io/"):
        return _cnpg_errors(doc)
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    return []


def _values_errors(doc: dict) -> list[str]:
    schema = json.loads((SCHEMAS / "airflow-chart-values.ours.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


# ------------------------------------------------------------------ compose


def test_compose_matches_the_compose_specification():
    assert _compose_errors(_compose()) == []


def test_compose_validator_rejects_broken_copies():
    broken = copy.deepcopy(_compose())
    broken["services"]["api"]["restarts"] = "always"  # unknown key in a service
    assert any("restarts" in e for e in _compose_errors(broken))
    broken = copy.deepcopy(_compose())
    broken["services"]["api"]["deploy"]["replicas"] = ["two"]  # wrong type
    assert any("replicas" in e for e in _compose_errors(broken))
    broken = copy.deepcopy(_compose())
    broken["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"] = "gpu"
    assert _compose_errors(broken)


def test_compose_layout():
    services = _compose()["services"]
    assert {
        "db",
        "db-replica",
        "redis",
        "migrate",
        "api",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "worker-cpu",
        "worker-gpu",
    } <= set(services)
    # the standby: same image as the primary, a base backup with -R on first start
    assert services["db-replica"]["image"] == services["db"]["image"]
    script = services["db-replica"]["entrypoint"][-1]
    assert "pg_basebackup" in script and " -R " in script and "-h db " in script
    assert "replication" in (INFRA / "initdb" / "02-replication.sh").read_text()
    # searches read the standby, writes go to the primary
    api_env = services["api"]["environment"]
    assert "@db-replica:5432/" in api_env["DATABASE_READ_URL"]
    assert "@db:5432/" in api_env["DATABASE_URL"]
    # CeleryExecutor in every Airflow component, from the second settings file
    celery_env = (INFRA / "airflow-celery.env").read_text()
    assert "AIRFLOW__CORE__EXECUTOR=CeleryExecutor" in celery_env.splitlines()
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor"):
        assert services[name]["env_file"] == ["airflow.env", "airflow-celery.env"], name
    for name in ("worker-cpu", "worker-gpu"):
        service = services[name]
        assert service["env_file"] == ["airflow.env", "airflow-celery.env"], name
        env = service["environment"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${REDIS_PASSWORD:?")
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")
    # workers share nothing but the database and the broker: a FASHION_HOME volume each
    volumes = {name: services[name]["volumes"] for name in ("worker-cpu", "worker-gpu")}
    assert volumes == {
        "worker-cpu": ["worker-cpu-data:/data"],
        "worker-gpu": ["worker-gpu-data:/data"],
    }
    others = {v for n, s in services.items() if n not in volumes for v in s.get("volumes", [])}
    assert not others & {"worker-cpu-data:/data", "worker-gpu-data:/data"}
    assert services["worker-cpu"]["command"][-2:] == ["--queues", "default"]
    assert services["worker-gpu"]["command"][-4:] == ["--queues", "gpu", "--concurrency", "1"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]


def test_compose_has_no_default_secrets_and_repeats_no_settings_file():
    text = (INFRA / "compose.yaml").read_text()
    for secret in (
        "POSTGRES_PASSWORD",
        "REPLICATION_PASSWORD",
        "REDIS_PASSWORD",
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_API_SECRET_KEY",
    ):
        assert f"${{{secret}:?" in text, secret  # compose refuses to start without it
        assert f"${{{secret}:-" not in text and f"${{{secret}-" not in text, secret
    # what airflow-celery.env sets is not set again (tests/test_ops_airflow.py: airflow.env)
    for line in (INFRA / "airflow-celery.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key = line.split("=", 1)[0]
            assert key not in text, (
                f"{key} is set in infra/airflow-celery.env; not again in compose"
            )


# ------------------------------------------------------------------ kubernetes


@pytest.mark.parametrize("name,doc", _manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_kubernetes_manifest_validates(name, doc):
    assert _k8s_errors(doc) == [], name


def test_kubernetes_validators_reject_broken_copies():
    docs = dict(_manifests())
    deployment = docs["api.yaml:Deployment"]
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = "5s"
    assert _k8s_errors(broken)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"] = "/readyz"
    assert _k8s_errors(broken)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # unknown field
    assert _k8s_errors(broken)
    broken = copy.deepcopy(docs["api.yaml:HorizontalPodAutoscaler"])
    broken["spec"]["minReplicas"] = "two"
    assert _k8s_errors(broken)

    cluster = docs["postgres-cluster.yaml:Cluster"]
    broken = copy.deepcopy(cluster)
    broken["spec"]["instances"] = "two"
    assert any("instances" in e for e in _k8s_errors(broken))
    broken = copy.deepcopy(cluster)
    broken["spec"]["bootstrap"]["initdb"]["postInitApplicationSql"] = []  # misspelt field
    assert any("postInitApplicationSql" in e for e in _k8s_errors(broken))
    broken = copy.deepcopy(cluster)
    broken["spec"]["instances"] = 0  # minimum 1
    assert _k8s_errors(broken)


def test_api_and_database_manifests_fit_together():
    docs = dict(_manifests())
    cluster = docs["postgres-cluster.yaml:Cluster"]
    name = cluster["metadata"]["name"]
    assert cluster["spec"]["instances"] == 2
    assert (
        "CREATE EXTENSION IF NOT EXISTS vector"
        in (cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"])
    )
    deployment = docs["api.yaml:Deployment"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]  # the HPA's utilisation needs a request
    env = {e["name"]: e for e in container["env"]}
    assert f"@{name}-rw:5432/" in env["DATABASE_URL"]["value"]
    assert f"@{name}-ro:5432/" in env["DATABASE_READ_URL"]["value"]
    for var in ("DB_USER", "DB_PASSWORD"):  # from the operator's Secret, no password here
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-app"
    service = docs["api.yaml:Service"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    hpa = docs["api.yaml:HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in deployment["spec"]  # the HPA owns it


# ------------------------------------------------------------------ helm values


def test_airflow_values_validate_and_broken_copies_are_rejected():
    values = _yaml(VALUES)
    assert _values_errors(values) == []
    broken = copy.deepcopy(values)
    broken["workers"]["celery"]["sets"][0]["nodeSelectr"] = {}  # unknown key in a worker set
    assert any("nodeSelectr" in e for e in _values_errors(broken))
    broken = copy.deepcopy(values)
    broken["workers"]["celery"]["replicas"] = "two"
    assert _values_errors(broken)
    broken = copy.deepcopy(values)
    broken["executor"] = "Celery"
    assert _values_errors(broken)


def test_airflow_values_route_the_gpu_queue_to_gpu_nodes():
    values = _yaml(VALUES)
    assert values["executor"] == "CeleryExecutor"
    celery = values["workers"]["celery"]
    assert celery["queue"] == "default" and celery["enableDefault"] is True
    (gpu,) = [s for s in celery["sets"] if s["queue"] == "gpu"]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert {"name": "AIRFLOW__CELERY__WORKER_CONCURRENCY", "value": "1"} in gpu["env"]
    # the same image as the API
    image = dict(_manifests())["api.yaml:Deployment"]["spec"]["template"]["spec"]["containers"]
    assert image[0]["image"] == "{repository}:{tag}".format(**values["images"]["airflow"])
    # the ConfigMaps it reads are made from the same settings files as compose's env_file
    text = VALUES.read_text()
    assert "--from-env-file=infra/airflow.env" in text
    assert "--from-env-file=infra/airflow-celery.env" in text


# ------------------------------------------------------------------ commands


def _commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every command the deployment files run, shell `a && b` split up."""
    found: list[tuple[str, list[str]]] = []

    def add(where: str, argv: list[str]) -> None:
        if argv[:2] == ["sh", "-c"]:
            for part in argv[2].split("&&"):
                found.append((where, shlex.split(part)))
        elif argv and argv[0] in ("fashion-search", "airflow"):
            found.append((where, argv))

    for name, service in _compose()["services"].items():
        if isinstance(service.get("command"), list):
            add(f"compose {name}", service["command"])
    for where, doc in _manifests():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            add(f"{where} {c['name']}", c.get("command", []) + c.get("args", []))
    cmd = re.search(r"^CMD (\[.*\])$", (INFRA / "Dockerfile").read_text(), re.MULTILINE)
    add("Dockerfile CMD", json.loads(cmd.group(1)))
    # the commands docs/operations/deployment.md tells people to run
    for line in re.findall(
        r"`(fashion-search [^`|]+)`", (REPO / "docs" / "operations" / "deployment.md").read_text()
    ):
        add("docs/operations/deployment.md", shlex.split(line))
    return found


def test_the_files_run_the_commands_they_should():
    argvs = [" ".join(argv) for _, argv in _commands()]
    for expected in (
        "fashion-search serve --host 0.0.0.0 --port 8000",
        "fashion-search db migrate",
        "airflow db migrate",
        "airflow pools set gpu 1 GPU encoders",
        "airflow api-server --host 0.0.0.0 --port 8080",
        "airflow scheduler",
        "airflow dag-processor",
        "airflow celery worker --queues default",
        "airflow celery worker --queues gpu --concurrency 1",
    ):
        assert expected in argvs, expected


def test_every_fashion_search_command_is_a_real_subcommand():
    """Each subcommand answers --help (the installed console script, and the CLI's parser for
    each one: a start of the script imports the whole CLI, too slow to repeat), and each
    command line is parsed by the CLI's own parser (its options and values are accepted)."""
    from services.cli import build_parser

    commands = [(w, argv[1:]) for w, argv in _commands() if argv[0] == "fashion-search"]
    assert commands
    exe = Path(sys.executable).with_name("fashion-search")
    run = subprocess.run(
        [str(exe), "--help"], check=False, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    for where, args in commands:
        words = [a for a in args if not a.startswith("-")][:2]
        leaf = words[0] in ("serve", "sync", "index", "eval")  # no sub-subcommands
        sub = words[:1] if leaf else words
        assert f"    {sub[0]} " in run.stdout, f"{where}: no subcommand {sub[0]!r}"
        for argv in ([*sub, "--help"], args):
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                try:
                    build_parser().parse_args(argv)
                    code = None
                except SystemExit as e:  # --help exits 0, an argparse error 2
                    code = e.code
            expected = 0 if argv[-1] == "--help" else None
            assert code == expected, f"{where}: fashion-search {' '.join(argv)} exits {code}"


def test_every_airflow_command_is_a_real_subcommand(tmp_path):
    """Parsed by Airflow's own CLI parser, with CeleryExecutor configured (the `celery`
    commands exist only then), in a scratch AIRFLOW_HOME."""
    commands = sorted({tuple(argv[1:]) for _, argv in _commands() if argv[0] == "airflow"})
    assert commands
    script = (
        "import json, sys\n"
        "from airflow.cli.cli_parser import get_parser\n"
        "bad = []\n"
        "for argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        get_parser().parse_args(argv)\n"
        "    except SystemExit:\n"
        "        bad.append(argv)\n"
        "print(json.dumps(bad))\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.splitlines()[-1]) == [], run.stderr[-2000:]


# ------------------------------------------------------------------ image and schemas


def test_dockerfile_copy_sources_exist():
    text = (INFRA / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (.+)$", text, re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _dest = [w for w in line.split() if not w.startswith("--")]
        for source in sources:
            assert glob.glob(str(REPO / source)), f"COPY {source}: nothing in the repository"
    ignored = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".fashion" in ignored


def test_vendored_schemas_are_the_ones_the_readme_names():
    readme = (SCHEMAS / "README.md").read_text()
    for path in sorted(SCHEMAS.iterdir()):
        if path.name != "README.md":
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert f"`{path.name}`" in readme, path.name
            assert digest in readme, f"{path.name}: sha256 {digest} not in schemas/README.md"
