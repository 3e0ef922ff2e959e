"""The Vagrant lab in vagrant/: its Vagrantfile passes `vagrant validate` and defines the
machines its README promises, and `vagrant ssh-config` output for them imports into fleet.

No VM runs here. Vagrant (Debian's package, with Debian's vagrant-libvirt plugin so that a
provider is usable) reads a temporary copy of the lab with VAGRANT_HOME in a temporary
directory and no way out to the network; scripts/setup installs both packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleet.inventory import detect_format
from tests.conftest import Fleet

LAB_DIR = Path(__file__).resolve().parent.parent / "vagrant"
SETUP_HINT = "run scripts/setup, which installs Debian's vagrant and vagrant-libvirt as root"
SAMPLE_DIR = "/home/ana/fleet/vagrant"  # where the sample ssh-configs below say the lab is

#: What `vagrant ssh-config` prints for the default three machines: with VirtualBox each VM
#: is reached through a port forwarded on 127.0.0.1, with libvirt at its address on
#: libvirt's management network. test_samples_are_what_vagrant_prints_for_the_lab keeps
#: these true to the installed Vagrant.
SAMPLES = {
    "virtualbox": [("127.0.0.1", 2222), ("127.0.0.1", 2200), ("127.0.0.1", 2201)],
    "libvirt": [("192.168.121.17", 22), ("192.168.121.42", 22), ("192.168.121.203", 22)],
}


def sample_ssh_config(provider: str, lab_dir: str = SAMPLE_DIR) -> str:
    """Return `vagrant ssh-config` output for node1..node3 of the lab under ``provider``."""
    blocks = []
    for i, (address, port) in enumerate(SAMPLES[provider], 1):
        blocks.append(
            f"Host node{i}\n"
            f"  HostName {address}\n"
            f"  User vagrant\n"
            f"  Port {port}\n"
            f"  UserKnownHostsFile /dev/null\n"
            f"  StrictHostKeyChecking no\n"
            f"  PasswordAuthentication no\n"
            f"  IdentityFile {lab_dir}/.vagrant/machines/node{i}/{provider}/private_key\n"
            f"  IdentitiesOnly yes\n"
            f"  LogLevel FATAL\n"
            f"\n"
        )
    return "".join(blocks)


#: Prints, as JSON, what the lab's Vagrantfile defines for each machine under the libvirt
#: provider (ARGV[0] is the lab directory), read through Vagrant's own configuration loader.
MACHINE_FACTS_RB = """
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: ARGV[0])
facts = env.machine_names.map do |name|
  machine = env.machine(name, :libvirt)
  vm = machine.config.vm
  vb = vm.get_provider_config(:virtualbox)
  {
    name: name.to_s, hostname: vm.hostname, box: vm.box,
    private_ips: vm.networks.select { |type, _| type == :private_network }.map { |_, o| o[:ip] },
    synced_folders: vm.synced_folders.transform_values { |o| o[:disabled] == true },
    libvirt: {memory: machine.provider_config.memory, cpus: machine.provider_config.cpus},
    virtualbox: {customizations: vb.customizations, linked_clone: vb.linked_clone},
    provisioners: vm.provisioners.map { |p| {name: p.name.to_s, inline: p.config.inline} },
  }
end
puts JSON.generate(facts)
"""

#: Renders Vagrant's own ssh-config template for each machine of the lab (ARGV[0]) with the
#: Vagrantfile's ssh settings, the machine's key in its data directory for ARGV[1] (the
#: provider) and the addresses in ARGV[2] (JSON [[host, port], ...]), as `vagrant ssh-config`
#: does for running machines; prints the blocks the way that command does.
SSH_CONFIG_RB = """
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: ARGV[0])
addresses = JSON.parse(ARGV[2])
env.machine_names.each_with_index do |name, i|
  machine = env.machine(name, :libvirt)
  ssh = machine.config.ssh
  key = env.local_data_path.join("machines", name.to_s, ARGV[1], "private_key").to_s
  print Vagrant::Util::TemplateRenderer.render(
    "commands/ssh_config/config",
    host_key: name.to_s, ssh_host: addresses[i][0], ssh_port: addresses[i][1],
    ssh_user: ssh.username || ssh.default.username, keys_only: ssh.keys_only,
    verify_host_key: ssh.verify_host_key, private_key_path: [key], log_level: nil,
    forward_agent: ssh.forward_agent, forward_x11: ssh.forward_x11,
    proxy_command: ssh.proxy_command, config: ssh.config,
  )
  print "\\n"
end
"""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: {SETUP_HINT}")
    return path


@pytest.fixture
def lab_copy(tmp_path: Path) -> Path:
    """A copy of vagrant/ without any .vagrant state, where Vagrant may write its own."""
    copy = tmp_path / "lab"
    shutil.copytree(LAB_DIR, copy, ignore=shutil.ignore_patterns(".vagrant", "*.ssh_config"))
    return copy


@pytest.fixture
def vagrant_env(tmp_path: Path) -> dict[str, str]:
    """Vagrant's environment: its home in a temporary directory, the libvirt provider, no
    update checks, and every HTTP(S) request sent to a closed local port so none leaves."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAGRANT_", "FLEET_VAGRANT_")) and "proxy" not in k.lower()
    }
    home = tmp_path / "vagrant-home"
    home.mkdir()
    closed = "http://127.0.0.1:9"
    env.update(
        VAGRANT_HOME=str(home),
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_BOX_UPDATE_CHECK_DISABLE="1",
        VAGRANT_NO_COLOR="1",
        http_proxy=closed,
        https_proxy=closed,
        HTTP_PROXY=closed,
        HTTPS_PROXY=closed,
    )
    return env


def _run(
    argv: list[str], cwd: Path, env: dict[str, str], nodes: str | None = None
) -> subprocess.CompletedProcess[str]:
    if nodes is not None:
        env = {**env, "FLEET_VAGRANT_NODES": nodes}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _ruby_json(script: str, *args: str, cwd: Path, env: dict[str, str]) -> Any:
    _tool("vagrant")
    proc = _run([_tool("ruby"), "-e", script, *args], cwd, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_vagrantfile_passes_vagrant_validate(lab_copy: Path, vagrant_env: dict[str, str]):
    proc = _run([_tool("vagrant"), "validate"], lab_copy, vagrant_env)
    output = proc.stdout + proc.stderr
    if "provider 'libvirt' could not be found" in output:
        pytest.fail(f"Vagrant has no libvirt provider (vagrant-libvirt): {SETUP_HINT}")
    assert proc.returncode == 0, output
    assert "Vagrantfile validated successfully." in proc.stdout


def test_vagrant_validate_refuses_a_provider_setting_that_does_not_exist(
    lab_copy: Path, vagrant_env: dict[str, str]
):
    """The validation reads the libvirt settings, not only the Ruby: a typo there fails."""
    vagrantfile = lab_copy / "Vagrantfile"
    text = vagrantfile.read_text()
    assert "lv.cpus = CPUS\n" in text
    vagrantfile.write_text(text.replace("lv.cpus = CPUS\n", "lv.cpus = CPUS\n    lv.cpu = 2\n"))
    proc = _run([_tool("vagrant"), "validate"], lab_copy, vagrant_env)
    assert proc.returncode != 0
    assert "The following settings shouldn't exist: cpu" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("nodes", "count"), [(None, 3), ("1", 1), ("5", 5)])
def test_vagrantfile_defines_node1_to_n_on_fixed_private_addresses(
    lab_copy: Path, vagrant_env: dict[str, str], nodes: str | None, count: int
):
    env = vagrant_env if nodes is None else {**vagrant_env, "FLEET_VAGRANT_NODES": nodes}
    facts = _ruby_json(MACHINE_FACTS_RB, str(lab_copy), cwd=lab_copy, env=env)
    assert [m["name"] for m in facts] == [f"node{i}" for i in range(1, count + 1)]
    for i, machine in enumerate(facts, 1):
        assert machine["hostname"] == f"node{i}"
        assert machine["box"] == "debian/bookworm64"
        assert machine["private_ips"] == [f"192.168.56.{10 + i}"]
        assert machine["synced_folders"] == {"/vagrant": True}
        assert machine["libvirt"] == {"memory": 1024, "cpus": 1}
        assert machine["virtualbox"] == {  # VirtualBox's memory and cpus are modifyvm calls
            "customizations": [
                ["pre-boot", ["modifyvm", "id", "--memory", "1024"]],
                ["pre-boot", ["modifyvm", "id", "--cpus", 1]],
            ],
            "linked_clone": True,
        }
        assert [p["name"] for p in machine["provisioners"]] == ["fleet-node"]


def test_provisioner_installs_python3_and_sudo_and_makes_sudo_passwordless(
    lab_copy: Path, vagrant_env: dict[str, str]
):
    facts = _ruby_json(MACHINE_FACTS_RB, str(lab_copy), cwd=lab_copy, env=vagrant_env)
    script = facts[0]["provisioners"][0]["inline"]
    check = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "apt-get install -y -q --no-install-recommends $missing" in script
    assert 'missing="$missing python3"' in script
    assert 'missing="$missing sudo"' in script
    # printf turns the \n into the newline sudoers needs at the end of its last line
    assert "printf 'vagrant ALL=(ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/vagrant" in script
    assert "chmod 0440 /etc/sudoers.d/vagrant" in script


@pytest.mark.parametrize("nodes", ["0", "51", "three", "2 "])
def test_a_bad_node_count_is_refused_by_name(
    lab_copy: Path, vagrant_env: dict[str, str], nodes: str
):
    proc = _run([_tool("vagrant"), "validate"], lab_copy, vagrant_env, nodes=nodes)
    assert proc.returncode != 0
    shown = json.dumps(nodes)  # as Ruby's inspect shows these strings
    message = f"FLEET_VAGRANT_NODES must be a whole number from 1 to 50, not {shown}"
    assert message in proc.stdout + proc.stderr


@pytest.mark.parametrize("provider", sorted(SAMPLES))
def test_samples_are_what_vagrant_prints_for_the_lab(
    lab_copy: Path, vagrant_env: dict[str, str], provider: str
):
    _tool("vagrant")
    addresses = json.dumps(SAMPLES[provider])
    proc = _run(
        [_tool("ruby"), "-e", SSH_CONFIG_RB, str(lab_copy), provider, addresses],
        lab_copy,
        vagrant_env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == sample_ssh_config(provider, str(lab_copy))


@pytest.mark.parametrize("provider", sorted(SAMPLES))
def test_vagrant_ssh_config_of_the_lab_imports_into_fleet(
    fleet: Fleet, tmp_path: Path, provider: str
):
    """The README's `vagrant ssh-config > lab.ssh_config; fleet host import lab.ssh_config`."""
    text = sample_ssh_config(provider)
    path = tmp_path / "lab.ssh_config"
    path.write_text(text)
    assert detect_format(text, path.name) == "vagrant"
    result = fleet.json("host", "import", str(path))
    assert result == {"imported": 3, "created": ["node1", "node2", "node3"], "updated": []}
    hosts = fleet.json("host", "list")
    assert [(h["id"], h["address"], h["port"], h["user"], h["labels"]) for h in hosts] == [
        (f"node{i}", address, port, "vagrant", {"vagrant": "true"})
        for i, (address, port) in enumerate(SAMPLES[provider], 1)
    ]
    shown = fleet.json("host", "show", "node2")
    assert shown["keyFile"] == f"{SAMPLE_DIR}/.vagrant/machines/node2/{provider}/private_key"
    assert shown["source"] == f"{path}:12"  # blocks of 11 lines: node2's Host line is 12
