"""docker-compose.yml cannot be started here (no Docker engine): check that it parses, has the
whole topology, and uses the same files as the test stack of integration-tests/stack/ — the
Debezium connector and Connect worker properties, the reference schema, the worker's
configuration — and that the worker's configuration, with the compose file's EAVLAKE__*
overrides, is valid and says what the stack needs.

    python3 integration-tests/compose_check.py path/to/eavlake
"""
import json
import os
import re
import subprocess
import sys

import tomllib

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def properties(path):
    """A properties file as Kafka Connect reads it (the subset config/ uses: key=value lines,
    # and ! comments, backslash escapes), as integration-tests/stack/connect.sh registers it."""
    unescape = lambda m: {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(m[1], m[1])
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and line[0] not in "#!" and "=" in line:
                key, value = line.split("=", 1)
                out[key.strip()] = re.sub(r"\\(.)", unescape, value.strip())
    return out


def main():
    binary = sys.argv[1]
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose["services"]
    missing = {"postgres", "kafka", "connect", "minio", "eavlake"} - services.keys()
    assert not missing, f"services missing: {missing}"

    # Every bind mount names a file or folder of the repository.
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("."):
                assert os.path.exists(os.path.join(ROOT, host)), f"{name}: {host} does not exist"

    # Kafka and Debezium images of the versions the test stack runs (its Maven files).
    def pom_version(stack, prop):
        with open(os.path.join(ROOT, "integration-tests/stack", stack, "pom.xml")) as f:
            return re.search(f"<{prop}>(.*?)</{prop}>", f.read())[1]
    assert services["kafka"]["image"] == f"apache/kafka:{pom_version('kafka', 'kafka.version')}", services["kafka"]
    debezium = pom_version("connect", "debezium.version")
    assert services["connect"]["image"] == f"quay.io/debezium/connect:{debezium}", services["connect"]

    mounts = lambda svc: {v.split(":")[0] for v in services[svc].get("volumes", [])}
    assert "./schemas" in mounts("postgres"), "postgres loads schemas/"
    assert {"./config/debezium-postgres.properties", "./config/connect-distributed.properties"} <= mounts("connect")
    with open(os.path.join(ROOT, "integration-tests/stack/connect.sh")) as f:
        script = f.read()
    assert '("connect-distributed", "worker"), ("debezium-postgres", "connector")' in script, \
        "connect.sh reads the same files from config/"
    # The service registers the connector config that connect.sh registers: its shell turns the
    # properties into JSON, run here on the connector file (placeholders left as they are).
    command = services["connect"]["command"][0].replace("$$", "$")
    to_json = next(l.strip() for l in command.splitlines() if l.strip().startswith("config=$("))
    to_json = to_json.replace("/tmp/connector.properties", os.path.join(ROOT, "config", "debezium-postgres.properties"))
    shown = subprocess.run(["bash", "-c", to_json + '; printf "%s" "{$config}"'], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    registered = json.loads(shown.stdout)
    assert registered == properties(os.path.join(ROOT, "config", "debezium-postgres.properties")), registered
    assert registered["transforms.route.topic.regex"] == r"eav\.public\.(entities|entity_values)", registered
    # Every placeholder of the two property files is given a value by the connect service.
    env = services["connect"]["environment"]
    for props in ("debezium-postgres.properties", "connect-distributed.properties"):
        with open(os.path.join(ROOT, "config", props)) as f:
            text = "".join(line for line in f if not line.lstrip().startswith("#"))
        for part in text.split("${")[1:]:
            key = part.split("}")[0]
            assert key in env, f"{props}: ${{{key}}} has no value in the connect service"

    # The worker: its config file (copied into the image from config/) with the overrides.
    worker = services["eavlake"]
    command = worker["command"]
    config = command[command.index("--config") + 1]
    assert config.startswith("/etc/eavlake/"), config
    local = os.path.join(ROOT, "config", os.path.basename(config))
    overrides = {k: str(v) for k, v in worker["environment"].items() if k.startswith("EAVLAKE__")}
    shown = subprocess.run([binary, "config", "--config", local], capture_output=True, text=True,
                           env={**os.environ, **overrides})
    assert shown.returncode == 0, shown.stderr
    effective = tomllib.loads(shown.stdout)
    assert effective["kafka"]["brokers"] == "kafka:9092", effective["kafka"]
    assert effective["lake"]["url"] == "s3://lake/eav"
    with open(os.path.join(ROOT, "config", "debezium-postgres.properties")) as f:
        routed = [l.split("=", 1)[1].strip() for l in f if l.startswith("transforms.route.topic.replacement=")]
    assert effective["kafka"]["topics"] == routed, f"the worker reads the topic Debezium writes: {routed}"
    assert effective["metrics"]["listen"] == "0.0.0.0:9464", effective["metrics"]

    # Prometheus scrapes that listener with the rules of config/, and Grafana provisions the
    # dashboard of config/ from a data source that is that Prometheus.
    assert {"./config/prometheus.yml", "./config/alerts.yml"} <= mounts("prometheus")
    with open(os.path.join(ROOT, "config", "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    assert prom["rule_files"] == ["alerts.yml"], prom["rule_files"]
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    port = effective["metrics"]["listen"].rsplit(":", 1)[1]
    assert targets == [f"eavlake:{port}"], targets
    assert {"./config/grafana/provisioning", "./config/grafana/dashboards"} <= mounts("grafana")
    with open(os.path.join(ROOT, "config/grafana/provisioning/datasources/prometheus.yml")) as f:
        ds = yaml.safe_load(f)["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and ds["uid"] == "prometheus", ds
    with open(os.path.join(ROOT, "config/grafana/provisioning/dashboards/eavlake.yml")) as f:
        provider = yaml.safe_load(f)["providers"][0]
    dashboards_mount = next(v for v in services["grafana"]["volumes"] if v.startswith("./config/grafana/dashboards"))
    assert provider["options"]["path"] == dashboards_mount.split(":")[1], provider
    with open(os.path.join(ROOT, "config/grafana/dashboards/eavlake.json")) as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == ds["uid"], panel["title"]
    print(f"docker-compose.yml: {len(services)} services, configs shared with the test stack, worker config valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
