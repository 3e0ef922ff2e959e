"""Inventory parsers: Ansible INI and YAML, OpenSSH ssh_config and `vagrant ssh-config` output."""

from __future__ import annotations

import getpass
import json
import os
import pwd
import re
import shlex
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import yaml

from fleet import host_hooks, hostsets
from fleet.errors import BadInput

FORMATS = ("ansible-ini", "ansible-yaml", "ssh-config", "vagrant")

# Older Ansible spellings, folded into the current name as they are read.
_ALIASES = {
    "ansible_ssh_host": "ansible_host",
    "ansible_ssh_port": "ansible_port",
    "ansible_ssh_user": "ansible_user",
    "ansible_private_key_file": "ansible_ssh_private_key_file",
}
# Host hook commands (fleet/host_hooks.py): var -> hook kind; a command line or a YAML list.
_HOOK_VARS = {f"fleet_{kind}_command": kind for kind in host_hooks.HOOK_KINDS}
_FLEET_VARS = frozenset({"fleet_node_root", "fleet_rdp_port", *_HOOK_VARS})
_NOT_LABELS = ("ansible_", "fleet_")
_TEXT_VARS = ("ansible_host", "ansible_user", "ansible_ssh_private_key_file", "fleet_node_root")
_GROUP_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INI_SECTION_RE = re.compile(r"\[([^\]]*)\]\s*(?:[#;].*)?")
_SSH_LINE_RE = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+|\Z)(.*)")
_SSH_KEYS = {"hostname": "address", "port": "port", "user": "user", "identityfile": "key_file"}
_SSH_REFUSED = {"match", "include", "proxyjump", "proxycommand"}
_VAGRANT_TELLTALES = (
    re.compile(r"(?im)^\s*UserKnownHostsFile[\s=]+/dev/null\s*$"),
    re.compile(r"(?im)^\s*IdentitiesOnly[\s=]+yes\s*$"),
    re.compile(r"(?im)^\s*LogLevel[\s=]+FATAL\s*$"),
)


@dataclass(frozen=True)
class HostSpec:
    """One host read from an inventory; ``source`` is the ``file:line`` that defined it.

    ``labels`` takes no part in hashing (a dict is unhashable) but does in equality.
    """

    id: str
    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    node_root: str | None = None
    rdp_port: int | None = None
    source: str = ""
    # Host hooks, argvs run on the controller (fleet/host_hooks.py); None when not set.
    reboot_command: list[str] | None = field(default=None, hash=False)
    reimage_command: list[str] | None = field(default=None, hash=False)
    power_on_command: list[str] | None = field(default=None, hash=False)
    power_off_command: list[str] | None = field(default=None, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the host as a plain JSON-ready dict (field names as in the dataclass)."""
        return asdict(self)


def login_user() -> str:
    """Return the user to log in as when an inventory names none: the current user, as
    ssh and Ansible default to (the name of this process's uid, else $USER)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()


class _Fail(Exception):
    """A parse error: ``args`` is (line, reason); parse_inventory turns it into BadInput."""


def _fail(line: int, reason: str) -> NoReturn:
    raise _Fail(line, reason)


def detect_format(text: str, filename: str) -> str:
    """Return the inventory format of ``text``: one of ``FORMATS``.

    ``.yml``/``.yaml`` files are Ansible YAML and ``.ini`` files Ansible INI. Otherwise the
    first significant line decides: ``[group]`` means INI; ``Host``/``Match``/``Include``
    (or a file named ``*ssh_config*``, ``*ssh-config*`` or ``config``) means ssh_config,
    reported as ``vagrant`` when the file name contains "vagrant", an IdentityFile lies
    under ``.vagrant/machines/``, or the three lines vagrant always writes are present
    (``UserKnownHostsFile /dev/null``, ``IdentitiesOnly yes``, ``LogLevel FATAL``); a
    ``key:`` line or ``---`` means YAML. Anything else is INI. Raises nothing.
    """
    name = os.path.basename(filename).lower()
    ext = os.path.splitext(name)[1]
    if ext in (".yml", ".yaml"):
        return "ansible-yaml"
    if ext == ".ini":
        return "ansible-ini"
    first = next((s for s in (ln.strip() for ln in text.splitlines()) if s and s[0] != "#"), "")
    ssh_named = "ssh_config" in name or "ssh-config" in name or name == "config"
    if first.startswith("[") or first.startswith(";"):
        return "ansible-ini"
    if ssh_named or re.match(r"(?i)(host|match|include)(\s|=)", first):
        vagrant = (
            "vagrant" in name
            or ".vagrant/machines/" in text
            or all(rx.search(text) for rx in _VAGRANT_TELLTALES)
        )
        return "vagrant" if vagrant else "ssh-config"
    if first == "---" or re.match(r"^[^\s=:#]+:\s*(?:$|#|\{)", first):
        return "ansible-yaml"
    return "ansible-ini"


def parse_inventory(text: str, *, filename: str, fmt: str | None = None) -> list[HostSpec]:
    """Return the hosts defined in ``text``, in order of first definition.

    ``fmt`` is one of ``FORMATS``; when omitted it comes from ``detect_format``. Parsing is
    all or nothing: the first problem raises and no host is returned.

    Raises BadInput(code="InventoryParseError") with message ``"{filename}:{line}: ..."``,
    ``target=filename`` and ``details={"line": line}``, or BadInput(code=
    "InvalidInventoryFormat") for an unknown ``fmt``.
    """
    fmt = fmt or detect_format(text, filename)
    if fmt not in FORMATS:
        raise BadInput(
            f"unknown inventory format {fmt!r}; expected one of {', '.join(FORMATS)}",
            code="InvalidInventoryFormat",
            target=filename,
        )
    try:
        if "\0" in text:  # it would reach node paths and task environments, which refuse it
            _fail(text.count("\n", 0, text.index("\0")) + 1, "NUL byte in the inventory")
        if fmt == "ansible-ini":
            return _parse_ini(text).resolve(filename)
        if fmt == "ansible-yaml":
            return _parse_yaml(text).resolve(filename)
        return _parse_ssh_config(text, filename, vagrant=fmt == "vagrant")
    except _Fail as exc:
        line, reason = exc.args
        raise BadInput(
            f"{filename}:{line}: {reason}",
            code="InventoryParseError",
            target=filename,
            details={"line": line},
        ) from None


# --- shared Ansible model -----------------------------------------------------------------

_Vars = dict[str, tuple[Any, int]]  # variable name -> (value, line it was set on)


@dataclass
class _Host:
    line: int
    vars: _Vars = field(default_factory=dict)
    groups: dict[str, None] = field(default_factory=dict)  # direct groups, ordered set


@dataclass
class _Group:
    vars: _Vars = field(default_factory=dict)
    children: dict[str, int] = field(default_factory=dict)  # child -> line declared


class _Model:
    """Hosts, groups and variables of an Ansible inventory, before precedence is applied."""

    def __init__(self) -> None:
        self.hosts: dict[str, _Host] = {}
        self.groups: dict[str, _Group] = {"all": _Group()}
        self.walked: set[tuple[str, int]] = set()  # (group, id(body)) read from YAML already

    def group(self, name: Any, line: int) -> _Group:
        if not isinstance(name, str) or not _GROUP_RE.fullmatch(name):
            _fail(line, f"invalid group name {name!r}")
        grp = self.groups.get(name)
        if grp is None:
            grp = self.groups[name] = _Group()
        return grp

    def add_child(self, parent: str, child: Any, line: int) -> None:
        self.group(child, line)
        if child == "all":
            _fail(line, "group 'all' cannot be a child of another group")
        self.groups[parent].children.setdefault(child, line)

    @staticmethod
    def set_var(target: _Vars, name: Any, value: Any, line: int) -> None:
        if not isinstance(name, str) or not _VAR_RE.fullmatch(name):
            _fail(line, f"invalid variable name {name!r}")
        if name.startswith("fleet_") and name not in _FLEET_VARS:
            _fail(
                line, f"unknown fleet variable {name!r} (known: {', '.join(sorted(_FLEET_VARS))})"
            )
        name = _ALIASES.get(name, name)
        if name == "ansible_port":
            _port(value, line)
        elif name in _TEXT_VARS:
            _text({name: (value, line)}, name)
        elif name in _HOOK_VARS:
            _hook_argv(value, line, name)
        target[name] = (value, line)

    def add_hosts(self, pattern: Any, group: str, line: int, host_vars: _Vars) -> None:
        if not isinstance(pattern, str) or not pattern:
            _fail(line, f"invalid host name {pattern!r}: write it as a non-empty string")
        depth, colon = 0, -1
        for i, ch in enumerate(pattern):
            depth += (ch == "[") - (ch == "]")
            if ch == ":" and depth == 0:
                colon = i
        if colon >= 0:  # host:port, overridden by an explicit ansible_port as in Ansible
            port_text, pattern = pattern[colon + 1 :], pattern[:colon]
            host_vars = {"ansible_port": (_port(port_text, line), line), **host_vars}
        try:
            names = hostsets.expand(pattern)
            for name in names:
                hostsets.validate_host_id(name)
        except BadInput as exc:
            _fail(line, exc.message)
        for name in names:
            host = self.hosts.get(name)
            if host is None:
                host = self.hosts[name] = _Host(line)
            host.groups[group] = None
            host.vars.update(host_vars)

    def resolve(self, filename: str) -> list[HostSpec]:
        """Apply Ansible precedence (all < parents < children < host) and build HostSpecs."""
        order, ancestors, depth = self._sort_groups()
        rank = {g: (depth[g], g) for g in order}
        cache: dict[frozenset[str], tuple[list[str], _Vars]] = {}
        specs = []
        for name, host in self.hosts.items():
            key = frozenset(host.groups)
            if key not in cache:
                member = set().union(*(ancestors[g] for g in key))
                groups = sorted(member, key=rank.__getitem__)
                merged: _Vars = {}
                for g in groups:
                    merged.update(self.groups[g].vars)
                cache[key] = (groups, merged)
            groups, merged = cache[key]
            merged = {**merged, **host.vars}
            labels = {g: "true" for g in groups if g not in ("all", "ungrouped")}
            for var, (value, _) in merged.items():
                if not var.startswith(_NOT_LABELS):
                    labels[var] = _label_text(value)
            specs.append(
                HostSpec(
                    id=name,
                    address=_text(merged, "ansible_host") or name,
                    port=_port(*merged["ansible_port"]) if "ansible_port" in merged else 22,
                    user=_text(merged, "ansible_user"),
                    key_file=_text(merged, "ansible_ssh_private_key_file"),
                    labels=dict(sorted(labels.items())),
                    node_root=_text(merged, "fleet_node_root"),
                    rdp_port=_port(*merged["fleet_rdp_port"])
                    if "fleet_rdp_port" in merged
                    else None,
                    source=f"{filename}:{host.line}",
                    **{
                        f"{kind}_command": _hook_argv(*merged[var], var)
                        for var, kind in _HOOK_VARS.items()
                        if var in merged
                    },
                )
            )
        return specs

    def _sort_groups(self) -> tuple[list[str], dict[str, set[str]], dict[str, int]]:
        """Return groups parents-first, each group's ancestors (itself included) and depth."""
        kids = {g: list(grp.children) for g, grp in self.groups.items()}
        parents: dict[str, list[str]] = {g: [] for g in self.groups}
        for g, children in kids.items():
            for child in children:
                parents[child].append(g)
        for g, ps in parents.items():
            if not ps and g != "all":
                ps.append("all")
                kids["all"].append(g)
        waiting = {g: len(ps) for g, ps in parents.items()}
        queue, order = deque(["all"]), []
        ancestors: dict[str, set[str]] = {}
        depth: dict[str, int] = {}
        while queue:
            g = queue.popleft()
            order.append(g)
            ancestors[g] = {g}.union(*(ancestors[p] for p in parents[g]))
            depth[g] = max((depth[p] + 1 for p in parents[g]), default=0)
            for child in kids[g]:
                waiting[child] -= 1
                if not waiting[child]:
                    queue.append(child)
        if len(order) < len(self.groups):
            stuck = [g for g in self.groups if g not in ancestors]
            line = min(self.groups[g].children.get(c, 1 << 30) for g in stuck for c in stuck)
            _fail(line, f"groups {', '.join(sorted(stuck))} are children of each other (a cycle)")
        return order, ancestors, depth


def _port(value: Any, line: int) -> int:
    ok = isinstance(value, (str, int)) and not isinstance(value, bool)
    text = str(value).strip() if ok else ""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        _fail(line, f"invalid port {value!r}: must be an integer from 1 to 65535")
    return int(text)


def _text(merged: _Vars, name: str) -> str | None:
    if name not in merged:
        return None
    value, line = merged[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        _fail(line, f"{name} must be a non-empty string, not {value!r}")
    return str(value)


def _hook_argv(value: Any, line: int, name: str) -> list[str]:
    try:
        return host_hooks.parse_argv(value)
    except ValueError as exc:
        _fail(line, f"invalid {name}: {exc}")


def _label_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (str, int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# --- Ansible INI --------------------------------------------------------------------------


def _ini_tokens(line: str, lineno: int) -> list[str]:
    """Split a line as Ansible does (shell words, ``#`` starts a comment)."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError as exc:
        _fail(lineno, f"cannot split line: {exc}")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _parse_ini(text: str) -> _Model:
    model = _Model()
    section, kind = "ungrouped", "hosts"
    model.group(section, 1)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            m = _INI_SECTION_RE.fullmatch(line)
            if not m:
                _fail(lineno, f"malformed section header {line!r}")
            section, _, kind = m.group(1).strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                _fail(lineno, f"unknown section type {kind!r} (use :vars or :children)")
            model.group(section, lineno)
        elif kind == "vars":
            name, eq, value = line.partition("=")
            if not eq:
                _fail(lineno, f"expected name=value in [{section}:vars], got {line!r}")
            model.set_var(model.groups[section].vars, name.strip(), _unquote(value.strip()), lineno)
        elif kind == "children":
            tokens = _ini_tokens(line, lineno)
            if len(tokens) != 1:
                _fail(lineno, f"expected one group name in [{section}:children], got {line!r}")
            model.add_child(section, tokens[0], lineno)
        else:
            tokens = _ini_tokens(line, lineno)
            if not tokens:
                continue
            pattern, *pairs = tokens
            host_vars: _Vars = {}
            for pair in pairs:
                name, eq, value = pair.partition("=")
                if not eq:
                    _fail(lineno, f"expected name=value after the host name, got {pair!r}")
                model.set_var(host_vars, name, value, lineno)
            model.add_hosts(pattern, section, lineno, host_vars)
    return model


# --- Ansible YAML -------------------------------------------------------------------------


class _LineDict(dict[Any, Any]):
    """A YAML mapping that remembers the line of each key."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings record key lines and refuse duplicate keys."""

    def construct_line_mapping(self, node: yaml.MappingNode) -> _LineDict:
        merge_tag = "tag:yaml.org,2002:merge"
        explicit = {id(k) for k, _ in node.value if k.tag != merge_tag}
        self.flatten_mapping(node)
        data = _LineDict()
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.construct_object(key_node)
            try:
                hash(key)
            except TypeError:
                _fail(line, "a mapping key must be a plain value")
            if id(key_node) in explicit:
                if key in seen:
                    _fail(line, f"duplicate key {key!r}")
                seen.add(key)
            data[key] = self.construct_object(value_node)
            data.lines[key] = line
        return data


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_line_mapping
)


def _mapping(value: Any, line: int, what: str) -> _LineDict:
    if value is None:
        return _LineDict()
    if not isinstance(value, _LineDict):
        _fail(line, f"{what} must be a mapping, not {type(value).__name__}")
    return value


def _parse_yaml(text: str) -> _Model:
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        _fail(mark.line + 1 if mark else 1, f"invalid YAML: {problem}")
    finally:
        loader.dispose()
    model = _Model()
    top = _mapping(data, 1, "the top level")
    for name, body in top.items():
        line = top.lines[name]
        if name != "all":
            model.add_child("all", name, line)
        _yaml_group(model, name, body, line)
    return model


def _yaml_group(model: _Model, name: Any, body: Any, line: int) -> None:
    grp = model.group(name, line)
    body = _mapping(body, line, f"group {name!r}")
    if (name, id(body)) in model.walked:  # a YAML alias seen before: nothing new to learn
        return
    model.walked.add((name, id(body)))
    for key, value in body.items():
        kline = body.lines[key]
        if key == "hosts":
            hosts = _mapping(value, kline, f"hosts of group {name!r}")
            for host, host_body in hosts.items():
                hline = hosts.lines[host]
                raw = _mapping(host_body, hline, f"variables of host {host!r}")
                host_vars: _Vars = {}
                for var, var_value in raw.items():
                    model.set_var(host_vars, var, var_value, raw.lines[var])
                model.add_hosts(host, name, hline, host_vars)
        elif key == "vars":
            group_vars = _mapping(value, kline, f"vars of group {name!r}")
            for var, var_value in group_vars.items():
                model.set_var(grp.vars, var, var_value, group_vars.lines[var])
        elif key == "children":
            children = _mapping(value, kline, f"children of group {name!r}")
            for child, child_body in children.items():
                cline = children.lines[child]
                model.add_child(name, child, cline)
                _yaml_group(model, child, child_body, cline)
        else:
            _fail(kline, f"unexpected key {key!r} in group {name!r} (use hosts, vars, children)")


# --- OpenSSH ssh_config and vagrant ssh-config ----------------------------------------------


def _ssh_args(rest: str, lineno: int) -> list[str]:
    """Split arguments as OpenSSH does: quotes, backslash escapes, ``#`` opens a comment."""
    args: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        if rest[i].isspace():
            i += 1
            continue
        if rest[i] == "#":
            break
        buf: list[str] = []
        quote = ""
        while i < n and (quote or not rest[i].isspace()):
            ch = rest[i]
            if ch == "\\" and i + 1 < n and (rest[i + 1] in "\"'\\" or rest[i + 1] == " " != quote):
                buf.append(rest[i + 1])
                i += 2
                continue
            if quote and ch == quote:
                quote = ""
            elif not quote and ch in "\"'":
                quote = ch
            else:
                buf.append(ch)
            i += 1
        if quote:
            _fail(lineno, "unterminated quote")
        args.append("".join(buf))
    return args


def _ssh_pattern(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(body + r"\Z")


def _ssh_applies(patterns: list[tuple[bool, re.Pattern[str]]], host: str) -> bool:
    host = host.lower()
    hit = False
    for negated, rx in patterns:
        if rx.fullmatch(host):
            if negated:
                return False
            hit = True
    return hit


def _hostname(value: str, host: str) -> str:
    return re.sub(r"%[h%]", lambda t: host if t.group() == "%h" else "%", value)


def _parse_ssh_config(text: str, filename: str, *, vagrant: bool) -> list[HostSpec]:
    # Each block: its compiled Host patterns and settings; block 0 precedes any Host line.
    blocks: list[tuple[list[tuple[bool, re.Pattern[str]]], dict[str, tuple[str, int]]]]
    blocks = [([(False, _ssh_pattern("*"))], {})]
    concrete: dict[str, int] = {}  # host name -> line of its first Host line
    literal_blocks: dict[str, list[int]] = {}  # host name -> blocks naming it exactly
    wildcard_blocks: list[int] = [0]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        m = _SSH_LINE_RE.fullmatch(line)
        if not m:
            _fail(lineno, f"expected 'Keyword value', got {line!r}")
        keyword, args = m.group(1).lower(), _ssh_args(m.group(2), lineno)
        if keyword == "host":
            if not args:
                _fail(lineno, "Host needs at least one name or pattern")
            index = len(blocks)
            blocks.append(([(p[0] == "!", _ssh_pattern(p.lstrip("!"))) for p in args], {}))
            names = [p for p in args if not (p[0] == "!" or "*" in p or "?" in p)]
            if len(names) < len(args):
                wildcard_blocks.append(index)
            for name in names:
                try:
                    hostsets.validate_host_id(name)
                except BadInput as exc:
                    _fail(lineno, exc.message)
                concrete.setdefault(name, lineno)
                if len(names) == len(args):
                    literal_blocks.setdefault(name, []).append(index)
        elif keyword in _SSH_REFUSED:
            if keyword.startswith("proxy") and [a.lower() for a in args] == ["none"]:
                continue
            _fail(lineno, f"{m.group(1)} is not supported yet; remove it or resolve it by hand")
        elif keyword in _SSH_KEYS:
            if len(args) != 1:
                _fail(lineno, f"{m.group(1)} takes exactly one value")
            value = args[0]
            if keyword == "port":
                _port(value, lineno)
            if keyword == "hostname" and "%" in re.sub(r"%[h%]", "", value):
                _fail(lineno, "HostName accepts only the %h and %% tokens")
            blocks[-1][1].setdefault(_SSH_KEYS[keyword], (value, lineno))
    specs = []
    for name, first_line in concrete.items():
        indexes = set(literal_blocks.get(name, ()))
        indexes.update(i for i in wildcard_blocks if _ssh_applies(blocks[i][0], name))
        settings: dict[str, str] = {}
        for i in sorted(indexes):  # the first value obtained wins, as in OpenSSH
            for key, (value, _) in blocks[i][1].items():
                settings.setdefault(key, value)
        address = _hostname(settings.get("address", name), name)
        specs.append(
            HostSpec(
                id=name,
                address=address,
                port=int(settings.get("port", 22)),
                user=settings.get("user"),
                key_file=settings.get("key_file"),
                labels={"vagrant": "true"} if vagrant else {},
                source=f"{filename}:{first_line}",
            )
        )
    return specs
