"""Pool and node requests: create, list, show, update and delete pools; list and show
nodes."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, col, func, select

from fleet import secret_store, specs
from fleet.domain import (
    NODE_DEALLOCATION_OPTIONS,
    AllocationState,
    JobState,
    NodeOperation,
    NodeState,
    PoolState,
)
from fleet.errors import BadInput, Conflict, NotFound
from fleet.secret_store import SecretStore
from fleet.service import applications
from fleet.service.certificates import check_references
from fleet.settings import Settings
from fleet.store import Store
from fleet.tables import Host, Job, Node, Pool


def create_pool(store: Store, data: dict[str, Any], settings: Settings | None = None) -> Pool:
    """Validate an Azure-style pool spec, then store the pool and one node per host; user
    account passwords go to the secret store of ``settings`` (default: the environment's).

    A pool with a ``hostSelector`` claims up to ``targetDedicatedNodes`` free hosts that
    match at once; when fewer match it is created with those and its ``resizeErrors`` say
    why (``InsufficientHosts``).

    Raises BadInput (bad spec), NotFound (unknown host or certificate) or Conflict (pool
    id taken, host already in a pool). Nothing is stored on error.
    """
    spec = specs.parse_pool(data)
    with store.session() as s:
        return add_pool(s, spec, time.time(), settings or Settings.resolve(db_url=store.url))


def add_pool(
    s: Session,
    spec: dict[str, Any],
    now: float,
    settings: Settings,
    auto_owner: str | None = None,
    keep_alive: bool = False,
) -> Pool:
    """Add the pool of a parsed ``spec`` and its nodes to session ``s``; nothing is added
    when it raises. ``auto_owner`` (``job:<id>`` or ``jobschedule:<id>``) makes it an auto
    pool, deleted when its owner ends unless ``keep_alive``."""
    check_references(s, spec["certificateReferences"], f"pool {spec['id']}")
    if s.get(Pool, spec["id"]) is not None:
        raise Conflict(
            "a pool with this id exists already", code="PoolExists", target=f"pool {spec['id']}"
        )
    applications.check_references(s, spec["applicationPackageReferences"], f"pool {spec['id']}")
    for host_id in spec.get("hosts") or []:
        if s.get(Host, host_id) is None:
            raise NotFound(
                f"no host with id {host_id!r} in the inventory",
                code="HostNotFound",
                target=f"pool {spec['id']}",
                field="hosts",
            )
        node = s.get(Node, host_id)
        if node is not None:
            raise Conflict(
                f"host {host_id} is already a node of pool {node.pool_id}",
                code="HostInUse",
                target=f"pool {spec['id']}",
                field="hosts",
            )
    _keep_passwords(s, spec, settings)
    pool = Pool(
        id=spec["id"],
        display_name=spec["displayName"],
        task_slots_per_node=spec["taskSlotsPerNode"],
        node_fill_type=spec["taskSchedulingPolicy"]["nodeFillType"],
        spec=spec,
        created_at=now,
        state_changed_at=now,
        auto_owner=auto_owner,
        auto_keep_alive=keep_alive if auto_owner else None,
        allocation_state_changed_at=now,
    )
    s.add(pool)
    host_ids = list(spec.get("hosts") or [])
    if "hostSelector" in spec:
        target = spec["targetDedicatedNodes"]
        pool.target_dedicated_nodes, pool.resize_option = target, "requeue"
        host_ids = free_matching_hosts(
            s, spec["hostSelector"], target, prefer=preferred_labels(spec)
        )
        if len(host_ids) < target:
            pool.resize_errors = [insufficient_hosts(spec["hostSelector"], target, len(host_ids))]
    for host_id in host_ids:
        s.add(Node(id=host_id, pool_id=pool.id, created_at=now, state_changed_at=now))
    return pool


def free_matching_hosts(
    s: Session,
    selector: dict[str, Any],
    limit: int,
    skip: set[str] | frozenset[str] = frozenset(),
    prefer: dict[str, str] | None = None,
) -> list[str]:
    """Return the ids of up to ``limit`` hosts that are in no pool, match the normalized
    ``selector`` and are not in ``skip``: those whose labels include ``prefer`` (a pool's
    ``vmSize``) first, each group in id order."""
    if limit <= 0:
        return []
    taken = select(Node.id)
    hosts = s.exec(select(Host).where(col(Host.id).not_in(taken)).order_by(Host.id))
    found = [
        h for h in hosts if h.id not in skip and specs.selector_matches(selector, h.labels or {})
    ]
    wanted = (prefer or {}).items()
    found.sort(key=lambda h: not all((h.labels or {}).get(k) == v for k, v in wanted))
    return [h.id for h in found[:limit]]


def preferred_labels(spec: dict[str, Any]) -> dict[str, str]:
    """Return the labels a sized pool's new nodes should have if free hosts have them:
    ``vmSize`` as the pool's ``vmSize`` (Azure's size of VM, here a label of the host)."""
    return {"vmSize": spec["vmSize"]} if isinstance(spec.get("vmSize"), str) else {}


def insufficient_hosts(selector: dict[str, Any], wanted: int, found: int) -> dict[str, Any]:
    """Return Azure's resizeError for a pool that wanted ``wanted`` more nodes and found
    only ``found`` free hosts matching ``selector``."""
    labels = ", ".join(f"{k}={v}" for k, v in selector["labels"].items()) or "(any labels)"
    return {
        "code": "InsufficientHosts",
        "message": f"wanted {wanted} more nodes, found {found} free hosts matching {labels}",
    }


def leaving(node: Node) -> bool:
    """Return whether ``node`` is leaving its pool (asked to, or on its way out)."""
    return node.operation == NodeOperation.REMOVE or node.state == NodeState.LEAVING_POOL


def set_allocation_state(pool: Pool, state: AllocationState, now: float) -> None:
    """Set the pool's allocation state, and when it changed if it did."""
    if pool.allocation_state != state:
        pool.allocation_state = state
        pool.allocation_state_changed_at = now


def set_target(s: Session, pool: Pool, target: int, option: str, now: float) -> None:
    """Record a new target node count for ``pool`` and the deallocation option its shrinking
    uses, in session ``s``; the pool's ``resizeErrors`` are cleared. It goes ``resizing``
    (the controller's PoolSizing then claims hosts or removes nodes) unless it already has
    exactly ``target`` nodes and none is leaving, when it is ``steady``."""
    nodes = list(s.exec(select(Node).where(Node.pool_id == pool.id)))
    settled = len(nodes) == target and not any(leaving(n) for n in nodes)
    pool.target_dedicated_nodes, pool.resize_option = target, option
    pool.resize_errors = None
    set_allocation_state(pool, AllocationState.STEADY if settled else AllocationState.RESIZING, now)
    s.add(pool)


def resize_pool(store: Store, pool_id: str, target: Any, option: str = "requeue") -> Pool:
    """Ask for pool ``pool_id`` to have ``target`` dedicated nodes; shrinking removes nodes
    with deallocation ``option`` (requeue, terminate, taskcompletion or retaineddata).

    Raises BadInput (target not an integer in 0..MAX_TARGET_NODES, unknown option),
    NotFound (PoolNotFound) or Conflict: ``PoolNotResizable`` (a pool with a hosts list),
    ``AutoScaleEnabled``, ``PoolNotSteady`` (a resize is under way: stop it first, as in
    Azure) or ``PoolBeingDeleted``."""
    where = f"pool {pool_id}"
    if isinstance(target, bool) or not isinstance(target, int):
        raise BadInput(
            f"targetDedicatedNodes must be an integer, got {target!r}",
            target=where,
            field="targetDedicatedNodes",
        )
    if not 0 <= target <= specs.MAX_TARGET_NODES:
        raise BadInput(
            f"targetDedicatedNodes must be between 0 and {specs.MAX_TARGET_NODES}, got {target}",
            target=where,
            field="targetDedicatedNodes",
        )
    if option not in NODE_DEALLOCATION_OPTIONS:
        raise BadInput(
            f"nodeDeallocationOption must be one of {', '.join(NODE_DEALLOCATION_OPTIONS)}, "
            f"not {option!r}",
            target=where,
            field="nodeDeallocationOption",
        )
    with store.session() as s:
        pool = _sizable(s, pool_id)
        if pool.allocation_state != AllocationState.STEADY:
            raise Conflict(
                f"the pool is {pool.allocation_state}: stop that resize first",
                code="PoolNotSteady",
                target=where,
                details={"allocationState": pool.allocation_state},
            )
        set_target(s, pool, target, option, time.time())
        return pool


def stop_resize(store: Store, pool_id: str) -> Pool:
    """Stop a resize under way: the controller claims no more hosts and asks no more nodes
    to leave (those leaving already go), then sets the target to the nodes the pool has
    and makes it ``steady``. A steady pool is left as it is.

    Raises NotFound (PoolNotFound) or Conflict (``PoolNotResizable``, ``AutoScaleEnabled``,
    ``PoolBeingDeleted``)."""
    with store.session() as s:
        pool = _sizable(s, pool_id)
        if pool.allocation_state == AllocationState.RESIZING:
            set_allocation_state(pool, AllocationState.STOPPING, time.time())
            s.add(pool)
        return pool


#: What an update may change of a pool (Azure's pool patch and update properties).
UPDATABLE = ("startTask", "certificateReferences", "applicationPackageReferences", "metadata")


def update_pool(store: Store, pool_id: str, changes: dict[str, Any], replace: bool = False) -> Pool:
    """Change a pool's ``startTask``, ``certificateReferences``,
    ``applicationPackageReferences`` or ``metadata`` (Azure's pool patch); with ``replace``
    those not in ``changes`` are removed (Azure's update properties). The merged spec is
    validated like a new pool's; nodes get the new start task, certificates and packages
    when they next join or reboot, as in Azure.

    Raises BadInput (``UnsupportedProperty`` for another property, a bad value), NotFound
    (PoolNotFound, CertificateNotFound, an application package) or Conflict
    (PoolBeingDeleted)."""
    where = f"pool {pool_id}"
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise BadInput(
            f"cannot change {', '.join(unknown)} of a pool; changeable: {', '.join(UPDATABLE)}",
            code="UnsupportedProperty",
            target=where,
            field=unknown[0],
        )
    with store.session() as s:
        pool = get_pool(s, pool_id)
        if pool.state != PoolState.ACTIVE:
            raise Conflict(f"the pool is {pool.state}", code="PoolBeingDeleted", target=where)
        kept = {
            k: v
            for k, v in pool.spec.items()
            if k != "userAccounts" and not (replace and k in UPDATABLE)
        }
        spec = specs.parse_pool(kept | changes)  # its accounts hold secret ids: kept as stored
        check_references(s, spec["certificateReferences"], where)
        applications.check_references(s, spec["applicationPackageReferences"], where)
        pool.spec = spec | {"userAccounts": pool.spec.get("userAccounts") or []}
        flag_modified(pool, "spec")
        s.add(pool)
        return pool


def _sizable(s: Session, pool_id: str) -> Pool:
    """Return the pool if an admin may resize it; Raises NotFound or Conflict."""
    pool = get_pool(s, pool_id)
    where = f"pool {pool_id}"
    if pool.state != PoolState.ACTIVE:
        raise Conflict(f"the pool is {pool.state}", code="PoolBeingDeleted", target=where)
    if pool.spec.get("enableAutoScale"):
        raise Conflict(
            "the pool sizes itself by its autoscale formula: disable autoscale to resize it",
            code="AutoScaleEnabled",
            target=where,
        )
    if pool.target_dedicated_nodes is None:
        raise Conflict(
            "a pool with a hosts list has one node per listed host and cannot be resized: "
            "add or remove nodes with fleet node remove, or create the pool with hostSelector",
            code="PoolNotResizable",
            target=where,
        )
    return pool


def _keep_passwords(session: Session, spec: dict[str, Any], settings: Settings) -> None:
    """Replace each user account's password in ``spec`` by the id of a secret holding it."""
    accounts = [a for a in spec["userAccounts"] if "password" in a]
    if not accounts:
        return
    secrets = SecretStore.of(settings)
    for account in accounts:
        account[specs.PASSWORD_SECRET] = secrets.put(
            session,
            f"pool {spec['id']} user {account['name']} password",
            account.pop("password"),
        )


def get_pool(session: Session, pool_id: str) -> Pool:
    """Return the pool; Raises NotFound (PoolNotFound)."""
    pool = session.get(Pool, pool_id)
    if pool is None:
        raise NotFound(
            f"no pool with id {pool_id!r}", code="PoolNotFound", target=f"pool {pool_id}"
        )
    return pool


def list_pools(store: Store) -> list[tuple[Pool, list[Node]]]:
    """Return every pool with its nodes."""
    with store.read() as s:
        pools = list(s.exec(select(Pool).order_by(Pool.id)))
        nodes = list(s.exec(select(Node).order_by(Node.id)))
    by_pool: dict[str, list[Node]] = {}
    for node in nodes:
        by_pool.setdefault(node.pool_id, []).append(node)
    return [(p, by_pool.get(p.id, [])) for p in pools]


def show_pool(store: Store, pool_id: str) -> tuple[Pool, list[Node]]:
    """Return the pool and its nodes; Raises NotFound."""
    with store.read() as s:
        pool = get_pool(s, pool_id)
        return pool, list(s.exec(select(Node).where(Node.pool_id == pool_id).order_by(Node.id)))


def delete_pool(store: Store, pool_id: str) -> None:
    """Delete a pool and release its hosts to the free inventory.

    Raises NotFound, or Conflict while a job that is not completed uses the pool.
    The controller closes its connections to nodes that are gone.
    """
    with store.session() as s:
        remove_pool(s, pool_id)


def remove_pool(s: Session, pool_id: str) -> None:
    """Delete pool ``pool_id`` in session ``s``, as delete_pool does."""
    get_pool(s, pool_id)
    jobs = list(
        s.exec(select(Job.id).where(Job.pool_id == pool_id, Job.state != JobState.COMPLETED))
    )
    if jobs:
        raise Conflict(
            f"pool is used by jobs that are not completed: {', '.join(jobs)}",
            code="PoolInUse",
            target=f"pool {pool_id}",
        )
    for node in s.exec(select(Node).where(Node.pool_id == pool_id)):
        s.delete(node)
    pool = s.get(Pool, pool_id)
    assert pool is not None
    for account in pool.spec.get("userAccounts") or []:
        secret_store.delete(s, account.get(specs.PASSWORD_SECRET))
    s.delete(pool)


def list_nodes(store: Store, pool_id: str) -> list[Node]:
    """Return the pool's nodes; Raises NotFound for an unknown pool."""
    return show_pool(store, pool_id)[1]


def show_node(store: Store, pool_id: str, node_id: str) -> tuple[Node, Host]:
    """Return one node and its host; Raises NotFound."""
    with store.read() as s:
        get_pool(s, pool_id)
        node = s.get(Node, node_id)
        if node is None or node.pool_id != pool_id:
            raise NotFound(
                f"pool {pool_id} has no node {node_id!r}",
                code="NodeNotFound",
                target=f"node {node_id}",
            )
        host = s.get(Host, node_id)
        assert host is not None
        return node, host


def pool_node_counts(store: Store, pool_id: str | None = None) -> list[tuple[str, dict[str, int]]]:
    """Return (pool id, {node state: count}) for every pool by id, or for ``pool_id``
    only, as fleet.reads.pool_node_counts does; Raises NotFound (PoolNotFound)."""
    with store.read() as s:
        if pool_id is not None:
            get_pool(s, pool_id)
            ids = [pool_id]
        else:
            ids = list(s.exec(select(Pool.id).order_by(Pool.id)))
        query = select(Node.pool_id, Node.state, func.count()).group_by(Node.pool_id, Node.state)
        if pool_id is not None:
            query = query.where(Node.pool_id == pool_id)
        counts: dict[str, dict[str, int]] = {i: {} for i in ids}
        for pool, state, n in s.exec(query):
            if pool in counts:
                counts[pool][state] = n
    return list(counts.items())
