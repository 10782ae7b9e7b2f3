"""The Django app: add ``"django_snapshots"`` to ``INSTALLED_APPS`` to get the
system checks and the ``snapshots`` management command."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["SnapshotsConfig"]


class SnapshotsConfig(AppConfig):
    """Register the ``SNAPSHOTS`` system checks when Django starts.

    .. versionadded:: 0.1
    """

    name = "django_snapshots"
    verbose_name = "Snapshots"

    def ready(self) -> None:
        # Importing registers the checks; importing conf (through checks)
        # connects the receiver that rebuilds the stack on setting changes.
        from django_snapshots import checks  # noqa: F401
