"""The README's explorer screenshots: `dropclass explore` on given checkpoints at 1280x800, two models side by side
(the DropClass model and the baseline, or with --bite the two DropClass models), one class dropped in a chosen scene.
Needs Voila, Playwright and Debian's chromium.

    python docs/screenshot.py --baseline B.pt --dropclass D.pt --drop vegetation --inspect vegetation --scene 2 \
        --out docs/images/explorer.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True)
    p.add_argument("--dropclass", required=True)
    p.add_argument("--bite", default=None)
    p.add_argument("--drop", default="car", help="the class to drop (default car)")
    p.add_argument("--inspect", default=None, help="the class to inspect (default: the page's)")
    p.add_argument("--scene", type=int, default=1, help="the scene, numbered from 1 as in the page (default 1)")
    p.add_argument("--size", default="1280x800", help="browser window, WxH")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright
    from dropclass.app import BITE_NAME

    port, log = _free_port(), Path(tempfile.mkdtemp()) / "explore.log"
    cmd = [sys.executable, "-m", "dropclass.cli", "explore", "--baseline", args.baseline, "--dropclass", args.dropclass,
           "--port", str(port), "--no-browser", "--length", str(max(4, args.scene))]
    if args.bite: cmd += ["--bite", args.bite]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while f"localhost:{port}" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline: raise SystemExit(f"explore did not start:\n{log.read_text()}")
            time.sleep(0.5)
        w, h = map(int, args.size.split("x"))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": w, "height": h}, device_scale_factor=1)
            for _ in range(120):
                try:
                    page.goto(f"http://localhost:{port}/", timeout=60_000)
                    break
                except Exception: time.sleep(1)
            drop = page.get_by_role("combobox", name="drop class", exact=True)
            drop.wait_for(state="visible", timeout=300_000)

            def drawn(action):
                "Do `action` in the page and wait until the panels show it: the busy cue comes, then goes."
                action()
                try: page.locator(".dropclass-busy").wait_for(state="attached", timeout=10_000)
                except Exception: pass  # drawn before we looked
                page.locator(".dropclass-busy").wait_for(state="detached", timeout=120_000)
                page.wait_for_timeout(800)

            if args.bite: drawn(lambda: page.get_by_role("combobox", name="beside it", exact=True).select_option(BITE_NAME))
            if args.scene != 1:
                drawn(lambda: page.get_by_role("spinbutton", name="scene", exact=True).fill(str(args.scene)) or page.keyboard.press("Enter"))
            def choose(control, name: str):
                "Choose the class `name` in a class list (its options read 'name · in ground truth' and the like)."
                options = control.evaluate("e => [...e.options].map(o => o.text)")
                label = next((o for o in options if o.replace("\xa0", " ").split(" · ")[0] == name), None)  # spaces do not break
                if label is None: raise SystemExit(f"no class {name!r} in the list; it has {options}")
                drawn(lambda: control.select_option(label=label))

            choose(drop, args.drop)
            if args.inspect: choose(page.get_by_role("combobox", name="inspect class", exact=True), args.inspect)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    print(f"wrote {args.out} ({w}x{h})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
