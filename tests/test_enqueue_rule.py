"""Every enqueue of work goes through the outbox: only the relay (events/services.py, which
publishes events and owed tasks, and sends events again for its lease pass and for the
reconciler through `event_consumers_send`) talks to the broker.
A direct `.delay()` elsewhere is a message the broker can lose with nothing to send it again."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.packages import PRODUCT_PACKAGES, ROOT

PUBLISHING = frozenset({"delay", "apply_async", "send_task", "retry"})
MAY_PUBLISH = frozenset({"events/services.py"})


def publishing_calls(source: str) -> list[tuple[int, str]]:
    """(line, method) of every `<anything>.delay(...)`, `.apply_async`, `.send_task`, `.retry`."""
    return [
        (node.lineno, node.func.attr)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in PUBLISHING
    ]


def broker_retries(source: str) -> list[int]:
    """Lines asking Celery to retry by itself (`autoretry_for`, as a keyword or a settings key):
    Celery re-publishes the task with a countdown, straight to the broker."""
    tree = ast.parse(source)
    keywords = [
        node.value.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "autoretry_for"
    ]
    keys = [
        key.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant) and key.value == "autoretry_for"
    ]
    return keywords + keys


def product_modules() -> list[Path]:
    return [
        path
        for package in PRODUCT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts
    ]


def test_only_the_relay_and_the_reconciler_publish_to_the_broker():
    found = {
        str(path.relative_to(ROOT)): calls
        for path in product_modules()
        if (calls := publishing_calls(path.read_text()))
    }

    assert {path: calls for path, calls in found.items() if path not in MAY_PUBLISH} == {}
    # The scan sees the two places that do publish (it would miss nothing it should catch).
    assert set(found) == MAY_PUBLISH
    assert len(product_modules()) > 100


def test_the_scan_catches_each_way_of_publishing():
    source = "\n".join(
        [
            "tasks.dispatch_send.delay(1)",
            "refund_send.apply_async(args=[1], countdown=5)",
            "app.send_task('x', args=[1])",
            "raise self.retry(exc=error, countdown=3)",
            "outbox_task_enqueue(task='x', args=[1])",
        ]
    )

    assert publishing_calls(source) == [(1, "delay"), (2, "apply_async"), (3, "send_task"), (4, "retry")]


def test_no_task_retries_through_the_broker_by_itself():
    found = {
        str(path.relative_to(ROOT)): lines
        for path in product_modules()
        if (lines := broker_retries(path.read_text()))
    }

    assert found == {}
    assert broker_retries(
        'RETRY = {"autoretry_for": (OSError,)}\n@shared_task(autoretry_for=(OSError,))\ndef f(): ...'
    ) == [2, 1]


def test_in_the_relay_only_its_two_publishers_talk_to_the_broker() -> None:
    """Events reach their consumers through `_broker_send` (event_consumers_send's broker half,
    which the publish after commit also calls), owed tasks through `outbox_tasks_publish`: a send
    anywhere else in the relay module bypasses both."""
    tree = ast.parse((ROOT / "events" / "services.py").read_text())
    publishers = {
        function.name
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        and any(line for line, _ in publishing_calls(ast.unparse(function)))
    }
    assert publishers == {"_broker_send", "outbox_tasks_publish"}
