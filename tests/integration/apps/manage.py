"""`python manage.py runserver` for the test project in django_site/ (as `startproject` writes
manage.py; the project's package is found through PYTHONPATH, the repository's root)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.apps.django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
