"""The web dashboard in a real headless Chromium, served by a real ``fleet controller run
--listen`` with a lab pool: login, live progress, task output, actions, escaping, CSRF."""

from __future__ import annotations

import shutil
import urllib.parse
import uuid
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path

import pytest

from fleet import lab as lab_mod
from fleet.api.dashboard import progress
from fleet.api.sessions import LoginLimiter, Sessions, cookie
from tests.api_client import free_port
from tests.conftest import ROOT, ControllerProcess, Fleet, make_pool, wait_for, wait_for_idle_nodes

ACCOUNT = "dashtest"
SHOTS = ROOT / "build" / "test-artifacts" / "dashboard"


class Board:
    """The controller serving the dashboard, the CLI of its database and the account."""

    def __init__(self, fleet: Fleet, port: int, key: str) -> None:
        self.fleet, self.port, self.key = fleet, port, key
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> int:
        """GET ``path`` outside the browser; return the status."""
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def post(self, path: str, form: dict[str, str], headers: dict[str, str]) -> int:
        """POST ``form`` to ``path`` outside the browser; return the status."""
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = urllib.parse.urlencode(form)
            sent = {"content-type": "application/x-www-form-urlencoded", **headers}
            conn.request("POST", path, body=body, headers=sent)
            return conn.getresponse().status
        finally:
            conn.close()


@pytest.fixture(scope="module")
def board(lab: lab_mod.Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """A lab pool ``p`` of two idle nodes and a controller serving the dashboard."""
    tmp = tmp_path_factory.mktemp("dashboard")
    fleet = Fleet(tmp / "home")
    base = lab.dir / "nodes" / f"t-{uuid.uuid4().hex[:10]}"
    inventory = lab_mod.write_inventory(lab, tmp / "lab.ini", node_root_base=base)
    make_pool(fleet, inventory, "p", 2)
    key = fleet.json("account", "create", ACCOUNT)["key"]
    port = free_port()
    proc = ControllerProcess(fleet, tmp / "controller.log", ("--listen", f"127.0.0.1:{port}"))
    proc.start()
    the_board = Board(fleet, port, key)
    the_board.log = proc.log_text  # type: ignore[attr-defined]

    def up() -> bool:
        try:
            return the_board.get("/ui/static/live.js") == 200
        except OSError:
            return False

    try:
        wait_for(up, 30, message="the dashboard to listen")
        wait_for_idle_nodes(fleet, "p")
        yield the_board
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[object]:
    """Headless Chromium driven through Debian's chromedriver (never a downloaded one)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if browser is None or chromedriver is None:
        pytest.skip("dashboard tests need chromium and chromedriver (scripts/setup installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,900")
    the_driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    the_driver.implicitly_wait(0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield the_driver
    the_driver.quit()


def _by():
    from selenium.webdriver.common.by import By

    return By


def shot(driver, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def log_in(driver, board: Board, key: str | None = None) -> None:
    """Fill in the login form with the account and ``key`` (its real key by default)."""
    by = _by()
    driver.get(board.base + "/ui/login")
    driver.find_element(by.ID, "account").send_keys(ACCOUNT)
    driver.find_element(by.ID, "key").send_keys(board.key if key is None else key)
    driver.find_element(by.ID, "login").click()


@pytest.fixture
def page(driver, board: Board):
    """The browser, logged in."""
    if driver.get_cookie("fleet_session") is None:  # type: ignore[attr-defined]
        log_in(driver, board)
        wait_for(lambda: driver.get_cookie("fleet_session"), 10, message="the session cookie")
    return driver


def text_of(driver, css: str) -> str:
    """The text of the first element ``css`` selects now ("" for none), read in one
    script call: the live script may swap the element out at any moment."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return driver.execute_script(script, css)


def attribute(driver, css: str, name: str) -> str | None:
    """The attribute ``name`` of the first element ``css`` selects now."""
    script = (
        "const e = document.querySelector(arguments[0]);"
        "return e ? e.getAttribute(arguments[1]) : null;"
    )
    return driver.execute_script(script, css, name)


@pytest.mark.lab
def test_login_with_a_wrong_key_fails_and_the_right_key_gives_a_strict_cookie(driver, board):
    driver.delete_all_cookies()
    driver.get(board.base + "/ui/jobs")
    assert driver.current_url.startswith(board.base + "/ui/login")  # no session: log in first
    log_in(driver, board, key="d3JvbmcK" * 11)
    wait_for(lambda: text_of(driver, "#error"), 10, message="the login error")
    assert "wrong account name or key" in text_of(driver, "#error")
    assert driver.get_cookie("fleet_session") is None
    shot(driver, "login-refused")
    assert "failed login for 'dashtest'" in board.log()
    assert "d3JvbmcK" not in board.log()  # the key tried is never logged

    log_in(driver, board)
    wait_for(lambda: driver.current_url == board.base + "/", 10, message="the pools page")
    cookie = driver.get_cookie("fleet_session")
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert driver.execute_script("return document.cookie") == ""  # invisible to scripts
    cells = driver.find_elements(_by().CSS_SELECTOR, "#pool-p .cell")
    assert len(cells) == 2
    assert {c.get_attribute("data-state") for c in cells} == {"idle"}
    assert "st-idle" in cells[0].get_attribute("class")
    shot(driver, "pools")


@pytest.mark.lab
def test_a_running_jobs_progress_bar_updates_live(page, board):
    board.fleet("job", "create", "--id", "live", "--pool", "p")
    page.get(board.base + "/ui/jobs")
    page.execute_script("window.notReloaded = true")
    tasks = [{"id": f"t{i}", "commandLine": "sleep 1"} for i in range(6)]
    board.fleet.add_tasks("live", tasks)
    row = "#job-live .progress"

    def running() -> bool:
        return int(attribute(page, row, "data-running") or 0) > 0

    wait_for(running, 30, message="running tasks on the jobs page")
    shot(page, "jobs-running")
    wait_for(
        lambda: text_of(page, "#job-live .count-succeeded") == "6 succeeded",
        60,
        message="the progress bar to show 6 succeeded",
    )
    assert page.execute_script("return window.notReloaded") is True  # updated in place
    width = attribute(page, "#job-live rect.seg-succeeded", "width")
    assert float(width or 0) == pytest.approx(100.0)
    shot(page, "jobs-done")


@pytest.mark.lab
def test_a_tasks_stdout_shows_up_on_its_page(page, board):
    board.fleet("job", "create", "--id", "out", "--pool", "p")
    board.fleet.add_tasks(
        "out", {"id": "hello", "commandLine": "sh -c 'sleep 2; echo hello-from-the-node'"}
    )
    page.get(board.base + "/ui/jobs/out/tasks/hello")
    wait_for(
        lambda: "hello-from-the-node" in text_of(page, "#stdout"),
        60,
        message="the task's stdout on its page",
    )
    wait_for(lambda: text_of(page, "#task-state") == "completed", 30, message="completed")
    shot(page, "task-output")
    # a task that succeeded cannot be reactivated: the page says why
    page.get(board.base + "/ui/jobs/out/tasks/hello")
    page.find_element(_by().ID, "reactivate").click()
    wait_for(lambda: text_of(page, "#error"), 10, message="the error on the page")
    assert "reactivate" in text_of(page, "#error").lower()


@pytest.mark.lab
def test_disable_and_enable_scheduling_on_a_node_from_the_pools_page(page, board):
    node = board.fleet.json("node", "list", "--pool", "p")[0]["id"]
    cell = f'#pool-p .cell[data-node="{node}"]'
    page.get(board.base + "/")
    page.find_element(_by().CSS_SELECTOR, cell + " button").click()
    wait_for(lambda: "disabled" in (attribute(page, cell, "class") or ""), 10, message="disabled")
    shown = {n["id"]: n for n in board.fleet.json("node", "list", "--pool", "p")}
    assert shown[node]["schedulingState"] == "disabled"
    shot(page, "node-disabled")
    page.find_element(_by().CSS_SELECTOR, cell + " button").click()
    wait_for(lambda: "disabled" not in attribute(page, cell, "class"), 10, message="enabled")
    shown = {n["id"]: n for n in board.fleet.json("node", "list", "--pool", "p")}
    assert shown[node]["schedulingState"] == "enabled"


@pytest.mark.lab
def test_terminate_a_job_from_its_page(page, board):
    board.fleet("job", "create", "--id", "doomed", "--pool", "p")
    board.fleet.add_tasks("doomed", {"id": "long", "commandLine": "sleep 300"})
    wait_for(
        lambda: (
            board.fleet.json("task", "show", "--job", "doomed", "--id", "long")["state"]
            == "running"
        ),
        60,
        message="the long task to run",
    )
    page.get(board.base + "/ui/jobs/doomed")
    page.find_element(_by().ID, "terminate").click()
    wait_for(
        lambda: board.fleet.json("job", "show", "doomed")["state"] == "completed",
        60,
        message="the job to complete",
    )
    job = board.fleet.json("job", "show", "doomed")
    assert job["executionInfo"]["terminateReason"] == "UserTerminate"
    wait_for(lambda: text_of(page, "#job-state") == "completed", 10, message="the page to follow")
    shot(page, "job-terminated")
    page.get(board.base + "/ui/jobs/doomed")
    assert page.find_elements(_by().ID, "terminate") == []  # a completed job has no button


@pytest.mark.lab
def test_html_in_task_ids_command_lines_and_output_is_shown_as_text(page, board):
    board.fleet("job", "create", "--id", "esc", "--pool", "p")
    markup = "<img src=x onerror=alert(1)><b>bold</b>"
    board.fleet.add_tasks("esc", {"id": "html", "commandLine": f"echo '{markup}'"})
    page.get(board.base + "/ui/jobs/esc/tasks/html")
    wait_for(lambda: markup in text_of(page, "#stdout"), 60, message="the output")
    assert markup in text_of(page, "#command-line")
    assert page.find_elements(_by().CSS_SELECTOR, "main img, main b") == []
    # ids cannot hold markup (Azure's id pattern), but a URL can carry any: shown as text
    bad_id = "<img src=x onerror=alert(2)>"
    page.get(board.base + "/ui/jobs/esc/tasks/" + urllib.parse.quote(bad_id))
    assert bad_id in text_of(page, "#error")
    assert page.find_elements(_by().CSS_SELECTOR, "main img") == []
    shot(page, "escaped")


@pytest.mark.lab
def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(page, board):
    board.fleet("job", "create", "--id", "kept", "--pool", "p")
    cookie = page.get_cookie("fleet_session")
    session = {"cookie": f"fleet_session={cookie['value']}", "origin": board.base}
    assert board.post("/ui/jobs/kept/terminate", {}, session) == 403
    assert board.post("/ui/jobs/kept/terminate", {"csrf": "0" * 64}, session) == 403
    page.get(board.base + "/ui/jobs/kept")
    token = page.find_element(_by().CSS_SELECTOR, "form.action input[name=csrf]")
    form = {"csrf": token.get_attribute("value")}
    elsewhere = session | {"origin": "http://evil.example"}
    assert board.post("/ui/jobs/kept/terminate", form, elsewhere) == 403
    assert board.fleet.json("job", "show", "kept")["state"] == "active"
    assert board.post("/ui/jobs/kept/terminate", form, session) == 303  # the real form works
    wait_for(
        lambda: board.fleet.json("job", "show", "kept")["state"] in ("terminating", "completed"),
        10,
        message="the job to terminate",
    )


# -- the pure parts: tokens, the login limit, progress bars


def _tampered(token: str, how: str) -> str:
    account, expires, sid, signature = token.split(".")
    return {
        "account": f"other.{expires}.{sid}.{signature}",
        "expiry": f"{account}.{int(expires) + 1}.{sid}.{signature}",
        "id": f"{account}.{expires}.{'0' * 32}.{signature}",
        "signature": f"{account}.{expires}.{sid}.{'0' * 64}",
        "missing": "",
        "garbage": "<script>",
    }[how]


@pytest.mark.parametrize("how", ["account", "expiry", "id", "signature", "missing", "garbage"])
def test_a_tampered_session_token_is_refused(how):
    sessions = Sessions(b"k" * 32)
    session, token = sessions.issue("alice", 1000.0)
    assert sessions.check(token, 1001.0) == session
    assert sessions.check(_tampered(token, how), 1001.0) is None


def test_session_tokens_expire_are_revoked_and_die_with_the_server_secret():
    sessions = Sessions()
    session, token = sessions.issue("alice", 1000.0)
    assert sessions.check(token, session.expires - 1) == session
    assert sessions.check(token, session.expires) is None
    assert Sessions().check(token, 1001.0) is None  # a restart makes a new secret
    sessions.revoke(session, 1001.0)
    assert sessions.check(token, 1002.0) is None


def test_csrf_tokens_belong_to_one_session():
    sessions = Sessions()
    one, _ = sessions.issue("alice", 1000.0)
    two, _ = sessions.issue("alice", 1000.0)
    assert sessions.csrf_ok(one, sessions.csrf(one))
    assert not sessions.csrf_ok(one, sessions.csrf(two))
    assert not sessions.csrf_ok(one, None)


@pytest.mark.parametrize(
    ("secure", "expected"),
    [
        (False, "fleet_session=T; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"),
        (True, "fleet_session=T; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"),
    ],
)
def test_the_session_cookie_is_http_only_strict_and_secure_under_tls(secure, expected):
    assert cookie("T", secure, max_age=60) == expected


def test_failed_logins_empty_an_addresss_bucket_which_refills_with_time():
    limiter = LoginLimiter(burst=3, refill=10.0)
    for _ in range(3):
        assert limiter.allowed("10.0.0.1", 100.0)
        limiter.failed("10.0.0.1", 100.0)
    assert not limiter.allowed("10.0.0.1", 100.0)
    assert limiter.allowed("10.0.0.2", 100.0)  # per address
    assert not limiter.allowed("10.0.0.1", 109.0)
    assert limiter.allowed("10.0.0.1", 110.0)


@pytest.mark.parametrize(
    ("counts", "widths"),
    [
        ({"active": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}, [0, 0, 0, 0]),
        ({"active": 2, "running": 1, "completed": 1, "succeeded": 1, "failed": 0}, [25, 0, 25, 50]),
        ({"active": 0, "running": 0, "completed": 4, "succeeded": 3, "failed": 1}, [75, 25, 0, 0]),
    ],
)
def test_progress_bar_segments_share_the_bar_by_task_counts(counts, widths):
    bar = progress(counts)
    assert [s["kind"] for s in bar] == ["succeeded", "failed", "running", "active"]
    assert [s["width"] for s in bar] == pytest.approx(widths)
    assert [s["x"] for s in bar] == pytest.approx([sum(widths[:i]) for i in range(4)])
