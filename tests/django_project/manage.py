#!/usr/bin/env python
"""Django's manage.py for the minimal project the integration tests run (tests/integration/test_django.py)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
