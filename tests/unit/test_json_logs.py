"""JSON logs (``sqs_ddb_json_logs``, on by default on ECS) replace only the formatters Celery set up:
formatters, handlers and logging setups the user configured are kept."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from celery import Celery, signals
from celery.app.log import TaskFormatter
from celery.utils.log import ColorFormatter

from celery_sqs_ddb.config import Settings
from celery_sqs_ddb.worker.logs import JsonFormatter, use_json_logs

ON = Settings.read(None, {"sqs_ddb": {"json_logs": True}})


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, logging.Handler]]:
    """Handlers as Celery's setup leaves them (root: ColorFormatter, celery.task: TaskFormatter) and
    one the user added with a formatter of their own; no setup_logging receivers."""
    monkeypatch.setattr(signals.setup_logging, "receivers", [])
    made = {"root": logging.StreamHandler(), "task": logging.StreamHandler(), "user": logging.StreamHandler()}
    made["root"].setFormatter(ColorFormatter("%(message)s"))
    made["task"].setFormatter(TaskFormatter("%(message)s"))
    made["user"].setFormatter(logging.Formatter("user: %(levelname)s %(message)s"))
    root, task = logging.getLogger(), logging.getLogger("celery.task")
    monkeypatch.setattr(root, "handlers", [])  # only these (not pytest's capture handlers)
    monkeypatch.setattr(task, "handlers", [])
    root.addHandler(made["root"])
    root.addHandler(made["user"])
    task.addHandler(made["task"])
    yield made


def app(**conf: object) -> Celery:
    made = Celery("logs", set_as_current=False)
    made.conf.update(conf)
    return made


def test_celery_s_formatters_become_json_and_the_user_s_stays(handlers):
    user_formatter = handlers["user"].formatter
    assert use_json_logs(app(), ON) == 2
    assert isinstance(handlers["root"].formatter, JsonFormatter)
    assert isinstance(handlers["task"].formatter, JsonFormatter)
    assert handlers["user"].formatter is user_formatter  # the user's format is kept
    record = logging.LogRecord("celery.worker", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    line = json.loads(handlers["root"].format(record))
    assert line["message"] == "hello there" and line["level"] == "INFO" and line["time"].endswith("Z")
    assert handlers["user"].format(record) == "user: INFO hello there"


def test_a_subclass_of_celery_s_formatter_is_the_user_s(handlers):
    class Mine(ColorFormatter):
        pass

    handlers["root"].setFormatter(Mine("%(message)s"))
    assert use_json_logs(app(), ON) == 1  # only celery.task's TaskFormatter
    assert type(handlers["root"].formatter) is Mine


def test_a_setup_logging_receiver_means_the_user_configures_logging(handlers):
    def configure_logging(**kwargs: object) -> None:
        pass

    signals.setup_logging.connect(configure_logging, weak=False)
    assert use_json_logs(app(), ON) == 0
    assert type(handlers["root"].formatter) is ColorFormatter


def test_an_unhijacked_root_logger_is_left_alone(handlers):
    assert use_json_logs(app(worker_hijack_root_logger=False), ON) == 0
    assert type(handlers["root"].formatter) is ColorFormatter


@pytest.mark.parametrize("value", [False, None])  # None: only on ECS, and this is not ECS
def test_off_or_not_on_ecs_changes_nothing(handlers, value):
    settings = Settings.read(None, {"sqs_ddb": {"json_logs": value}})
    assert use_json_logs(app(), settings) == 0
    assert type(handlers["task"].formatter) is TaskFormatter
