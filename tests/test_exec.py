"""``fleet exec`` on the real lab: fan-out, grouped output, per-host errors."""

from __future__ import annotations

import asyncio

import pytest

from fleet import lab as lab_mod
from fleet.exec_results import fold
from fleet.execute import FreshConnections, run_everywhere, select_targets
from fleet.inventory import login_user
from fleet.reads import Reader
from fleet.settings import Settings
from fleet.ssh import Target

pytestmark = pytest.mark.lab


def test_exec_runs_on_every_selected_host_and_reports_each(fleet, lab_inventory, lab):
    fleet("host", "import", str(lab_inventory))
    result = fleet("exec", "--hosts", "node*", "-o", "json", "--", "sh", "-c", "echo $((6*7))")
    rows = result.json()
    assert [r["host"] for r in rows] == [n.name for n in lab.nodes]
    assert all(r["exitCode"] == 0 and r["stdout"] == "42\n" and r["error"] is None for r in rows)


def test_exec_groups_identical_output(fleet, lab_inventory, lab):
    fleet("host", "import", str(lab_inventory))
    out = fleet("exec", "--hosts", "node[01-03]", "--", "echo", "same").stdout
    assert f"{lab.nodes[0].name[:-2]}[01-03] (3) exit 0" in out
    assert out.count("same") == 1


def test_exec_arguments_are_not_interpreted_by_a_shell(fleet, lab_inventory):
    fleet("host", "import", str(lab_inventory))
    rows = fleet(
        "exec", "--hosts", "node01", "-o", "json", "--", "echo", "$(id)", ";", "`ls`"
    ).json()
    assert rows[0]["stdout"] == "$(id) ; `ls`\n"


def test_exec_exits_nonzero_when_any_host_fails_or_is_unreachable(fleet, lab_inventory, lab):
    fleet("host", "import", str(lab_inventory))
    victim = lab.nodes[1]
    lab_mod.stop_node(lab, victim.name)
    try:
        result = fleet(
            "exec",
            "--hosts",
            "node01,node02",
            "-o",
            "json",
            "--timeout",
            "10",
            "--",
            "true",
            check=False,
        )
    finally:
        lab_mod.start_node(lab, victim.name)
    assert result.code == 1
    rows = {r["host"]: r for r in result.json()}
    assert rows["node01"]["exitCode"] == 0 and rows["node01"]["error"] is None
    assert rows["node02"]["error"]["code"] == "NodeUnreachable"
    failing = fleet("exec", "--hosts", "node01", "--", "sh", "-c", "exit 4", check=False)
    assert failing.code == 1 and "exit 4" in failing.stdout


def test_exec_on_unknown_host_is_not_found(fleet, lab_inventory):
    fleet("host", "import", str(lab_inventory))
    result = fleet("exec", "--hosts", "nosuch", "--", "true", check=False)
    assert result.code == 3
    assert "nosuch" in result.stderr


@pytest.mark.parametrize(
    ("names", "folded"),
    [
        (["node01", "node02", "node03"], "node[01-03]"),
        (["node1", "node3", "node4"], "node[1,3-4]"),
        (["web", "db1"], "db1,web"),
        (["a7"], "a7"),
    ],
)
def test_fold_names_host_ranges(names, folded):
    assert fold(names) == folded


def test_a_host_without_a_user_gets_a_result_like_every_other(fleet, lab_inventory, lab):
    lines = lab_inventory.read_text().splitlines()
    lab_inventory.write_text(
        "\n".join(
            " ".join(w for w in ln.split() if not w.startswith("ansible_user="))
            if ln.startswith(lab.nodes[1].name)
            else ln
            for ln in lines
        )
        + "\n"
    )
    fleet("host", "import", str(lab_inventory))
    assert fleet.json("host", "show", lab.nodes[1].name)["user"] == login_user()
    result = fleet("exec", "--hosts", "node01,node02", "-o", "json", "--", "true", check=False)
    assert "Traceback" not in result.stderr
    rows = {r["host"]: r for r in result.json()}
    assert rows["node01"]["exitCode"] == 0
    if login_user() == lab.user:
        assert result.code == 0 and rows["node02"]["exitCode"] == 0
    else:  # the lab's sshd lets only its own user in
        assert result.code == 1 and rows["node02"]["error"]["code"] == "AuthenticationFailed"


def test_one_hosts_unexpected_error_never_hides_the_others_results(fleet, lab_inventory, lab):
    fleet("host", "import", str(lab_inventory))
    url = Settings.resolve(fleet.home).db_url
    good = select_targets(Reader(url), pattern="node01")
    # a target asyncssh itself chokes on (TypeError): no user at all
    bad = Target(host_id="broken", address="127.0.0.1", port=lab.nodes[1].port, user=None)
    results = asyncio.run(run_everywhere([*good, bad], ["true"], FreshConnections(url), 30))
    assert [r.host for r in results] == ["node01", "broken"]
    assert results[0].ok
    assert results[1].error is not None and results[1].error["code"] == "InternalError"
    assert "TypeError" in results[1].error["message"]
