"""A `django-health-check <https://github.com/codingjoe/django-health-check>`_
check of the snapshot storage: the round trip of ``manage.py check --deploy``
(write, read back, verify, list and delete a probe object under
``.snapshots-probe/``) through :func:`~django_snapshots.get_storage`, within
a time limit.

.. code-block:: python

    # urls.py
    from django.urls import path
    from health_check.views import HealthCheckView

    urlpatterns = [
        path(
            "ht/",
            HealthCheckView.as_view(
                checks=[
                    "health_check.checks.Database",
                    "django_snapshots.contrib.health_check.SnapshotStorageCheck",
                ]
            ),
        ),
    ]

A failure names the step that failed, the exception's class and the stack
(its ``repr``, which never shows a credential), never the exception's
message: the health page is often reachable by more people than the logs.
``manage.py snapshots check`` tells the whole story.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import threading
from time import monotonic

from django_snapshots._inspect import probe_storage, short_repr
from django_snapshots.conf import InvalidStorageSettingError, get_storage
from django_snapshots.storage.protocols import SnapshotStorage

try:
    from health_check.base import HealthCheck  # type: ignore[import-untyped]
    from health_check.exceptions import ServiceUnavailable  # type: ignore[import-untyped]
except ImportError as exc:  # the health_check extra is not installed
    raise ImportError(
        "django_snapshots.contrib.health_check needs django-health-check; install the "
        '"health_check" extra: pip install "django-snapshots[health_check]"'
    ) from exc

__all__ = ["SnapshotStorageCheck"]


@dataclasses.dataclass
class SnapshotStorageCheck(HealthCheck):  # type: ignore[misc]  # untyped base
    """Check that the configured snapshot storage works end to end: write a
    small probe object, read it back, verify it, list and delete it.

    The round trip runs in a thread of its own, and the check fails when it
    takes longer than *timeout*.  A round trip that hangs is left to finish
    (its probe object is then removed), and while it hangs every later
    check fails at once rather than starting another.

    .. versionadded:: 0.1
    """

    timeout: datetime.timedelta = dataclasses.field(
        default=datetime.timedelta(seconds=10), repr=False
    )

    def run(self) -> None:
        try:
            storage = get_storage()
        except InvalidStorageSettingError as exc:
            raise ServiceUnavailable(
                f"the SNAPSHOTS setting is invalid ({exc.id}); run `manage.py check` for details"
            ) from None
        probe = _start(storage)
        limit = self.timeout.total_seconds()
        probe.thread.join(max(0.0, limit - (monotonic() - probe.started)))
        if probe.thread.is_alive():
            where = f"after {probe.finished[-1]}" if probe.finished else "at its first step"
            raise ServiceUnavailable(
                f"the storage {short_repr(storage)} has not finished a round trip within "
                f"{limit:g} s (it is {where}, started {monotonic() - probe.started:.0f} s ago)"
            )
        if probe.failed is not None:
            step, error_type = probe.failed
            raise ServiceUnavailable(
                f"the storage {short_repr(storage)} failed a round trip at {step} "
                f"({error_type}); run `manage.py snapshots check` for details"
            )


@dataclasses.dataclass
class _Probe:
    """One round trip on its own thread, and what it found so far."""

    storage: SnapshotStorage
    started: float = dataclasses.field(default_factory=monotonic)
    finished: list[str] = dataclasses.field(default_factory=list)
    failed: tuple[str, str] | None = None
    thread: threading.Thread = dataclasses.field(init=False)

    def run(self) -> None:
        try:
            with contextlib.closing(probe_storage(self.storage)) as steps:
                for step in steps:
                    if step.error is not None:
                        # The class alone is shown, never the message.
                        self.failed = (step.name, step.error_type or "an error")
                        return
                    self.finished.append(step.name)
        except BaseException as exc:  # the probe itself broke: still an answer
            self.failed = ("the round trip", type(exc).__name__)
        finally:
            with _lock:
                if _running.get(id(self.storage)) is self:
                    del _running[id(self.storage)]


# The round trip still running for each storage (by id): a storage that
# hangs gets one stuck thread, not one more per request to the health page.
_running: dict[int, _Probe] = {}
_lock = threading.Lock()


def _start(storage: SnapshotStorage) -> _Probe:
    """Start a round trip on *storage*, or return the one still running."""
    with _lock:
        running = _running.get(id(storage))
        if running is not None and running.storage is storage:
            return running
        probe = _Probe(storage)
        probe.thread = threading.Thread(
            target=probe.run, name="snapshots-health-check", daemon=True
        )
        _running[id(storage)] = probe
    probe.thread.start()
    return probe
