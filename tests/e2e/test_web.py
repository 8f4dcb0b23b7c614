"""The web view end to end (DESIGN §13, docs/web.md): the real `serve --http --api-tokens` process,
the stub LLM, an MCP server whose tool needs approval, and a real headless Chromium (Debian's
`chromium` and `chromium-driver`) driven by Selenium.

    sign in with a token ── the tasks page; a task created over the API appears and runs to its
        final answer without a reload (from /v1/events); its page: context window, checkpoints
    a gated tool call ── the page's Approve is the same record on main as the CLI's, as the caller;
        the task finishes on the page
    a viewer ── sees what waits, no decide buttons; the API refuses its decision anyway
    a task whose text is HTML ── shown as text, never run
    curl ── plain text (tasks, what waits, one task); 401 in text without a token

With ACP_WEB_SCREENSHOTS=DIR set, each page's screenshot is written to DIR (docs/web/ in the
repository: `ACP_WEB_SCREENSHOTS=docs/web pytest tests/e2e/test_web.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import git
from tests.e2e.conftest import (
    API,
    CLI,
    AcpRepo,
    Background,
    Stub,
    call,
    free_port,
    mcpserver_yaml,
    module_repo,
    no_servers_left,
    serving,
    tool_agent_yaml,
    wait_for,
)
from tests.e2e.test_api import TOKENS as API_TOKENS
from tests.e2e.test_api import Client, start_serve

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {
    "alice": (
        "web-alice-token-0123456789",
        ("Alice Approver", "alice@example.com"),
        ["operator", "approver"],
    ),
    "vic": ("web-vic-token-0123456789", ("Vic Viewer", "vic@example.com"), ["viewer"]),
}
WAIT = 45  # seconds for anything the page shows


@dataclass
class Served:
    repo: AcpRepo
    client: Client
    background: Background


def write_tokens(path: Path) -> Path:
    entries = [
        {
            "name": who[0],
            "email": who[1],
            "roles": roles,
            "sha256": hashlib.sha256(token.encode()).hexdigest(),
        }
        for token, who, roles in [*TOKENS.values(), *API_TOKENS.values()]  # the Client's, too
    ]
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def served(stub_process: Stub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("web")
    with no_servers_left() as marker, module_repo(stub_process, base) as (work, _secret), serving() as start:
        stub_process.rules(
            {"match": "^Use the gate", "when": "first", "toolCalls": [call("gated__echo", text="hi")]},
            {
                "match": "^Ask",
                "when": "first",
                "toolCalls": [call("humans__human_contact", message="Where?")],
            },
            {"when": "tool", "content": "tool said: {tool}"},
        )
        channel = f"apiVersion: {API}\nkind: ContactChannel\nmetadata:\n  name: humans\nspec:\n  type: git\n"
        server = mcpserver_yaml("gated", marker=marker) + "  approvalContactChannel:\n    name: humans\n"
        work.commit(
            {
                "contactchannels/humans.yaml": channel,
                "mcpservers/gated.yaml": server,
                "agents/tooly.yaml": tool_agent_yaml("tooly", servers=("gated",)),
                "agents/asker.yaml": tool_agent_yaml("asker")
                + "  humanContactChannels:\n    - name: humans\n",
            },
            "Add a gated MCP server and its agent",
        )
        bare = base / "served.git"
        git(base, "clone", "-q", "--bare", str(work.path), str(bare))
        repo = AcpRepo(path=bare, secrets=work.secrets, stub_url=work.stub_url, logs=work.logs)
        background, client = start_serve(repo, write_tokens(base / "tokens.yaml"), start=start)
        yield Served(repo, client, background)
        log = background.stderr()
        for token, _who, _roles in TOKENS.values():
            assert token not in log, "a token reached serve's log"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chrome() as driver:
        yield driver


@contextlib.contextmanager
def chrome() -> Iterator[WebDriver]:
    """A headless Chromium through chromedriver; quit on exit."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium, "install Debian's chromium (.ci/run does)"
    assert driver_path, "install Debian's chromium-driver (.ci/run does)"
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def api(served: Served, method: str, path: str, body: Any = None, *, who: str = "alice") -> Any:
    """A request as `who` (not the test_api Client's tokens: this module has its own)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKENS[who][0]}", "Content-Type": "application/json"}
    request = urllib.request.Request(served.client.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def create(served: Served, name: str, message: str, agent: str = "e2e-agent") -> None:
    status, body = api(
        served, "POST", "/v1/tasks", {"name": name, "agentRef": {"name": agent}, "userMessage": message}
    )
    assert status == 201, body


def sign_in(driver: WebDriver, served: Served, who: str) -> None:
    driver.get(served.client.url + "/#/")
    signed_in = driver.find_elements(By.CSS_SELECTOR, "#signout:not([hidden])")
    if signed_in:  # sign out first: the token leaves the tab's storage
        signed_in[0].click()
        assert driver.execute_script("return sessionStorage.length") == 0
    field = WebDriverWait(driver, WAIT).until(lambda d: d.find_element(By.ID, "token"))
    assert unlabelled(driver) == []
    assert driver.switch_to.active_element == field  # the keyboard starts in the token field
    screenshot(driver, "signin.png")
    field.send_keys(TOKENS[who][0], Keys.ENTER)  # by keyboard alone
    WebDriverWait(driver, WAIT).until(lambda d: TOKENS[who][1][0] in d.find_element(By.ID, "who").text)
    assert TOKENS[who][0] not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('gitops-acp.token')") == TOKENS[who][0]
    assert driver.execute_script("return localStorage.length") == 0


def screenshot(driver: WebDriver, name: str) -> None:
    """Write the page's screenshot to $ACP_WEB_SCREENSHOTS/name when it is set (docs/web/)."""
    where = os.environ.get("ACP_WEB_SCREENSHOTS")
    if where:
        target = ROOT / where if not Path(where).is_absolute() else Path(where)
        target.mkdir(parents=True, exist_ok=True)
        size = driver.get_window_size()  # the whole page, not only what the window shows
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(max(height + 140, size["height"]), 3000))
        driver.save_screenshot(str(target / name))
        driver.set_window_size(size["width"], size["height"])


def text_of(driver: WebDriver, css: str) -> str:
    """The text of the first element `css` finds ("" if none, or if a live update just replaced it)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def values(driver: WebDriver, css: str, prop: str = "textContent") -> list[str]:
    """`prop` of every element `css` finds, read at once (live updates replace elements)."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e[arguments[1]])", css, prop
    )
    return found


def act(driver: WebDriver, css: str, action: Any) -> None:
    """`action(element)` on the element `css` finds, again if a live update replaced it meanwhile."""
    for _ in range(20):
        try:
            action(driver.find_element(By.CSS_SELECTOR, css))
            return
        except (StaleElementReferenceException, ElementNotInteractableException):
            time.sleep(0.1)  # replaced, or being replaced, by a live update: take the new one
    raise AssertionError(f"{css} kept being replaced")


def unlabelled(driver: WebDriver) -> list[str]:
    """The form fields of the page without a label (a screen reader could not name them)."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('input, select, textarea')]"
        ".filter(e => !e.labels || !e.labels.length).map(e => e.outerHTML)"
    )
    return found


def press(driver: WebDriver, label: str) -> None:
    """Click the button of the page labelled `label`."""
    driver.execute_script(
        "[...document.querySelectorAll('main button')].find(b => b.textContent === arguments[0]).click()",
        label,
    )


def until(driver: WebDriver, predicate: Any, what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: predicate(d))
    except Exception:
        state = driver.execute_script(
            "return [location.href, window.eventRequests, document.body.dataset.events]"
        )
        raise AssertionError(
            f"the page never showed {what} ({state}): {driver.find_element(By.ID, 'main').text[-1500:]}"
        ) from None


def test_a_task_runs_to_its_answer_on_the_page_and_an_approval_finishes_one(
    served: Served, browser: WebDriver
) -> None:
    sign_in(browser, served, "alice")
    until(browser, lambda d: d.find_elements(By.ID, "tasks"), "the tasks table")
    until(browser, lambda d: "Live" in d.find_element(By.ID, "live").text, "the live stream")
    browser.execute_script("window.notReloaded = true")
    create(served, "web-hello", "Say hello to the web")
    row = '[data-task="web-hello"]'
    until(browser, lambda d: "FinalAnswer" in text_of(d, row), "web-hello reaching FinalAnswer")
    assert "Echo: Say hello to the web" in text_of(browser, row)
    assert browser.execute_script("return window.notReloaded") is True  # updated in place, not reloaded
    assert int(browser.execute_script("return document.body.dataset.events")) > 0
    # The search asks the server for names containing the text, in any case.
    create(served, "web-other", "Another one")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-task="web-other"]'), "web-other")
    act(browser, "#f-search", lambda e: e.send_keys("HELLO"))
    until(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-task="web-other"]'), "the search")
    assert browser.find_elements(By.CSS_SELECTOR, row)
    screenshot(browser, "tasks.png")
    assert unlabelled(browser) == []
    act(browser, "#f-search", lambda e: e.send_keys(Keys.CONTROL, "a", Keys.BACKSPACE))
    # Paging, one task a page (#/?limit=1), then the phase filter; both kept in the address.
    browser.get(served.client.url + "/#/?limit=1")

    def names(d: WebDriver) -> list[str]:
        return values(d, "#tasks [data-task] a")

    until(browser, lambda d: len(names(d)) == 1 and "Next page" in text_of(d, ".pager"), "a page of one")
    first = names(browser)
    press(browser, "Next page")
    until(browser, lambda d: names(d) not in ([], first) and "First page" in text_of(d, ".pager"), "page 2")
    press(browser, "First page")
    until(browser, lambda d: names(d) == first, "page 1 again")
    # Typed in the search box: a task that is not on the first page is found, after the last key
    # (one search, not one per key), the caret still in the box; the search is kept in the address.
    assert first == ["web-hello"]
    browser.execute_script(
        "window.asked = []; const real = window.fetch;"
        "window.fetch = (url, init) => { window.asked.push(String(url)); return real(url, init); };"
    )
    act(browser, "#f-search", lambda e: e.send_keys("OTHER"))
    until(browser, lambda d: names(d) == ["web-other"], "web-other, found by name beyond page 1")
    assert "Next page" not in text_of(browser, ".pager")
    assert browser.current_url.endswith("#/?q=OTHER&limit=1")
    assert browser.switch_to.active_element.get_attribute("id") == "f-search"
    asked = browser.execute_script("return window.asked")
    searches = [url for url in asked if url.startswith("/v1/tasks?") and "q=" in url]
    assert searches
    assert {url.split("?")[1] for url in searches} == {"limit=1&q=OTHER"}
    act(browser, "#f-search", lambda e: e.send_keys("-none", Keys.ENTER))
    until(browser, lambda d: "No tasks whose name contains “OTHER-none”." in text_of(d, "#tasks"), "no match")
    act(browser, "#f-search", lambda e: e.send_keys(Keys.ESCAPE))  # a search box's own clear
    until(browser, lambda d: names(d) == first, "page 1 without the search")
    assert browser.current_url.endswith("#/?limit=1")
    act(browser, "#f-phase", lambda e: Select(e).select_by_visible_text("Failed"))
    until(browser, lambda d: "No tasks." in text_of(d, "#tasks"), "no failed task")
    assert browser.current_url.endswith("#/?phase=Failed&limit=1")
    act(browser, "#f-phase", lambda e: Select(e).select_by_visible_text("FinalAnswer"))
    until(browser, lambda d: names(d) == ["web-hello"], "the first finished task")

    # The task's page: its context window with roles, its checkpoints with the status branch's commits.
    act(browser, '[data-task="web-hello"] a', lambda e: e.click())
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#checkpoints tbody tr"), "the checkpoints")
    roles = [role.lower() for role in values(browser, "#context .role")]
    assert roles[-2:] == ["user", "assistant"]
    assert "Echo: Say hello to the web" in text_of(browser, "#context")
    shown = values(browser, "#checkpoints code", "title")
    status, history = api(served, "GET", "/v1/tasks/web-hello/history", who="vic")
    assert status == 200
    assert shown == [item["commit"] for item in history["items"]]
    logged = git(served.repo.path, "log", "--format=%H", "acp/status").splitlines()
    assert shown
    assert set(shown) <= set(logged)
    assert history["items"][-1]["to"] == "FinalAnswer"
    screenshot(browser, "task.png")

    # A gated tool call: waits on the pending page; Approve there is the CLI's record, as Alice.
    create(served, "web-gate", "Use the gate please", agent="tooly")
    browser.get(served.client.url + "/#/pending")
    card = '[id^="call-web-gate-"]'
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, card + " button.approve"), "the Approve button")
    name = values(browser, card, "id")[0].removeprefix("call-")
    assert "gated__echo" in text_of(browser, card)
    until(browser, lambda d: text_of(d, "#pending-count") not in ("", "(0)"), "the count of what waits")
    act(browser, f"#comment-{name}", lambda e: e.send_keys("looks fine"))
    screenshot(browser, "pending.png")
    assert unlabelled(browser) == []
    act(browser, card + " button.approve", lambda e: e.click())
    until(browser, lambda d: "approved, recorded on main as Alice" in text_of(d, "#notice"), "the decision")
    record = git(served.repo.path, "show", f"main:approvals/{name}.yaml")
    assert "decision: approved" in record
    assert "comment: looks fine" in record
    author = git(served.repo.path, "log", "-1", "--format=%an <%ae>|%s", "main")
    assert author == "Alice Approver <alice@example.com>|Approve gated__echo for task web-gate"
    # The task's page sees it finish, and who decided.
    browser.get(served.client.url + "/#/task/web-gate")
    until(browser, lambda d: "FinalAnswer" in text_of(d, '[data-field="phase"]'), "web-gate finishing")
    until(browser, lambda d: "Alice Approver" in text_of(d, f"#call-{name}"), "who approved")
    assert "tool said:" in text_of(browser, '[data-field="output"]')
    screenshot(browser, "task-approved.png")


def test_reject_with_a_reason_answer_a_question_and_see_follow_ups(
    served: Served, browser: WebDriver
) -> None:
    create(served, "web-no", "Use the gate, I will refuse", agent="tooly")
    create(served, "web-ask", "Ask me where to go", agent="asker")
    sign_in(browser, served, "alice")
    # Reject from the task's own page: the reason is required, and the model reads it.
    browser.get(served.client.url + "/#/task/web-no")
    card = '[id^="call-web-no-"]'
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, card + " button.reject"), "the Reject button")
    name = values(browser, card, "id")[0].removeprefix("call-")
    act(browser, f"#reason-{name}", lambda e: e.send_keys("not today"))
    act(browser, card + " button.reject", lambda e: e.click())
    until(browser, lambda d: "rejected, recorded on main" in text_of(d, "#notice"), "the rejection")
    until(browser, lambda d: "ToolCallRejected" in text_of(d, card), "the call rejected")
    until(browser, lambda d: "FinalAnswer" in text_of(d, '[data-field="phase"]'), "web-no finishing")
    assert "not today" in text_of(browser, card)
    assert "decision: rejected" in git(served.repo.path, "show", f"main:approvals/{name}.yaml")
    # A question: answered on the pending page; the answer reaches the model.
    browser.get(served.client.url + "/#/pending")
    card = '[id^="call-web-ask-"]'
    until(
        browser, lambda d: d.find_elements(By.CSS_SELECTOR, card + " textarea"), "the question's answer field"
    )
    name = values(browser, card, "id")[0].removeprefix("call-")
    assert "Where?" in text_of(browser, card)
    act(browser, f"#response-{name}", lambda e: e.send_keys("Porto"))
    act(browser, card + " button[type=submit]", lambda e: e.click())
    until(browser, lambda d: "answered, recorded on main" in text_of(d, "#notice"), "the answer")
    assert git(served.repo.path, "log", "-1", "--format=%an", "main") == "Alice Approver"
    browser.get(served.client.url + "/#/task/web-ask")
    until(browser, lambda d: "FinalAnswer" in text_of(d, '[data-field="phase"]'), "web-ask finishing")
    assert "Porto" in text_of(browser, "#context")
    # A follow-up sent from the page (alice is an operator): on main as her, answered, shown live.
    act(browser, "#follow-up", lambda e: e.send_keys("And after Porto?"))
    press(browser, "Send")
    until(browser, lambda d: "Follow-up 1 sent, recorded on main as Alice" in text_of(d, "#notice"), "sent")
    assert (
        git(served.repo.path, "log", "-1", "--format=%an|%s", "main")
        == "Alice Approver|Follow-up to task web-ask"
    )
    until(browser, lambda d: "And after Porto?" in text_of(d, "#followups"), "the follow-up")
    until(browser, lambda d: "Echo: And after Porto?" in text_of(d, "#context"), "its answer")


#: Injected before the page's own script (CDP): records the Last-Event-ID of each /v1/events
#: request and ends the first stream right after its first event with an id, as a proxy cutting
#: the connection would.
CUT_THE_FIRST_STREAM = r"""
window.eventRequests = [];
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  const answer = await realFetch(url, init);
  if (!String(url).startsWith("/v1/events")) return answer;
  window.eventRequests.push(((init || {}).headers || {})["Last-Event-ID"] || null);
  if (window.eventRequests.length > 1) return answer;
  const reader = answer.body.getReader(), decoder = new TextDecoder();
  let seen = "";
  const body = new ReadableStream({ async pull(out) {
    const { value, done } = await reader.read();
    if (done) return out.close();
    out.enqueue(value);
    seen += decoder.decode(value);
    if (/(^|\n)id: /.test(seen)) { reader.cancel(); out.close(); }
  } });
  return new Response(body, { status: answer.status, headers: answer.headers });
};
"""


def test_a_cut_stream_resumes_from_the_last_event_seen(served: Served) -> None:
    with chrome() as driver:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CUT_THE_FIRST_STREAM})
        sign_in(driver, served, "vic")
        until(driver, lambda d: "Live" in d.find_element(By.ID, "live").text, "the live stream")
        create(served, "web-resume", "Resume me")
        requests = until(
            driver,
            lambda d: (r := d.execute_script("return window.eventRequests")) and len(r) > 1 and r,
            "a reconnect",
        )
        assert requests[0] is None
        resumed = requests[1]
        assert resumed is not None
        assert git(served.repo.path, "rev-parse", "--verify", f"{resumed}^{{commit}}") == resumed
        assert git(served.repo.path, "merge-base", "--is-ancestor", resumed, "acp/status") == ""
        until(
            driver, lambda d: "FinalAnswer" in text_of(d, '[data-task="web-resume"]'), "web-resume finishing"
        )


def test_a_viewer_sees_what_waits_but_cannot_decide(served: Served, browser: WebDriver) -> None:
    create(served, "web-vic", "Use the gate again", agent="tooly")
    sign_in(browser, served, "vic")
    browser.get(served.client.url + "/#/pending")
    card = '[id^="call-web-vic-"]'
    until(browser, lambda d: "cannot decide" in text_of(d, card), "the waiting call, for a viewer")
    assert not browser.find_elements(By.CSS_SELECTOR, "main button")
    name = values(browser, card, "id")[0].removeprefix("call-")
    # The API refuses the viewer anyway, whatever the page shows.
    refused = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch('/v1/toolcalls/' + arguments[0] + '/approve', {method: 'POST',
          headers: {Authorization: 'Bearer ' + sessionStorage.getItem('gitops-acp.token'),
                    'Content-Type': 'application/json'}, body: '{"comment": ""}'})
          .then(r => done(r.status));""",
        name,
    )
    assert refused == 403
    assert git(served.repo.path, "ls-tree", "--name-only", "main", "approvals/").find(name) == -1


def test_a_tasks_text_is_shown_not_run(served: Served, browser: WebDriver) -> None:
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> & <b>bold</b>'
    create(served, "web-xss", hostile)
    sign_in(browser, served, "vic")
    browser.get(served.client.url + "/#/task/web-xss")
    until(browser, lambda d: "FinalAnswer" in text_of(d, '[data-field="phase"]'), "web-xss finishing")
    assert hostile in text_of(browser, "#context")
    browser.get(served.client.url + "/#/")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-task="web-xss"]'), "web-xss listed")
    assert browser.execute_script("return window.pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "main img, main b, main script")


def get_text(url: str, *, token: str | None, accept: str = "text/plain") -> tuple[int, str, dict[str, str]]:
    headers = {"Accept": accept} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (
                response.status,
                response.read().decode(),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(), {k.lower(): v for k, v in exc.headers.items()}


def test_curl_gets_text_and_the_page_is_the_packages_own(served: Served) -> None:
    create(served, "web-curl", "Plain text please")
    wait_for(
        lambda: "FinalAnswer" in get_text(served.client.url + "/?task=web-curl", token=TOKENS["vic"][0])[1],
        timeout=WAIT,
        what="web-curl to finish",
    )
    status, text, headers = get_text(served.client.url + "/", token=TOKENS["vic"][0], accept="*/*")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert text.startswith("signed in as Vic Viewer <vic@example.com> (viewer)")
    assert "web-curl" in text
    assert "Echo: Plain text please" in text
    assert "WAITING FOR A PERSON" in text
    status, one, _ = get_text(served.client.url + "/?task=web-curl", token=TOKENS["vic"][0])
    assert "[user] Plain text please" in one
    assert "[assistant] Echo: Plain text please" in one
    assert "CHECKPOINTS" in one
    assert "-> FinalAnswer" in one
    status, refused, headers = get_text(served.client.url + "/", token=None)
    assert status == 401
    assert "Authorization: Bearer" in refused
    assert headers["www-authenticate"].startswith("Bearer")
    # The page: no data without a token, a strict CSP, every file from this server.
    status, page, headers = get_text(served.client.url + "/", token=None, accept="text/html,*/*;q=0.8")
    assert status == 200
    assert '<script src="/web/app.js"' in page
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "http://" not in page
    assert "https://" not in page
    status, script, headers = get_text(served.client.url + "/web/app.js", token=None, accept="*/*")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert len(script) < 20_000
    # The endpoints the page reads, against the served OpenAPI document.
    history = served.client("GET", "/v1/tasks/web-curl/history", who="vic")
    assert history.status == 200
    assert history.body["branch"] == "acp/status"
    assert [item["to"] for item in history.body["items"]][-1] == "FinalAnswer"
    assert served.client("GET", "/v1/tasks/no-such-task/history", who="vic").status == 404
    assert served.client("GET", "/v1/tasks/web-curl/history", who=None).status == 401
    assert served.client("GET", "/v1/tasks/web-curl/history", who="vic", query={"limit": "0"}).status == 422
    me = served.client("GET", "/v1/whoami", who="alice")
    assert me.body == {
        "name": "Alice Operator",
        "email": "alice@example.com",
        "roles": ["approver", "operator", "viewer"],
    }


def test_the_demo_serves_the_web_view_with_http(tmp_path: Path) -> None:
    port = free_port()
    demo = tmp_path / "demo"
    proc = subprocess.Popen(
        [*CLI, "demo", "--dir", str(demo), "--http", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        said = ""
        for line in proc.stdout:
            said += line
            if line.startswith("the web view: "):
                break
        assert f"the web view: http://127.0.0.1:{port}/  sign in with the token in " in said, said[-2000:]
        token = Path(line.rsplit(" ", 1)[1].strip()).read_text().strip()
        assert token not in said  # the token is in its file, not on the screen

        def listed() -> str:
            try:
                return get_text(f"http://127.0.0.1:{port}/", token=token)[1]
            except (urllib.error.URLError, OSError):
                return ""

        text = wait_for(
            lambda: "add-numbers" in listed() and listed(), timeout=WAIT, what="the demo's web view"
        )
        assert text.startswith("signed in as Demo User <demo@example.com>")
        assert "FinalAnswer" in text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
