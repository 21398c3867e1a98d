# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Load every page of the built site in headless Chromium (run by scripts/publish.sh).

    docs_browser.py HTML_DIR SHOTS_DIR PAGE...

Serves HTML_DIR on 127.0.0.1 only, drives Debian's chromium over the DevTools
protocol, and for every page checks: it loads, every image is decoded
(``naturalWidth > 0``), no request of the site fails (style sheets, scripts,
fonts, images), every link into the site reaches a page (and its ``#anchor``
exists on it). Links to other hosts are counted, never followed (the machine
is offline). Saves a screenshot of each PAGE (paths relative to HTML_DIR) in
SHOTS_DIR. Exits 1 on any broken link or image.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import websocket

PROBE = """(() => {
  const imgs = [...document.images].map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  return JSON.stringify({title: document.title, imgs, links});
})()"""


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class Browser:
    def __init__(self, profile: str) -> None:
        self.proc = subprocess.Popen(
            [
                os.environ.get("CHROMIUM", "chromium"),
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--user-data-dir=" + profile,
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(profile, "DevToolsActivePort")
        for attempt in range(300):  # noqa: B007
            if port_file.exists() and port_file.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split("\n")[0])
        targets = json.load(urllib.request.urlopen("http://127.0.0.1:%d/json" % port))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.seq = 0
        self.events: list[dict] = []
        for domain in ("Page", "Network", "Runtime"):
            self.call(domain + ".enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: object) -> dict:
        self.seq += 1
        self.ws.send(json.dumps({"id": self.seq, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.seq:
                if "error" in msg:
                    raise RuntimeError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        end = time.time() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.time() > end:
                raise TimeoutError(method)
            self.events.append(json.loads(self.ws.recv()))

    def load(self, url: str) -> list[dict]:
        self.events = []
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        time.sleep(0.2)  # late image decodes
        return self.events

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(10)


def main() -> int:
    html, shots = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    wanted_shots = sys.argv[3:]
    shots.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d/" % server.server_address[1]
    pages = sorted(str(p.relative_to(html)) for p in html.rglob("*.html"))
    broken: list[str] = []
    images = external = internal = 0
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(profile)
        try:
            for page in pages:
                events = browser.load(base + page)
                for e in events:
                    if e.get("method") == "Network.loadingFailed" and not e["params"].get("canceled"):
                        broken.append("%s: a request failed (%s)" % (page, e["params"].get("errorText")))
                    if e.get("method") == "Network.responseReceived":
                        resp = e["params"]["response"]
                        if resp["url"].startswith(base) and resp["status"] >= 400:
                            broken.append("%s: %s answered %d" % (page, resp["url"], resp["status"]))
                probe = browser.call("Runtime.evaluate", expression=PROBE, returnByValue=True)
                info = json.loads(probe["result"]["value"])
                for img in info["imgs"]:
                    images += 1
                    if not img["ok"]:
                        broken.append("%s: image %s not shown" % (page, img["src"]))
                for link in info["links"]:
                    if not link.startswith(base):
                        external += 1
                        continue
                    internal += 1
                    problem = check_link(html, base, link)
                    if problem:
                        broken.append("%s: link %s %s" % (page, link[len(base) :], problem))
                if page in wanted_shots:
                    data = browser.call("Page.captureScreenshot", format="png")["data"]
                    out = shots / (page.replace("/", "_").replace(".html", ".png"))
                    out.write_bytes(base64.b64decode(data))
                    print("screenshot %s: %s (%s)" % (page, out, info["title"]))
        finally:
            browser.close()
            server.shutdown()
    for b in broken:
        print("BROKEN " + b)
    print(
        "browser check: %d pages loaded, %d images shown, %d internal links checked, %d external links not followed, "
        "%d broken" % (len(pages), images, internal, external, len(broken))
    )
    return 1 if broken else 0


@functools.cache
def page_text(path: Path) -> str:
    return path.read_text(errors="replace")


def check_link(html: Path, base: str, link: str) -> str | None:
    parsed = urllib.parse.urlparse(link)
    rel = urllib.parse.unquote(parsed.path[len(urllib.parse.urlparse(base).path) :])
    target = html / rel
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return "leads nowhere"
    if parsed.fragment and target.suffix == ".html":
        anchor = urllib.parse.unquote(parsed.fragment)
        text = page_text(target)
        if 'id="%s"' % anchor not in text and 'name="%s"' % anchor not in text:
            return "has no anchor #%s" % anchor
    return None


if __name__ == "__main__":
    sys.exit(main())
