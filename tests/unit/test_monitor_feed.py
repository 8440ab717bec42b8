"""The control process's event feed to the monitors (monitorfeed.py), without a socket."""

from typing import Any

from cortexd.control.monitorfeed import MAX_HELD_EVENTS, MonitorFeed
from cortexd.monitors.core import TaskMonitor
from cortexd.monitors.policy import parse_policy


def drain(feed: MonitorFeed) -> list[tuple[str, str, Any]]:
    out = []
    for sub in feed.subscribers:
        while not sub.queue.empty():
            out.append(sub.queue.get_nowait())
    return out


def test_events_before_registration_follow_the_monitored_item_in_order() -> None:
    # SubmitMany stores the agent rows one by one after the tasks exist: placement can
    # assign and the node start a task before its monitor is registered (issue 10's
    # 1,000-task run left 785 monitors at QUEUED, deaf to their task's prompts).
    feed = MonitorFeed()
    feed.subscribe(0, 1)
    feed.expect("t-a")
    feed.on_publish("t-a", ("state", "QUEUED-row"))
    feed.on_publish("t-a", ("state", "RUNNING-row"))
    feed.on_publish("t-b", ("state", "not announced"))  # a plain task: nothing kept
    assert drain(feed) == []
    feed.watch("t-a", ("agent-row", "created-row"))
    feed.on_publish("t-a", ("attention", "pw"))
    assert drain(feed) == [("monitored", "t-a", ("agent-row", "created-row")),
                           ("state", "t-a", "QUEUED-row"), ("state", "t-a", "RUNNING-row"),
                           ("attention", "t-a", "pw")]


def test_held_events_are_bounded_and_forgotten() -> None:
    feed = MonitorFeed()
    feed.subscribe(0, 1)
    feed.expect("t-a")
    for i in range(MAX_HELD_EVENTS + 5):
        feed.on_publish("t-a", ("state", i))
    assert feed.held_dropped == 5
    feed.forget_expected("t-a")  # refused: nothing comes of it
    feed.watch("t-a")
    assert drain(feed) == []
    feed.on_publish("t-a", ("state", "x"))
    assert drain(feed) == [("state", "t-a", "x")]


def test_a_monitor_never_moves_back() -> None:
    m = TaskMonitor("t-1", parse_policy("p", "check_every_s = 0\n"))
    m.on_task("RUNNING", 1, None, 1000)
    assert m.on_task("ASSIGNED", 1, None, 1001) is None and m.state == "RUNNING"
    end = m.on_task("SUCCEEDED", 1, 0, 2000)
    assert end is not None
    assert m.on_task("RUNNING", 1, None, 2001) is None and m.terminal  # a stale replay
    assert m.on_task("QUEUED", 2, None, 3000) is None and m.state == "QUEUED"  # a retry
    assert m.attempt == 2
