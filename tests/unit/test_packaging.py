"""The wheel a user installs: version agreed by CHANGELOG and ``__version__``, LICENSE, ``py.typed``,
classifiers, entry points, the framework helpers, and nothing of the tests or the example."""

from __future__ import annotations

import configparser
import email
import re
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import celery_sqs_ddb
from tests.support.stack import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Build the wheel from a copy of the sources (no build/ or egg-info in the checkout)."""
    source = tmp_path_factory.mktemp("build") / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", "test-artifacts", ".demo", ".model", "*.png"))
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", str(source), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("*.whl")
    return zipfile.ZipFile(path)


def metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_string(wheel.read(name).decode())


def test_changelog_and_version_agree(wheel):
    text = (ROOT / "CHANGELOG.md").read_text()
    newest = re.search(r"^## (\d+\.\d+\.\d+)\b", text, re.M)
    assert newest, "CHANGELOG.md has no '## X.Y.Z' entry"
    assert newest.group(1) == celery_sqs_ddb.__version__ == metadata(wheel)["Version"]


def test_license_and_py_typed_are_shipped(wheel):
    names = wheel.namelist()
    assert "celery_sqs_ddb/py.typed" in names  # PEP 561: type checkers use the package's hints
    (license_file,) = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(license_file).decode().startswith("BSD 3-Clause License")
    meta = metadata(wheel)
    assert meta["License"] == "BSD-3-Clause"  # SPDX id, matching the LICENSE text
    # PEP 639 deprecates "License ::" classifiers (setuptools warns); the SPDX id says it
    assert not [c for c in meta.get_all("Classifier") if c.startswith("License ::")]


def test_classifiers_name_framework_status_typing_and_the_supported_pythons(wheel):
    meta = metadata(wheel)
    classifiers = set(meta.get_all("Classifier"))
    assert {"Framework :: Celery", "Framework :: Django", "Framework :: Flask", "Typing :: Typed",
            "Programming Language :: Python :: 3 :: Only"} <= classifiers
    assert len([c for c in classifiers if c.startswith("Development Status ::")]) == 1
    versions = sorted((int(m[1]), int(m[2])) for c in classifiers
                      if (m := re.fullmatch(r"Programming Language :: Python :: (\d+)\.(\d+)", c)))
    low = tuple(int(x) for x in re.fullmatch(r">=(\d+)\.(\d+)", meta["Requires-Python"]).groups())
    assert versions[0] == low  # the lowest classifier is python_requires
    assert versions == [(3, minor) for minor in range(low[1], versions[-1][1] + 1)]  # no gaps
    assert sys.version_info[:2] in versions  # the Python the tests run on is a supported one


def test_entry_points_helpers_and_nothing_else(wheel):
    names = wheel.namelist()
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert parser["celery.result_backends"]["ddb"] == "celery_sqs_ddb.backend:DynamoDBBackend"
    assert parser["celery.commands"]["sqs-ddb"] == "celery_sqs_ddb.cli:sqs_ddb"
    assert {"celery_sqs_ddb/django.py", "celery_sqs_ddb/flask.py"} <= set(names)
    assert {Path(n).parts[0] for n in names} == {  # no tests/, example_project/, deploy/, benchmarks/
        "celery_sqs_ddb", f"celery_sqs_ddb-{celery_sqs_ddb.__version__}.dist-info"}


def test_the_framework_helpers_import_without_their_frameworks_configured():
    """settings.py imports celery_sqs_ddb.django before Django is set up; no Flask import at load."""
    done = subprocess.run([sys.executable, "-c", "import sys, celery_sqs_ddb.django, celery_sqs_ddb.flask; "
                           "print('django.conf' in sys.modules, 'flask' in sys.modules)"],
                          capture_output=True, text=True, cwd=str(ROOT), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
