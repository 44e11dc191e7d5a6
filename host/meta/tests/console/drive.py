"""Drives the operator console (/ui) of a running meta member in headless
Chromium through Selenium, for host/meta/tests/console_browser.rs (which
starts the cluster, passes its facts as arguments and checks the cluster's
state afterwards through the API).

Exits 0 and prints one JSON line ({"epoch": N, ...}) when every check held;
raises (exit 1, with the reason) otherwise. Screenshots of each view go to
--out.
"""

import argparse
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("--url", required=True, help="base URL of the meta member, e.g. http://127.0.0.1:7101")
p.add_argument("--token", required=True)
p.add_argument("--out", required=True, help="screenshot directory")
p.add_argument("--component", required=True, help="a .wasm strategy component to upload through the file picker")
p.add_argument("--candidate", required=True, help="name of the uploaded strategy to preview and activate")
p.add_argument("--members", type=int, required=True)
p.add_argument("--nodes", type=int, required=True)
p.add_argument("--chromium", default="/usr/bin/chromium")
p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
p.add_argument("--timeout", type=float, default=60)
args = p.parse_args()
os.makedirs(args.out, exist_ok=True)

options = webdriver.ChromeOptions()
options.binary_location = args.chromium
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
          "--no-first-run", "--disable-extensions", "--disable-background-networking"):
    options.add_argument(a)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
# The page re-renders its tables as data arrives: an element read a moment
# ago may be gone; a wait tries again.
wait = WebDriverWait(driver, args.timeout, poll_frequency=0.1,
                     ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
log = []  # every browser log entry seen, for the report


def severe(allowed=()):
    """The SEVERE browser log entries since the last call, except those
    containing one of `allowed`."""
    entries = driver.get_log("browser")
    log.extend(entries)
    return [e for e in entries if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def expect_no_errors(step, allowed=()):
    bad = severe(allowed)
    if bad:
        raise AssertionError(f"{step}: console errors: {json.dumps(bad, indent=1)}")


def shot(name):
    driver.save_screenshot(os.path.join(args.out, name + ".png"))


def view(name):
    driver.execute_script("location.hash = arguments[0]", "#" + name)
    wait.until(lambda d: "active" in d.find_element(By.ID, "view-" + name).get_attribute("class"))


def rows(table):
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


def text(id_):
    return driver.find_element(By.ID, id_).text


def until(what, cond):
    try:
        return wait.until(lambda d: cond())
    except Exception as e:
        raise AssertionError(f"timed out waiting for {what}") from e


try:
    # 1. Cluster: members with a leader, three nodes, the epoch; no errors.
    driver.get(args.url + "/ui")
    until("the summary to name a leader", lambda: "leader " in text("summary") and "no leader" not in text("summary"))
    until(f"{args.members} members", lambda: len(rows("members")) == args.members)
    until(f"{args.nodes} nodes", lambda: len(rows("nodes")) == args.nodes)
    until("a leader badge", lambda: any("leader" in r.text for r in rows("members")))
    until("the raft event stream", lambda: "raft event stream" in text("live"))
    epoch0 = int(driver.find_element(By.ID, "summary").get_attribute("data-epoch"))
    shot("cluster")
    expect_no_errors("page load")

    # 2. An action without the token is refused and the refusal shown.
    first = rows("nodes")[0]
    node_id = first.get_attribute("data-node")
    first.find_element(By.CSS_SELECTOR, "button.act-state").click()
    until("the refusal", lambda: "error" in driver.find_element(By.ID, "cluster-msg").get_attribute("class"))
    refusal = text("cluster-msg")
    if "HTTP 401" not in refusal or "missing bearer token" not in refusal:
        raise AssertionError(f"refusal shown as {refusal!r}")
    shot("cluster-refused")
    # The browser logs the 401 answer itself; nothing else.
    expect_no_errors("refused action", allowed=("401 (Unauthorized)",))

    # 3. The token, typed once for this tab.
    driver.find_element(By.ID, "token-input").send_keys(args.token)
    driver.find_element(By.ID, "token-save").click()
    until("the token state", lambda: "token set" in text("token-state"))

    # 4. Strategies: upload through the file picker.
    view("strategies")
    until("the registry listed", lambda: len(rows("strategies")) >= 1)
    if any(r.text.startswith(args.candidate + " ") for r in rows("strategies")):
        raise AssertionError(f"{args.candidate} is listed before its upload")
    driver.find_element(By.ID, "upload-file").send_keys(os.path.abspath(args.component))
    until("the upload message", lambda: "stored as" in text("strategies-msg"))
    until("the uploaded strategy listed", lambda: any(r.text.startswith(args.candidate + " ") for r in rows("strategies")))
    until("the active badge", lambda: any("active" in r.text for r in rows("strategies")))
    shot("strategies")

    # 5. Preview the candidate: chart of load per node, share that moves.
    view("preview")
    select = Select(driver.find_element(By.ID, "pv-strategy"))
    option = next(o for o in select.options if o.text.startswith(args.candidate + " "))
    select.select_by_value(option.get_attribute("value"))
    driver.find_element(By.ID, "pv-run").click()
    until("the preview chart", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#load-chart g.node-row")) == args.nodes)
    bars = driver.find_elements(By.CSS_SELECTOR, "#load-chart rect.after")
    if sum(float(b.get_attribute("width")) for b in bars) <= 0:
        raise AssertionError("the chart's bars have no width")
    moved = text("moved-share")
    if "%" not in moved:
        raise AssertionError(f"moved share shown as {moved!r}")
    shot("preview")

    # 6. Activate: the new epoch shows, and the proxy converges on it.
    driver.find_element(By.ID, "pv-activate").click()
    until("the activation receipt", lambda: "activated" in text("preview-msg") or "error" in
          driver.find_element(By.ID, "preview-msg").get_attribute("class"))
    receipt = text("preview-msg")
    if "activated" not in receipt:
        raise AssertionError(f"activation: {receipt!r}")
    epoch = int(receipt.split("epoch ")[1].split(" ")[0])
    if epoch <= epoch0:
        raise AssertionError(f"epoch {epoch} after activation, {epoch0} before")
    until(f"epoch {epoch} in the header", lambda: driver.find_element(By.ID, "summary").get_attribute("data-epoch") == str(epoch))
    view("proxies")
    until(f"a proxy converged on epoch {epoch}", lambda: any(
        r.get_attribute("data-epoch") == str(epoch) and r.get_attribute("data-converged") == "true" for r in rows("proxies")))
    shot("proxies")

    # 7. History: the activation is the routing in force.
    view("history")
    until("two history entries", lambda: len(rows("history")) >= 2)
    top = until("the history's first row", lambda: (rows("history")[0].get_attribute("data-epoch"), rows("history")[0].text))
    if top[0] != str(epoch) or args.candidate not in top[1]:
        raise AssertionError(f"history starts with {top!r}")
    shot("history")

    # 8. Key lookup: owners under the active routing and the candidate.
    view("lookup")
    driver.find_element(By.ID, "lookup-key").send_keys("user:42")
    driver.find_element(By.ID, "lookup-candidate").click()
    driver.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
    until("the owners", lambda: "node-" in text("lookup-result"))
    if "candidate: node-" not in text("lookup-result"):
        raise AssertionError(f"lookup shows {text('lookup-result')!r}")
    shot("lookup")

    # 9. Roll back to the first routing, confirming the dialog.
    view("history")
    moved = until("the activation's moved share", lambda: rows("history")[0].find_elements(By.TAG_NAME, "td")[5].text)
    if not moved.endswith("%"):
        raise AssertionError(f"moved share shown as {moved!r}")
    until("a rollback button", lambda: rows("history")[1].find_element(By.TAG_NAME, "button")).click()
    alert = wait.until(lambda d: d.switch_to.alert)
    if "Roll back to the routing of epoch" not in alert.text:
        raise AssertionError(f"confirmation reads {alert.text!r}")
    alert.accept()
    until("the rollback receipt", lambda: "rolled back" in text("history-msg"))
    rollback_epoch = int(text("history-msg").rsplit("now epoch ", 1)[1].split()[0])
    until(f"epoch {rollback_epoch} in the header",
          lambda: driver.find_element(By.ID, "summary").get_attribute("data-epoch") == str(rollback_epoch))
    until("the rollback in the history", lambda: rows("history")[0].get_attribute("data-epoch") == str(rollback_epoch))
    shot("history-rollback")

    view("cluster")
    shot("cluster-after")
    expect_no_errors("after the token")
    print(json.dumps({"epoch": epoch, "rollback_epoch": rollback_epoch, "moved": moved, "refused_node": node_id,
                      "log_entries": len(log)}))
except Exception:
    try:
        shot("failure")
        sys.stderr.write("browser log: " + json.dumps(log + driver.get_log("browser"), indent=1) + "\n")
    except Exception:
        pass
    raise
finally:
    driver.quit()
