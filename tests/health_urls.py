"""URLs for tests/test_health_check.py: django-health-check's view with the
snapshot storage check, at its default time limit and at a short one."""

import datetime

from django.urls import path
from health_check.views import HealthCheckView

CHECK = "django_snapshots.contrib.health_check.SnapshotStorageCheck"

urlpatterns = [
    path("ht/", HealthCheckView.as_view(checks=[CHECK])),
    path(
        "ht/short/",
        HealthCheckView.as_view(checks=[(CHECK, {"timeout": datetime.timedelta(seconds=0.5)})]),
    ),
]
