"""A headless Chromium driven through chromedriver's W3C WebDriver HTTP interface (no client
library): open a page, click what a reader clicks, read the rendered DOM, frames included."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator

CHROMIUM = os.environ.get("STREAMVC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("STREAMVC_CHROMEDRIVER", "/usr/bin/chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


def missing() -> str | None:
    """Why no browser test can run here (None: it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) or shutil.which(path)):
            return f"{path} is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does it)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    def __init__(self, url: str) -> None:
        self.url = url
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required"]}}}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as err:
            raise AssertionError(f"webdriver {method} {path}: {err.read().decode()[:500]}") from None

    def command(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self.command("POST", "/url", {"url": url})

    def run(self, script: str, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, xpath: str, timeout: float = 20.0) -> dict:
        """The first element at ``xpath``, waiting for the page to render it."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.command("POST", "/elements", {"using": "xpath", "value": xpath})
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing at {xpath} after {timeout:g} s")
            time.sleep(0.2)

    def click(self, xpath: str) -> None:
        element = self.find(xpath)
        self.run("arguments[0].scrollIntoView(); arguments[0].click();", element)

    def enter_frame(self, xpath: str = "//iframe") -> None:
        self.command("POST", "/frame", {"id": self.find(xpath)})

    def leave_frames(self) -> None:
        self.command("POST", "/frame", {"id": None})

    def text(self) -> str:
        return self.run("return document.body.innerText;")

    def quit(self) -> None:
        self.command("DELETE", "")


@contextmanager
def browser() -> Iterator[Browser]:
    port = _free_port()
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/status", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        b = Browser(url)
        try:
            yield b
        finally:
            b.quit()
    finally:
        driver.terminate()
        driver.wait(timeout=30)
