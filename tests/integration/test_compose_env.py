"""The native stack configured exactly as compose/docker-compose.yml configures the containers with
compose/.env.example, then the guide's flow against it.

The environments come from compose/check (compose-go, the loader Docker Compose uses), so what runs here is what
compose would pass, not a copy of it. Only what cannot be the same outside the compose network is adapted, and
each adaptation is listed in ADAPTED: the compose service names become the test run's Kafka and Redis, the
container ports become free ports, and the shared Kafka resources get names of their own, as every integration
test's do, so a developer's stack on the same broker is neither written to nor fenced. The topics are created by
compose/create-topics.sh, the compose init, through the same TopicCommand class as the image's kafka-topics.sh.
"""
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import BROKERS, REDIS_DBS, REDIS_PORT, REPO, Client, Stack, flush_dbs, free_port
from test_get_started import run_guide

GO = shutil.which("go") or "/usr/local/go/bin/go"
GO_RUN_TIMEOUT_S = 300      # a cold module cache compiles compose-go first
TOPICS_TIMEOUT_S = 120      # four JVM starts of the topic tool
ENV_EXAMPLE = REPO / "compose" / ".env.example"
DATA = Path(os.environ.get("CREDITS_DATA_DIR", REPO / ".data"))
TEST_PREFIX = "credits-test-compose-" + uuid.uuid4().hex[:8]  # new topics and ids for every run

# Every variable whose value differs from what compose passes, and why. The test fails if any other differs.
ADAPTED = {
    "CREDITS_KAFKA_BROKERS": "kafka:9092 is the compose service; here the test run's broker",
    "CREDITS_REDIS_HOST": "redis is the compose service; here 127.0.0.1",
    "CREDITS_REDIS_PORT": "the test run's Redis port",
    "CREDITS_REDIS_DB": "compose's Redis is the stack's alone (database 0); here the test's own databases",
    "CREDITS_REDIS_REBUILD_DB": "the same",
    "CREDITS_HTTP_PORT": "8080 inside the container; here a free port",
    "CREDITS_PROJECTOR_METRICS_PORT": "9464 inside the container; here a free port",
    "CREDITS_LEDGER_TOPIC": "a topic of the test's own, not the running stack's",
    "CREDITS_USAGE_TOPIC": "a topic of the test's own",
    "CREDITS_SNAPSHOT_TOPIC": "a topic of the test's own",
    "CREDITS_KEYS_TOPIC": "a topic of the test's own",
    "CREDITS_DLQ_TOPIC": "a topic of the test's own",
    "CREDITS_TRANSACTIONAL_ID": "compose leaves the default, which would fence the running stack's API",
}


def compose_env(service):
    """The CREDITS_* environment compose gives `service` with compose/.env.example as compose/.env."""
    out = subprocess.run([GO, "run", ".", "-env-file", str(ENV_EXAMPLE), service], cwd=REPO / "compose" / "check",
                         env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"},
                         capture_output=True, text=True, timeout=GO_RUN_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def adapt(env, ports):
    result = dict(env)
    for name, value in env.items():
        if name == "CREDITS_KAFKA_BROKERS":
            assert value == "kafka:9092"
            result[name] = BROKERS
        elif name == "CREDITS_REDIS_HOST":
            assert value == "redis"
            result[name] = "127.0.0.1"
        elif name == "CREDITS_REDIS_PORT":
            result[name] = REDIS_PORT
        elif name in ports:
            result[name] = ports[name]
        elif name.endswith("_TOPIC"):
            assert value.startswith("credits.")
            result[name] = TEST_PREFIX + value[len("credits"):]
    if "CREDITS_REDIS_PORT" in env:
        result["CREDITS_REDIS_DB"], result["CREDITS_REDIS_REBUILD_DB"] = map(str, REDIS_DBS["test_compose_env"])
    if "CREDITS_API_KEYS" in env:
        result["CREDITS_TRANSACTIONAL_ID"] = TEST_PREFIX + "-api"
    changed = {name for name in result if result[name] != env.get(name)}
    assert changed <= ADAPTED.keys(), f"adapted beyond the list: {changed - ADAPTED.keys()}"
    return result


def process_env(credits_env):
    """The processes' whole environment: the CREDITS_* variables and nothing else of ours."""
    return {"PATH": os.environ["PATH"], "ASAN_OPTIONS": "detect_leaks=0", **credits_env}


def healthcheck(kind, env):
    return subprocess.run([str(REPO / "compose" / "healthcheck.sh"), kind], env=process_env(env),
                          capture_output=True, timeout=30).returncode


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory):
    ports = {"CREDITS_HTTP_PORT": str(free_port()), "CREDITS_PROJECTOR_METRICS_PORT": str(free_port())}
    api, projector, init = (adapt(compose_env(s), ports) for s in ("api", "projector", "init-topics"))

    # The compose init, with the Kafka CLI of the native broker in place of the image's kafka-topics.sh.
    tool = tmp_path_factory.mktemp("compose") / "kafka-topics.sh"
    tool.write_text("#!/bin/sh\nexec java -Xmx256m -Dlog4j2.configurationFile='%s' -cp '%s/*' "
                    "org.apache.kafka.tools.TopicCommand \"$@\"\n"
                    % (DATA / "kafka" / "log4j2-tools.properties", DATA / "kafka" / "lib"))
    tool.chmod(0o755)
    out = subprocess.run([str(REPO / "compose" / "create-topics.sh")],
                         env={**process_env(init), "KAFKA_TOPICS": str(tool)},
                         capture_output=True, text=True, timeout=TOPICS_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr

    # One environment for both processes, as each reads only its own variables; the shared ones agree.
    shared = api.keys() & projector.keys()
    assert shared and all(api[k] == projector[k] for k in shared), "api and projector disagree"
    flush_dbs(REDIS_DBS["test_compose_env"])
    stack = Stack("-compose", exact_env=process_env({**projector, **api}))
    stack.start()
    yield stack, api, projector
    stack.stop()


def test_the_compose_configuration_runs_the_guide(compose_stack):
    stack, api, projector = compose_stack
    assert api["CREDITS_HTTP_ADDRESS"] == "0.0.0.0"   # as in the container: all interfaces
    assert healthcheck("api", api) == 0, "the api container's health check fails"
    assert healthcheck("projector", projector) == 0, "the projector container's health check fails"

    tenant, key = api["CREDITS_API_KEYS"].split(",")[0].split(":", 1)
    run_guide(Client(stack.url, key), "user_" + uuid.uuid4().hex[:12], tenant,
              api["CREDITS_LEDGER_TOPIC"], api["CREDITS_USAGE_TOPIC"], int(api["CREDITS_REDIS_DB"]))


def test_the_health_checks_fail_when_nothing_answers():
    closed = {"CREDITS_HTTP_PORT": str(free_port()), "CREDITS_PROJECTOR_METRICS_PORT": str(free_port())}
    assert healthcheck("api", closed) == 1
    assert healthcheck("projector", closed) == 1
