"""Application requests: upload, list, show and delete packages; default versions; references.

A package's archive is checked member by member (``fleet.archives``) before anything
is stored, then kept in the controller's file store under a reserved prefix
(``.fleet-applications/<app>/<version>/<sha256>.<format>``), which ``fleet file``
neither lists nor lets anyone write; its metadata lives in the ``applications`` and
``application_packages`` tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from fleet import archives, views
from fleet.errors import STORAGE_ERRNOS, BadInput, Conflict, NotFound, storage_error
from fleet.settings import Settings
from fleet.spec_fields import APPLICATION_ID_RE, VERSION_RE
from fleet.store import Store
from fleet.tables import Application, ApplicationPackage

#: Where package archives live, under the file store's root (a name the store reserves).
STORE_PREFIX = ".fleet-applications"


def _check_names(app_id: str, version: str | None) -> None:
    if not APPLICATION_ID_RE.fullmatch(app_id):
        raise BadInput(
            f"application id {app_id!r} must be 1-64 letters, digits, hyphens or underscores",
            code="InvalidApplicationId",
            target=f"application {app_id}",
            field="id",
        )
    if version is not None and not VERSION_RE.fullmatch(version):
        raise BadInput(
            f"version {version!r} must be 1-64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit",
            code="InvalidApplicationVersion",
            target=f"application {app_id}",
            field="version",
        )


def archive_path(settings: Settings, pkg: ApplicationPackage) -> Path:
    """Return the local path of a package's archive in the file store."""
    return settings.files / pkg.store_path


def _copy_hashing(local: Path, dest: Path) -> tuple[str, int]:
    """Copy ``local`` (a regular file, not followed if a link) to ``dest``; return sha256 and size."""
    try:
        fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise BadInput(f"cannot read {local}: {exc.strerror}", code="FileUnreadable") from exc
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadInput(f"{local} is not a regular file", code="FileUnreadable")
        hasher, size = hashlib.sha256(), 0
        with open(dest, "xb") as out:
            while chunk := src.read(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    return hasher.hexdigest(), size


def create_package(
    settings: Settings, store: Store, app_id: str, version: str, local: Path
) -> ApplicationPackage:
    """Check the archive ``local`` (zip or tar.gz), store it as version ``version`` of
    application ``app_id`` (created if new) and return the package.

    The archive is copied first and the copy is checked, so what is checked is what is
    stored. Raises BadInput (bad id or version, ``FileUnreadable``, ``InvalidArchive``,
    ``UnsafeArchiveMember`` naming the member and the rule, ``ArchiveTooLarge``),
    Conflict ``ApplicationPackageExists``, ControllerStorageError. Nothing is stored on
    error."""
    _check_names(app_id, version)
    with store.session() as s:
        if s.get(ApplicationPackage, (app_id, version)) is not None:
            raise Conflict(
                f"version {version} of application {app_id} exists already "
                "(delete it first to replace it)",
                code="ApplicationPackageExists",
                target=f"application {app_id}",
                field="version",
            )
    base = settings.files / STORE_PREFIX / app_id / version
    tmp = settings.files / STORE_PREFIX / f".tmp-{uuid.uuid4().hex}"
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        sha, size = _copy_hashing(local, tmp)
        fmt, _members = archives.check(tmp, name=local.name)
        base.mkdir(parents=True, exist_ok=True)
        final = base / f"{sha}.{fmt}"
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, "an application package") from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
    now = time.time()
    pkg = ApplicationPackage(
        application_id=app_id,
        version=version,
        state="active",
        format=fmt,
        sha256=sha,
        size=size,
        store_path=final.relative_to(settings.files).as_posix(),
        last_activation_time=now,
    )
    try:
        with store.session() as s:
            if s.get(ApplicationPackage, (app_id, version)) is not None:
                raise Conflict(
                    f"version {version} of application {app_id} exists already",
                    code="ApplicationPackageExists",
                    target=f"application {app_id}",
                    field="version",
                )
            if s.get(Application, app_id) is None:
                s.add(Application(id=app_id, created_at=now))
            s.add(pkg)
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return pkg


def get_application(session: Session, app_id: str) -> Application:
    """Return the application; raises NotFound ``ApplicationNotFound``."""
    app = session.get(Application, app_id)
    if app is None:
        raise NotFound(
            f"no application with id {app_id!r}",
            code="ApplicationNotFound",
            target=f"application {app_id}",
        )
    return app


def _packages(session: Session, app_id: str) -> list[ApplicationPackage]:
    query = select(ApplicationPackage).where(ApplicationPackage.application_id == app_id)
    return list(session.exec(query.order_by(col(ApplicationPackage.version))))


def list_applications(store: Store) -> list[tuple[Application, list[ApplicationPackage]]]:
    """Return every application with its packages, sorted by id."""
    with store.read() as s:
        apps = list(s.exec(select(Application).order_by(col(Application.id))))
        return [(a, _packages(s, a.id)) for a in apps]


def show_application(store: Store, app_id: str) -> tuple[Application, list[ApplicationPackage]]:
    """Return one application and its packages; raises NotFound ``ApplicationNotFound``."""
    with store.read() as s:
        app = get_application(s, app_id)
        return app, _packages(s, app_id)


def set_application(
    store: Store,
    app_id: str,
    default_version: str | None = None,
    display_name: str | None = None,
) -> tuple[Application, list[ApplicationPackage]]:
    """Set the default version (which must exist) and/or the display name.

    Raises NotFound ``ApplicationNotFound``, BadInput ``ApplicationPackageNotFound``."""
    with store.session() as s:
        app = get_application(s, app_id)
        if default_version is not None:
            _check_names(app_id, default_version)
            if s.get(ApplicationPackage, (app_id, default_version)) is None:
                raise BadInput(
                    f"application {app_id} has no version {default_version!r}",
                    code="ApplicationPackageNotFound",
                    target=f"application {app_id}",
                    field="defaultVersion",
                )
            app.default_version = default_version
        if display_name is not None:
            app.display_name = display_name
        s.add(app)
        return app, _packages(s, app_id)


def delete_package(settings: Settings, store: Store, app_id: str, version: str) -> None:
    """Delete one version and its archive (the default version is unset if it was this one).
    Nodes keep what they unpacked. Raises NotFound ``ApplicationPackageNotFound``."""
    with store.session() as s:
        app = get_application(s, app_id)
        pkg = s.get(ApplicationPackage, (app_id, version))
        if pkg is None:
            raise NotFound(
                f"application {app_id} has no version {version!r}",
                code="ApplicationPackageNotFound",
                target=f"application {app_id}",
                field="version",
            )
        path = archive_path(settings, pkg)
        s.delete(pkg)
        if app.default_version == version:
            app.default_version = None
            s.add(app)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # prune the version's directory once empty
        path.parent.rmdir()


def resolve(session: Session, ref: dict[str, str]) -> tuple[ApplicationPackage, bool]:
    """Return the package a reference names and whether it is its application's default
    version (a reference without a version takes the default).

    Raises BadInput ``ApplicationPackageNotFound`` naming what is missing."""
    app_id, version = ref["applicationId"], ref.get("version")
    app = session.get(Application, app_id)
    if app is None:
        raise BadInput(f"no application {app_id!r}", code="ApplicationPackageNotFound")
    wanted = version or app.default_version
    if wanted is None:
        raise BadInput(
            f"the reference to application {app_id} names no version and the application "
            "has no default version",
            code="ApplicationPackageNotFound",
        )
    pkg = session.get(ApplicationPackage, (app_id, wanted))
    if pkg is None:
        raise BadInput(
            f"application {app_id} has no version {wanted!r}", code="ApplicationPackageNotFound"
        )
    return pkg, wanted == app.default_version


def check_references(session: Session, refs: list[dict[str, str]] | None, target: str) -> None:
    """Raise BadInput ``ApplicationPackageNotFound`` (naming the reference) unless every
    reference resolves to a stored package."""
    for i, ref in enumerate(refs or []):
        try:
            resolve(session, ref)
        except BadInput as exc:
            exc.target, exc.field = target, f"applicationPackageReferences[{i}]"
            raise


def check_task_references(session: Session, job_id: str, tasks: list[dict[str, Any]]) -> None:
    """Check the references of every task spec in ``tasks``, as :func:`check_references`."""
    for task in tasks:
        refs = task.get("applicationPackageReferences")
        check_references(session, refs, f"task {job_id}/{task['id']}")


def package_json(pkg: ApplicationPackage) -> dict[str, Any]:
    """Return a package as JSON: Azure's fields plus fleet's ``sha256`` and ``size``."""
    return {
        "version": pkg.version,
        "state": pkg.state,
        "lastActivationTime": views.iso(pkg.last_activation_time),
        "format": pkg.format,
        "sha256": pkg.sha256,
        "size": pkg.size,
    }


def application_json(app: Application, packages: list[ApplicationPackage]) -> dict[str, Any]:
    """Return an application as Azure Batch prints it, with its packages."""
    return {
        "id": app.id,
        "displayName": app.display_name or app.id,
        "versions": [p.version for p in packages],
        "defaultVersion": app.default_version,
        "packages": [package_json(p) for p in packages],
    }
