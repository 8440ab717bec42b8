"""The status page (issue 13, part 5) in headless Chromium (Debian's /usr/bin/chromium).

A hub with a metrics port runs a few tasks (one fails). In the browser: the page
asks for a token, then shows the numbers the Control API reports (tasks by
state, nodes attached, shards, the failed task among the recent failures); after
more tasks finish, its numbers change without a reload. The page fetches nothing
but its own host. A screenshot is kept: under the test's tmp dir and copied to
``test-results/status-page.png`` (the path is printed). Without a credential the
data is refused; a bad token is told so.
"""

import json
import shutil
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from examples.localbrowser import CHROMIUM
from examples.localfleet import Ctl
from tests.chromiumkit import need_chromium

pytestmark = pytest.mark.system

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RESULTS = Path(__file__).resolve().parents[2] / "test-results"


def api_counts(ctl: Ctl) -> Counter[str]:
    return Counter(t["state"] for t in ctl.json("tasks", "--limit", "1000"))


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.timeout(240)
def test_status_page_shows_the_api_numbers_and_updates(fleet, tmp_path):
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    hub = fleet.hub(shards=2, extra_args=["--metrics-listen", "127.0.0.1:0"])
    ctl = Ctl(hub)
    fleet.nodes(hub, 2)
    base = f"http://{hub.info['metrics_address']}"
    token = hub.admin_token_file.read_text().strip()
    first = [ctl.submit(f"echo first-{i}") for i in range(3)]
    failing = ctl.submit("echo bad; exit 3")
    for task_id in [*first, failing]:
        ctl.wait_state(task_id, ["SUCCEEDED", "FAILED"], timeout_s=60)

    assert http_status(f"{base}/status/data.json") == 401
    assert http_status(f"{base}/status/data.json",
                       {"Authorization": "Bearer not-a-token"}) == 401
    with urllib.request.urlopen(urllib.request.Request(
            f"{base}/status/data.json", headers={"Authorization": f"Bearer {token}"})) as r:
        data = json.loads(r.read())
    assert data["tasks"]["SUCCEEDED"] == 3 and data["tasks"]["FAILED"] == 1
    assert data["nodes"]["attached"] == 2 and len(data["shards"]) == 2

    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1300})
            page.on("request", lambda req: requests.append(req.url))
            page.goto(f"{base}/status")
            page.fill("#token", "wrong")
            page.click("#sign-in")
            expect(page.locator("#login-error")).to_contain_text("unknown credential")
            page.fill("#token", token)
            page.click("#sign-in")

            counts = api_counts(ctl)
            for state in ("SUCCEEDED", "FAILED"):
                expect(page.locator(f"#tasks-{state}")).to_have_text(str(counts[state]),
                                                                    timeout=15_000)
            nodes = [n for n in ctl.json("nodes") if n["attached"]]
            expect(page.locator("#nodes-attached")).to_have_text(str(len(nodes)))
            expect(page.locator("#nodes-draining")).to_have_text("0")
            expect(page.locator("#shards-table tbody tr")).to_have_count(
                len(ctl.json("shards")))
            expect(page.locator("#failures")).to_contain_text(failing)
            expect(page.locator("#hosts")).to_have_text(hub.info.get("host_id") or
                                                        data["host"])
            expect(page.locator("#throughput-total")).to_have_text("4")

            # More tasks end: the numbers change without a reload.
            more = [ctl.submit(f"echo more-{i}") for i in range(4)]
            for task_id in more:
                ctl.wait_state(task_id, ["SUCCEEDED"], timeout_s=60)
            expect(page.locator("#tasks-SUCCEEDED")).to_have_text(
                str(api_counts(ctl)["SUCCEEDED"]), timeout=15_000)
            expect(page.locator("#throughput-total")).to_have_text("8", timeout=15_000)
            assert int(page.locator("#plot rect").evaluate_all(
                "rs => rs.reduce((a, r) => a + Number(r.dataset.finished), 0)")) == 8

            # An operator drains a node: the page says so (and the API agrees).
            ctl.ok("nodes", "drain", "node-1")
            expect(page.locator("#nodes-draining")).to_have_text("1", timeout=15_000)
            assert [n["draining"] for n in ctl.json("nodes") if n["node_id"] == "node-1"] \
                == [True]
            expect(page.locator("#nodes-table")).to_contain_text("draining")

            shot = tmp_path / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    RESULTS.mkdir(exist_ok=True)
    kept = RESULTS / "status-page.png"
    shutil.copyfile(shot, kept)
    print(f"status page screenshot: {kept} (and {shot})")
    assert shot.stat().st_size > 10_000
    foreign = [u for u in requests if not u.startswith(base)]
    assert not foreign, f"the page fetched from elsewhere: {foreign}"

    # ?token= sets the cookie and sends the browser on without the token in the address.
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(f"{base}/status?token={token}", timeout=10) as r:
        assert r.url == f"{base}/status" and b"Cortex status" in r.read()
    with opener.open(f"{base}/status/data.json", timeout=10) as r:
        assert json.loads(r.read())["tasks"]["FAILED"] == 1
