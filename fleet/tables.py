"""Database rows (SQLModel tables): hosts and pools to secrets, API accounts, node users and applications.

Times are UTC epoch seconds (floats); the views render them as ISO 8601. Specs
that users wrote are kept whole in a JSON ``spec`` column next to the columns the
controller queries on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def _json(default: Any = None) -> Any:
    return Field(default=default, sa_column=Column(JSON, nullable=default is None))


def _big() -> Any:
    """A nullable 64-bit integer column (byte and block counts outgrow 32 bits)."""
    return Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Host(SQLModel, table=True):
    """One inventory entry: a machine fleet can reach over SSH."""

    __tablename__ = "hosts"

    id: str = Field(primary_key=True)
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    node_root: str | None = None
    rdp_port: int | None = None  # where its RDP server listens, if not 3389
    host_key_policy: str = "accept-new"
    source: str = ""
    created_at: float = 0.0
    # Hook argvs run on the controller (fleet/host_hooks.py); NULL when the host has none.
    reboot_command: list[str] | None = _json()
    reimage_command: list[str] | None = _json()
    power_on_command: list[str] | None = _json()
    power_off_command: list[str] | None = _json()


class HostKey(SQLModel, table=True):
    """The SSH host key fleet recorded for a host (fleet's own known_hosts)."""

    __tablename__ = "host_keys"

    host_id: str = Field(primary_key=True)
    public_key: str  # OpenSSH one-line form: "ssh-ed25519 AAAA..."
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it
    recorded_at: float = 0.0


class Pool(SQLModel, table=True):
    """A named set of nodes that jobs run on."""

    __tablename__ = "pools"

    id: str = Field(primary_key=True)
    display_name: str | None = None
    state: str = "active"
    allocation_state: str = "steady"
    task_slots_per_node: int = 1
    node_fill_type: str = "spread"
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: float = 0.0
    state_changed_at: float = 0.0
    #: ``job:<id>`` or ``jobschedule:<id>`` for an auto pool (fleet/service/auto_pools.py)
    auto_owner: str | None = None
    auto_keep_alive: bool | None = None
    #: Sizing (fleet/pool_sizing.py), all NULL for a pool with a hosts list: the nodes a
    #: hostSelector pool should have, the deallocation option its shrinking uses, Azure's
    #: resizeErrors of its last resize, and when allocation_state last changed.
    target_dedicated_nodes: int | None = None
    resize_option: str | None = None
    resize_errors: list[dict[str, Any]] | None = _json()
    allocation_state_changed_at: float | None = None
    #: the last autoscale evaluation (Azure's autoScaleRun) and when it ran
    auto_scale_run: dict[str, Any] | None = _json()
    auto_scale_at: float | None = None


class Node(SQLModel, table=True):
    """A host while it is in a pool. Its id is the host id, so a host is in one pool at most."""

    __tablename__ = "nodes"

    id: str = Field(primary_key=True)
    pool_id: str = Field(index=True)
    state: str = "creating"
    scheduling_state: str = "enabled"
    boot_id: str | None = None
    root: str | None = None  # absolute node root, as the agent reported it
    errors: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    start_task_info: dict[str, Any] | None = _json()
    start_task_attempt: int = 0
    created_at: float = 0.0
    state_changed_at: float = 0.0
    last_boot_time: float | None = None  # when fleet first saw its current boot
    #: an admin's request (fleet/domain.py NodeOperation), its deallocation option, when it
    #: was asked, and when the host was told (reboot and reimage then wait for it)
    operation: str | None = Field(default=None, index=True)
    operation_option: str | None = None
    operation_at: float | None = None
    operation_issued_at: float | None = None


class Job(SQLModel, table=True):
    """A collection of tasks bound to one pool."""

    __tablename__ = "jobs"

    id: str = Field(primary_key=True)
    pool_id: str = Field(index=True)
    priority: int = 0
    state: str = Field(default="active", index=True)  # the controller reads open jobs each turn
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    termination_reason: str | None = None
    disable_tasks: str | None = None  # requeue | terminate | wait, while disabling
    created_at: float = 0.0
    state_changed_at: float = 0.0
    end_time: float | None = None
    job_schedule_id: str | None = Field(default=None, index=True)  # the schedule that made it


class Task(SQLModel, table=True):
    """One command line to run on a node, with its execution record.

    ``attempt`` counts dispatches (it is ``FLEET_TASK_ATTEMPT``); ``attempt_state`` is
    the write-ahead marker: ``dispatching`` before the spawn is sent, ``running``
    once the agent confirmed it.
    """

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("job_id", "id", name="uq_tasks_job_id"),
        Index("ix_tasks_state_job", "state", "job_id"),
        Index("ix_tasks_node", "node_id"),
        Index("ix_tasks_end_request", "end_request"),
        Index("ix_tasks_deps_state", "job_id", "deps_state"),
        Index("ix_tasks_queue", "job_id", "state", "pk"),  # fleet/queue.py reads it in order
    )

    pk: int | None = Field(default=None, primary_key=True)
    job_id: str
    id: str
    command_line: str
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    required_slots: int = 1
    state: str = "active"
    attempt: int = 0
    attempt_state: str | None = None
    node_id: str | None = None
    pool_id: str | None = None
    retry_count: int = 0
    requeue_count: int = 0
    exit_code: int | None = None
    result: str | None = None
    failure_info: dict[str, Any] | None = _json()
    start_time: float | None = None
    end_time: float | None = None
    last_retry_time: float | None = None
    last_requeue_time: float | None = None
    task_root: str | None = None
    end_request: str | None = None  # terminate | delete, asked of a task that is running
    dependency_action: str | None = None  # satisfy | block, once completed
    deps_state: str | None = None  # waiting | blocked while dependsOn holds it back
    deps_parent: str | None = None  # the parent it waits for or is blocked by
    files_deleted: bool = False  # its directory on the node was swept after retentionTime
    token_hash: str | None = Field(default=None, index=True)  # a job manager's call token
    job_manager: bool = False  # the job's jobManagerTask: it starts before the job's other tasks
    instances: int = 1  # multiInstanceSettings.numberOfInstances
    created_at: float = 0.0
    state_changed_at: float = 0.0
    # Resources its attempts used, summed over its life (fleet/task_stats.py); all NULL
    # until an attempt reports some, and stats_time is when they last changed.
    user_cpu_seconds: float | None = None
    kernel_cpu_seconds: float | None = None
    wall_clock_seconds: float | None = None
    read_blocks: int | None = _big()  # 512-byte units read from storage
    write_blocks: int | None = _big()
    max_rss_bytes: int | None = _big()  # the largest peak of any attempt
    stats_time: float | None = None


class JobNode(SQLModel, table=True):
    """A job's preparation and release tasks on one node (Azure's prep/release status)."""

    __tablename__ = "job_nodes"

    job_id: str = Field(primary_key=True)
    node_id: str = Field(primary_key=True)
    prep_state: str | None = None  # running | succeeded | failed
    prep_attempt: int = 0
    prep_boot_id: str | None = None  # the boot it succeeded in
    prep_info: dict[str, Any] | None = _json()
    release_state: str | None = None  # running | completed
    release_info: dict[str, Any] | None = _json()


class Subtask(SQLModel, table=True):
    """One instance of a multi-instance task: its node and how its coordination command went."""

    __tablename__ = "subtasks"

    job_id: str = Field(primary_key=True)
    task_id: str = Field(primary_key=True)
    instance: int = Field(primary_key=True)  # 0 is the primary
    attempt: int = 0
    node_id: str = ""
    state: str = "running"
    exit_code: int | None = None
    failure_info: dict[str, Any] | None = _json()
    start_time: float | None = None
    end_time: float | None = None


class TaskOutput(SQLModel, table=True):
    """A small file of a task's last finished attempt (stdout.txt, stderr.txt, exit.json
    up to the agent's inline limit), written with the task's completion in the same
    transaction; larger ones are files under ``task_files/`` (fleet/task_files.py reads
    both). Deleted with its task."""

    __tablename__ = "task_outputs"

    task_pk: int = Field(
        sa_column=Column(ForeignKey("tasks.pk", ondelete="CASCADE"), primary_key=True)
    )
    name: str = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    modified: float = 0.0


class StaleAttempt(SQLModel, table=True):
    """An attempt requeued off a lost node, to kill there if the node comes back with it
    still running (so a task never has two live attempts, even across a controller restart)."""

    __tablename__ = "stale_attempts"

    node_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    attempt: int = Field(primary_key=True)
    task_dir: str


class ControllerLease(SQLModel, table=True):
    """The one row naming the controller that runs on this database, renewed while it lives
    (see fleet/controller_lock.py)."""

    __tablename__ = "controller_lease"

    id: int = Field(default=1, primary_key=True)  # always 1: one controller per database
    holder: str  # a fresh id per controller process
    hostname: str
    pid: int
    machine: str = ""  # boot id and pid namespace: pids compare only within the same one
    ttl: float  # seconds without renewal after which the lease may be taken
    since: float
    renewed_at: float


class Secret(SQLModel, table=True):
    """One secret (a private key, a password), Fernet-encrypted; only fleet/secret_store.py
    reads or writes these rows, and other rows name them by id."""

    __tablename__ = "secrets"

    id: str = Field(primary_key=True)
    purpose: str  # what it is, e.g. "certificate <thumbprint> key"; never the secret
    ciphertext: str  # a Fernet token (URL-safe base64)
    created_at: float = 0.0


class Account(SQLModel, table=True):
    """An account of the REST API: its name and its SharedKey key, which is a secret
    (fleet/service/accounts.py)."""

    __tablename__ = "accounts"

    name: str = Field(primary_key=True)
    secret_id: str  # the base64 key
    created_at: float = 0.0
    key_rotated_at: float | None = None  # None until the key is first rotated


class Certificate(SQLModel, table=True):
    """A certificate added with ``fleet certificate create``; its private key and the
    password of the PFX that nodes get are secrets."""

    __tablename__ = "certificates"

    thumbprint: str = Field(primary_key=True)  # lowercase hex SHA-1 of the DER
    sha256_thumbprint: str
    subject: str
    not_after: float
    public_data: str  # base64 DER
    key_secret_id: str | None = None  # PKCS#8 PEM private key
    pfx_password_secret_id: str | None = None  # the password of the node's .pfx
    state: str = "active"
    delete_error: dict[str, Any] | None = _json()
    created_at: float = 0.0
    state_changed_at: float = 0.0


class NodeUser(SQLModel, table=True):
    """An OS account fleet created on a node for remote login (never its password: only
    whether it has one), removed once ``expiry_time`` has passed."""

    __tablename__ = "node_users"

    node_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    pool_id: str = Field(index=True)
    is_admin: bool = False
    expiry_time: float = Field(index=True)
    has_password: bool = False
    ssh_public_key: str | None = None
    created_at: float = 0.0


class Application(SQLModel, table=True):
    """An application whose versions are packages (zip or tar.gz) unpacked on nodes."""

    __tablename__ = "applications"

    id: str = Field(primary_key=True)
    display_name: str | None = None
    default_version: str | None = None
    created_at: float = 0.0


class ApplicationPackage(SQLModel, table=True):
    """One version of an application: its archive in the controller's file store."""

    __tablename__ = "application_packages"

    application_id: str = Field(primary_key=True)
    version: str = Field(primary_key=True)
    state: str = "active"
    format: str = "zip"  # zip | tar.gz
    sha256: str = ""
    size: int = 0
    store_path: str = ""  # relative to the file store root, under its reserved prefix
    last_activation_time: float = 0.0


class JobSchedule(SQLModel, table=True):
    """A job schedule: its spec, and the occurrence it waits on (see fleet/schedule_runner.py).

    ``next_run`` is the scheduled time of the next occurrence not yet handled; it moves on
    in the same transaction that creates that occurrence's job or records it skipped, so
    a restarted controller neither fires an occurrence twice nor loses one."""

    __tablename__ = "job_schedules"

    id: str = Field(primary_key=True)
    state: str = "active"
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    next_run: float | None = None
    job_count: int = 0  # jobs created so far; the next one is <id>:job-<job_count + 1>
    recent_job_id: str | None = None
    skipped_runs: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    created_at: float = 0.0
    state_changed_at: float = 0.0
    end_time: float | None = None


ALL_TABLES = (
    Host,
    HostKey,
    Pool,
    Node,
    Job,
    Task,
    TaskOutput,
    JobNode,
    Subtask,
    StaleAttempt,
    ControllerLease,
    Secret,
    Account,
    Certificate,
    NodeUser,
    Application,
    ApplicationPackage,
    JobSchedule,
)
