"""Headless Chromium for looking at the reports as a person would, with every network request caught.

Chromium is pointed at a proxy on loopback that only records what reaches it: a page that loads anything from the
network (a CDN script, a font) shows up there, while file:// and data: resources never do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,"
    "AutofillServerCommunication,SigninInterceptBubbleV2,ChromeSignin,UpdateClient",
)


def chromium() -> str:
    """The Chromium binary; in CI it must be there (.ci/run installs it), elsewhere the test skips without it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed (.ci/run installs it with apt)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


# Chromium's own calls home, which no flag of these builds turns off: extension updates, sign-in, and since Chromium
# 150 an eligibility check on start-up (GET www.google.com/async/folae, seen in its net log on a blank page). A page
# never has a reason to load anything from these hosts, so they are not counted as the page's requests.
BROWSER_OWN_HOSTS = ("update.googleapis.com", "accounts.google.com", "www.google.com:443")


def page_requests(requests: list[str]) -> list[str]:
    return [line for line in requests if not any(host in line for host in BROWSER_OWN_HOSTS)]


class RecordingProxy:
    """A loopback HTTP proxy that answers nothing and remembers the first line of every request."""

    def __init__(self):
        self.requests: list[str] = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except OSError:
                continue
            with connection:
                connection.settimeout(1)
                try:
                    received = connection.recv(4096)
                    # Closed before sending a byte: a connection the browser opened ahead of need (or one of its
                    # calls home) and dropped as it exited, so nothing was requested (seen once in CI, as '').
                    if received:
                        self.requests.append(received.split(b"\r\n")[0].decode(errors="replace"))
                except OSError:
                    self.requests.append("(a connection without a request)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


def render(page: Path, screenshot: Path | None = None, width: int = 1280, height: int = 2400) -> tuple[str, list[str]]:
    """(the DOM after load, the network requests the page made) for a local HTML page; optionally a screenshot."""
    proxy = RecordingProxy()
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            command = [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--proxy-server=http://127.0.0.1:{proxy.port}",
                "--proxy-bypass-list=<-loopback>",
                f"--window-size={width},{height}",
                "--virtual-time-budget=3000",
            ]
            if screenshot is not None:
                subprocess.run(
                    [*command, f"--screenshot={screenshot}", page.resolve().as_uri()],
                    capture_output=True,
                    timeout=120,
                    check=True,
                )
            dom = subprocess.run(
                [*command, "--dump-dom", page.resolve().as_uri()],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
    finally:
        proxy.close()
    return dom, page_requests(proxy.requests)
