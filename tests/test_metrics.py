"""Prometheus metrics of ``fleet controller run --listen``, scraped over real HTTP from a
controller running tasks on the lab; its ``--log-format json`` log lines; and the systemd
unit that runs it (deploy/)."""

from __future__ import annotations

import configparser
import json
import logging
import shutil
import subprocess
import sys
import time
from datetime import datetime
from http.client import HTTPConnection
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet import metrics
from fleet.cli.controller_cmd import _JsonFormatter
from tests.api_client import ApiClient, free_port
from tests.conftest import make_pool, wait_for

ACCOUNT = "metricstest"
TASKS = 12
UNIT = Path(__file__).resolve().parents[1] / "deploy" / "fleet-controller.service"


def scrape(port: int) -> tuple[int, dict[str, str], dict[str, dict[tuple, float]]]:
    """GET /metrics without any signature; return its status, headers and samples
    ({sample name: {sorted label pairs: value}})."""
    conn = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        status, headers, text = resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return status, {k.lower(): v for k, v in headers.items()}, samples


def by_state(samples: dict[str, dict[tuple, float]], name: str) -> dict[str, int]:
    """The non-zero states of the gauge ``name``."""
    return {dict(k)["state"]: int(v) for k, v in samples[name].items() if v}


def counted(items: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item["state"]] = out.get(item["state"], 0) + 1
    return out


# -- pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "buckets", "cumulative"),
    [
        ([], (1, 2), [0, 0, 0]),
        ([0.5], (1, 2), [1, 1, 1]),
        ([1.0], (1, 2), [1, 1, 1]),  # a bound is inside its bucket (le: less or equal)
        ([1.5, 2.0], (1, 2), [0, 2, 2]),
        ([3.0], (1, 2), [0, 0, 1]),  # only +Inf
        ([0.001, 0.5, 5, 5000], (0.01, 1, 10), [1, 2, 3, 4]),
    ],
)
def test_durations_are_binned_as_prometheus_cumulative_buckets(values, buckets, cumulative):
    histogram = metrics.Durations("fleet_check_seconds", "check", buckets)
    for value in values:
        histogram.add(value)
    (before,) = histogram.collect()
    assert {s.name: s.value for s in before.samples}["fleet_check_seconds_count"] == 0
    histogram.flush()  # samples are seen once flushed
    (family,) = histogram.collect()
    got = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert list(got) == [*(str(float(b)) for b in buckets), "+Inf"]
    assert list(got.values()) == cumulative
    totals = {s.name: s.value for s in family.samples}
    assert totals["fleet_check_seconds_count"] == len(values)
    assert totals["fleet_check_seconds_sum"] == pytest.approx(sum(values))


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("HostKeyMismatch", "host_key_mismatch"),
        ("HostKeyUnknown", "host_key_unknown"),
        ("AuthenticationFailed", "auth"),
        ("NodeUnreachable", "unreachable"),
        ("AgentError", "other"),
    ],
)
def test_handshake_failures_are_counted_by_reason(code, reason):
    def value():
        return metrics.REGISTRY.get_sample_value(
            "fleet_ssh_handshake_failures_total", {"reason": reason}
        )

    before = value()
    metrics.handshake_failed(code)
    assert value() == before + 1


def test_exposition_is_prometheus_text_of_fleets_own_registry():
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {
        "fleet_task_dispatch_seconds",
        "fleet_task_completion_seconds",
        "fleet_ssh_connections",
        "fleet_ssh_handshake_failures",
        "fleet_api_requests",
        "fleet_api_request_seconds",
        "fleet_controller_turns",
        "process_cpu_seconds",
    } <= names
    assert not any(n.startswith("python_gc") for n in names)  # not the global registry


def test_json_log_lines_carry_time_level_logger_message_and_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("fleet.x", logging.ERROR, "f.py", 1, "a %s", ("b",), exc_info)
    entry = json.loads(_JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "fleet.x"
    assert entry["message"] == "a b"
    assert "ValueError: boom" in entry["exception"]
    assert datetime.fromisoformat(entry["time"]).timestamp() == pytest.approx(
        record.created, abs=0.001
    )
    plain = logging.LogRecord("fleet.x", logging.INFO, "f.py", 1, "c", (), None)
    assert "exception" not in json.loads(_JsonFormatter().format(plain))


# -- a real controller -----------------------------------------------------------------


@pytest.mark.lab
def test_metrics_match_the_store_and_count_the_work_done(
    fleet, lab_inventory, controller, tmp_path
):
    port = free_port()
    # A host nobody listens for: its handshakes fail as unreachable.
    dead_port = free_port()
    lines = lab_inventory.read_text().splitlines()
    user = next(p for p in lines[2].split() if p.startswith("ansible_user="))
    lab_inventory.write_text(
        "\n".join([*lines, f"zz-dead ansible_host=127.0.0.1 ansible_port={dead_port} {user}"])
        + "\n"
    )
    hosts = make_pool(fleet, lab_inventory, "p", 2, "--task-slots-per-node", "2")
    fleet("pool", "create", "--id", "q", "--hosts", "zz-dead")
    key = fleet.json("account", "create", ACCOUNT)["key"]
    started = time.time()
    proc = controller("--listen", f"127.0.0.1:{port}", "--log-format", "json")
    client = ApiClient(port, ACCOUNT, key)

    def up():
        try:
            return scrape(port)[0] == 200
        except OSError:
            return False

    wait_for(up, 30, message="the API to listen")
    fleet("job", "create", "--id", "j", "--pool", "p")
    tasks = [{"id": f"t{i}", "commandLine": f"echo {i}"} for i in range(TASKS)]
    fleet.add_tasks("j", tasks)
    fleet("job", "wait", "j", "--timeout", "60")
    took = time.time() - started

    status, headers, samples = scrape(port)
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert headers["content-type"].startswith("text/plain")

    # Counts by state are the store's, as the CLI shows them.
    assert by_state(samples, "fleet_tasks") == counted(fleet.json("task", "list", "--job", "j"))
    assert by_state(samples, "fleet_tasks") == {"completed": TASKS}
    nodes = fleet.json("node", "list", "--pool", "p") + fleet.json("node", "list", "--pool", "q")
    assert by_state(samples, "fleet_nodes") == counted(nodes)
    assert by_state(samples, "fleet_pools") == {"active": 2}
    assert by_state(samples, "fleet_jobs") == counted(fleet.json("job", "list"))
    for state in ("active", "preparing", "running", "completed"):
        assert ((("state", state),)) in samples["fleet_tasks"]  # zero states are served too

    # Each task was dispatched and completed once; no wait is longer than the test.
    for name in ("fleet_task_dispatch_seconds", "fleet_task_completion_seconds"):
        assert samples[f"{name}_count"][()] == TASKS, name
        assert 0 < samples[f"{name}_sum"][()] < TASKS * took, name
    assert samples["fleet_ssh_connections"][()] == len(hosts)
    failures = samples["fleet_ssh_handshake_failures_total"]
    assert failures[(("reason", "unreachable"),)] >= 1
    assert failures[(("reason", "host_key_mismatch"),)] == 0
    assert samples["fleet_controller_turns_total"][()] > 0
    assert samples["process_resident_memory_bytes"][()] > 0

    # API requests are counted by operation and status, signed or refused.
    ok = (("operation", "Job_List"), ("status", "200"))
    refused = (("operation", "Job_List"), ("status", "403"))
    assert client.call("GET", "/jobs").status == 200
    assert client.call("GET", "/jobs", key="d3JvbmcK" * 11).status == 403
    _, _, before = scrape(port)
    for _ in range(3):
        assert client.call("GET", "/jobs").status == 200
    _, _, after = scrape(port)
    requests = after["fleet_api_requests_total"]
    assert requests[ok] == before["fleet_api_requests_total"][ok] + 3
    assert requests[refused] == 1
    seconds = after["fleet_api_request_seconds_count"]
    assert seconds[(("operation", "Job_List"),)] == requests[ok] + requests[refused]

    assert proc.stop() == 0
    lines = [line for line in proc.log_text().splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()
    assert any(e["message"].startswith("api: listening on") for e in entries)
    assert any("zz-dead" in e["message"] and e["level"] == "warning" for e in entries)


# -- the systemd unit --------------------------------------------------------------------


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text())
    return parser["Service"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("User", "fleet"),
        ("Environment", "FLEET_HOME=/var/lib/fleet"),
        (
            "ExecStart",
            "/usr/local/bin/fleet controller run --listen 127.0.0.1:8443 --log-format json",
        ),
        ("Restart", "on-failure"),
        ("UMask", "0077"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/fleet"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
    ],
)
def test_the_unit_confines_the_controller(key, value):
    assert _service().get(key) == value


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit is not verified")
    # verify wants ExecStart's program to exist: point it at this fleet
    fleet_bin = shutil.which("fleet") or str(Path(sys.executable).with_name("fleet"))
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/fleet", fleet_bin))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert UNIT.name not in result.stderr, result.stderr  # no warning about the unit either
