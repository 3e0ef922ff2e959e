"""Task dependencies (``dependsOn``): validation, range expansion, cycle checks and readiness.

Semantics follow Azure Batch:

- ``taskIds`` names parent tasks explicitly.
- ``taskIdRanges`` ``{start, end}`` is inclusive and covers every task of the job
  whose id is made only of ASCII digits and whose integer value lies in the range.
  Leading zeros are ignored: ``"007"`` is 7, so ``{start: 5, end: 10}`` covers
  ``"7"`` and ``"007"`` alike. ``"7a"`` and ``"-7"`` are never covered.
- A task is runnable when every parent has completed with dependency action
  ``satisfy``; it is blocked when any parent completed with ``block``, and
  waiting otherwise.

Cycle paths read in the direction of dependence: ``a -> b`` means a depends on b.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.errors import BadInput

TASK_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INT_ID_RE = re.compile(r"[0-9]+")
#: Most parent ids one task may list in ``taskIds`` (Azure: 64,000 characters).
MAX_TASK_IDS = 10_000
MAX_TASK_IDS_CHARS = 64_000
#: Most ranges one task may list in ``taskIdRanges``.
MAX_TASK_ID_RANGES = 10_000
#: How many ids of a cycle the error message shows (all are in ``details["cycle"]``).
_CYCLE_SHOWN = 12

SATISFY = "satisfy"
BLOCK = "block"


def _fail(target: str, field: str, reason: str, code: str = "InvalidPropertyValue") -> BadInput:
    return BadInput(reason, code=code, target=target, field=field)


def int_id(task_id: str) -> int | None:
    """Return the integer a task id stands for in ranges, or None if it is not all digits."""
    return int(task_id) if _INT_ID_RE.fullmatch(task_id) else None


def _check_keys(obj: Any, target: str, path: str, allowed: tuple[str, ...]) -> None:
    if not isinstance(obj, dict):
        raise _fail(target, path, f"{path} must be a JSON object, got {obj!r}")
    for name in obj:
        if name not in allowed:
            raise _fail(
                target, f"{path}.{name}", f"unknown property {path}.{name}", "UnknownProperty"
            )


def _check_list(value: Any, target: str, path: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(target, path, f"{path} must be a list")
    if len(value) > limit:
        raise _fail(
            target,
            path,
            f"{path} has {len(value)} entries, more than {limit}",
            "TaskDependencyListTooLong",
        )
    return value


def parse_depends_on(value: Any, target: str) -> dict[str, Any] | None:
    """Return ``{"taskIds": [...], "taskIdRanges": [{"start", "end"}...]}`` or None if absent.

    Duplicate ids are dropped (first occurrence kept). Raises :class:`BadInput`
    (code ``UnknownProperty``, ``MissingRequiredProperty``, ``InvalidPropertyValue``
    or ``TaskDependencyListTooLong``) naming the field path.
    """
    if value is None:
        return None
    _check_keys(value, target, "dependsOn", ("taskIds", "taskIdRanges"))
    ids: dict[str, None] = {}
    for i, tid in enumerate(
        _check_list(value.get("taskIds"), target, "dependsOn.taskIds", MAX_TASK_IDS)
    ):
        if not isinstance(tid, str) or not TASK_ID_RE.fullmatch(tid):
            raise _fail(
                target,
                f"dependsOn.taskIds[{i}]",
                f"{tid!r} is not a task id (1-64 letters, digits, hyphens or underscores)",
            )
        ids[tid] = None
    if sum(map(len, ids)) > MAX_TASK_IDS_CHARS:
        raise _fail(
            target,
            "dependsOn.taskIds",
            f"dependsOn.taskIds is longer than {MAX_TASK_IDS_CHARS} characters: use taskIdRanges",
            "TaskDependencyListTooLong",
        )
    field = "dependsOn.taskIdRanges"
    ranges = []
    for i, item in enumerate(
        _check_list(value.get("taskIdRanges"), target, field, MAX_TASK_ID_RANGES)
    ):
        path = f"{field}[{i}]"
        _check_keys(item, target, path, ("start", "end"))
        for name in ("start", "end"):
            n = item.get(name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                code = "MissingRequiredProperty" if n is None else "InvalidPropertyValue"
                reason = f"{path}.{name} must be an integer >= 0, got {n!r}"
                raise _fail(target, f"{path}.{name}", reason, code)
        if item["start"] > item["end"]:
            raise _fail(
                target, f"{path}.end", f"{path}.end {item['end']} is below start {item['start']}"
            )
        ranges.append({"start": item["start"], "end": item["end"]})
    if not ids and not ranges:
        raise _fail(target, "dependsOn", "dependsOn must list at least one taskId or taskIdRange")
    return {"taskIds": list(ids), "taskIdRanges": ranges}


class TaskIdIndex:
    """The ids of a job's tasks, with the all-digit ones sorted by value for range lookups.

    Build one per job snapshot and pass it wherever ``job_task_ids`` is taken, so
    that each call does not re-sort the ids.
    """

    def __init__(self, task_ids: Iterable[str]) -> None:
        self.ids = frozenset(task_ids)
        pairs = sorted((n, tid) for tid in self.ids if (n := int_id(tid)) is not None)
        self._values = [n for n, _ in pairs]
        self.sorted_int_ids = [tid for _, tid in pairs]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Return the slice ``[lo, hi)`` of :attr:`sorted_int_ids` whose values are in range."""
        return bisect.bisect_left(self._values, start), bisect.bisect_right(self._values, end)

    def in_range(self, start: int, end: int) -> list[str]:
        """Return the ids whose integer value lies in ``[start, end]``, by value."""
        lo, hi = self.span(start, end)
        return self.sorted_int_ids[lo:hi]


def _as_index(job_task_ids: Iterable[str] | TaskIdIndex) -> TaskIdIndex:
    return job_task_ids if isinstance(job_task_ids, TaskIdIndex) else TaskIdIndex(job_task_ids)


def _iter_parents(depends_on: Mapping[str, Any] | None, index: TaskIdIndex) -> Iterator[str]:
    if not depends_on:
        return
    yield from depends_on.get("taskIds") or ()
    for r in depends_on.get("taskIdRanges") or ():
        yield from index.in_range(r["start"], r["end"])


def parents(
    depends_on: Mapping[str, Any] | None, job_task_ids: Iterable[str] | TaskIdIndex
) -> set[str]:
    """Return the parent ids: every explicit id, plus every job task id inside a range.

    Explicit ids are returned whether or not they exist; range ids only when they do.
    """
    return set(_iter_parents(depends_on, _as_index(job_task_ids)))


def validate_additions(
    existing: Mapping[str, Mapping[str, Any] | None],
    new: Mapping[str, Mapping[str, Any] | None],
    *,
    uses_task_dependencies: bool,
    job_id: str,
) -> None:
    """Check that adding ``new`` tasks (id -> parsed dependsOn) to a job keeps its graph valid.

    ``existing`` is assumed valid already, so only cycles through a new task are
    looked for; ranges of every task are expanded over existing and new ids together.
    New tasks are checked in the order of ``new``, so the error names the first bad one.
    Returns None. Raises :class:`BadInput` with code ``TaskDependenciesNotSpecifiedOnJob``,
    ``TaskDependencyUnknownParent``, ``TaskDependsOnItself`` or ``TaskDependencyCycle``
    (its ``details["cycle"]`` lists the path, first id repeated at the end).
    """
    index = TaskIdIndex([*existing, *new])
    for tid, dep in new.items():
        if not dep:
            continue
        target = f"task {job_id}/{tid}"
        if not uses_task_dependencies:
            raise _fail(
                target,
                "dependsOn",
                f"task {tid} has dependsOn but job {job_id} does not set usesTaskDependencies",
                "TaskDependenciesNotSpecifiedOnJob",
            )
        for i, parent in enumerate(dep.get("taskIds") or ()):
            if parent == tid:
                raise _fail(
                    target,
                    f"dependsOn.taskIds[{i}]",
                    f"task {tid} depends on itself",
                    "TaskDependsOnItself",
                )
            if parent not in index.ids:
                raise _fail(
                    target,
                    f"dependsOn.taskIds[{i}]",
                    f"task {tid} depends on task {parent}, which is neither in job {job_id} "
                    "nor added with it",
                    "TaskDependencyUnknownParent",
                )
        n = int_id(tid)
        for i, r in enumerate(dep.get("taskIdRanges") or ()):
            if n is not None and r["start"] <= n <= r["end"]:
                raise _fail(
                    target,
                    f"dependsOn.taskIdRanges[{i}]",
                    f"task {tid} depends on itself: it is inside range {r['start']}-{r['end']}",
                    "TaskDependsOnItself",
                )
    cycle = _find_cycle(list(new), {**existing, **new}, index)
    if cycle:
        first_new = next(t for t in cycle if t in new)
        shown = (
            cycle if len(cycle) <= _CYCLE_SHOWN else [*cycle[: _CYCLE_SHOWN - 1], "...", cycle[-1]]
        )
        raise BadInput(
            f"dependencies form a cycle of {len(cycle) - 1} tasks: {' -> '.join(shown)}",
            code="TaskDependencyCycle",
            target=f"task {job_id}/{first_new}",
            field="dependsOn",
            details={"cycle": cycle},
        )


def _find_cycle(
    starts: list[str], graph: Mapping[str, Mapping[str, Any] | None], index: TaskIdIndex
) -> list[str] | None:
    """Return a cycle reachable from ``starts`` as a path ``[a, b, ..., a]``, or None.

    Depth-first search. Ranges skip finished tasks through a union-find over the
    sorted integer ids, so each range costs O(unfinished ids it covers): the
    whole search is near-linear even when every task depends on all earlier ones.
    """
    skip = list(range(len(index.sorted_int_ids) + 1))
    position = {tid: i for i, tid in enumerate(index.sorted_int_ids)}

    def unfinished_from(i: int) -> int:
        root = i
        while skip[root] != root:
            root = skip[root]
        while skip[i] != root:
            skip[i], i = root, skip[i]
        return root

    def edges(tid: str) -> Iterator[str]:
        dep = graph.get(tid)
        if not dep:
            return
        yield from dep.get("taskIds") or ()
        for r in dep.get("taskIdRanges") or ():
            lo, hi = index.span(r["start"], r["end"])
            i = unfinished_from(lo)
            while i < hi:
                yield index.sorted_int_ids[i]
                i = unfinished_from(i + 1)

    done: set[str] = set()
    on_path: dict[str, int] = {}
    for start in starts:
        if start in done:
            continue
        path, stack = [start], [edges(start)]
        on_path[start] = 0
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                if (p := position.get(finished)) is not None:
                    skip[p] = p + 1
            elif nxt in on_path:
                return [*path[on_path[nxt] :], nxt]
            elif nxt not in done and nxt in graph:
                on_path[nxt] = len(path)
                path.append(nxt)
                stack.append(edges(nxt))
    return None


@dataclass(frozen=True)
class ParentState:
    """What a dependent needs to know about one task: has it completed, and with what action.

    ``dependency_action`` is ``"satisfy"`` or ``"block"`` once ``completed`` (the
    controller resolves it from exit conditions); it is ignored while not completed.
    """

    completed: bool
    dependency_action: str | None = None

    def __post_init__(self) -> None:
        if self.completed and self.dependency_action not in (SATISFY, BLOCK):
            raise ValueError(f"completed with dependency_action {self.dependency_action!r}")


def status(
    task_id: str,
    depends_on: Mapping[str, Any] | None,
    states: Mapping[str, ParentState],
    job_task_ids: Iterable[str] | TaskIdIndex,
) -> tuple[str, str | None]:
    """Return ``("runnable", None)``, ``("waiting", parent)`` or ``("blocked", parent)``.

    Blocked wins over waiting; the parent named is the smallest such id. A parent
    missing from ``states`` counts as not completed. ``task_id`` names the
    dependent for the caller's readability; it does not change the answer.
    Raises nothing.
    """
    first_blocked: str | None = None
    first_waiting: str | None = None
    for parent in _iter_parents(depends_on, _as_index(job_task_ids)):
        state = states.get(parent)
        if state is None or not state.completed:
            if first_waiting is None or parent < first_waiting:
                first_waiting = parent
        elif state.dependency_action == BLOCK and (first_blocked is None or parent < first_blocked):
            first_blocked = parent
    if first_blocked is not None:
        return "blocked", first_blocked
    if first_waiting is not None:
        return "waiting", first_waiting
    return "runnable", None


def runnable(
    tasks: Mapping[str, Mapping[str, Any] | None],
    states: Mapping[str, ParentState],
    job_task_ids: Iterable[str] | TaskIdIndex,
) -> set[str]:
    """Return the ids in ``tasks`` (id -> dependsOn) whose parents have all completed with satisfy.

    Does not look at the tasks' own states: pass only the tasks that are waiting
    to start. Each range costs O(log n) against a prefix count, so this is fast
    for whole jobs. Raises nothing.
    """
    index = _as_index(job_task_ids)

    def satisfied(tid: str) -> bool:
        s = states.get(tid)
        return s is not None and s.completed and s.dependency_action == SATISFY

    prefix = [0]
    for tid in index.sorted_int_ids:
        prefix.append(prefix[-1] + satisfied(tid))

    def ready(dep: Mapping[str, Any] | None) -> bool:
        if not dep:
            return True
        spans = (index.span(r["start"], r["end"]) for r in dep.get("taskIdRanges") or ())
        return all(map(satisfied, dep.get("taskIds") or ())) and all(
            prefix[hi] - prefix[lo] == hi - lo for lo, hi in spans
        )

    return {tid for tid, dep in tasks.items() if ready(dep)}
