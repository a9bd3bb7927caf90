"""The README's explorer screenshots: `dropclass explore` on given checkpoints, one class dropped in the first scene, a
screenshot per model, side by side in one PNG. Needs Voila, Playwright and Debian's chromium.

    python docs/screenshot.py --baseline B.pt --dropclass D.pt --bite E.pt --drop car --out docs/images/explorer_bite.png
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
    p.add_argument("--size", default="1500x1000", help="browser window, WxH")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from PIL import Image
    from playwright.sync_api import sync_playwright
    from dropclass.app import BITE_NAME

    port, log = _free_port(), Path(tempfile.mkdtemp()) / "explore.log"
    cmd = [sys.executable, "-m", "dropclass.cli", "explore", "--baseline", args.baseline, "--dropclass", args.dropclass,
           "--port", str(port), "--no-browser", "--length", "4"]
    if args.bite: cmd += ["--bite", args.bite]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    shots = []
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
            drop = page.locator(".dropclass-drop select")
            drop.wait_for(state="visible", timeout=300_000)
            changed = lambda: page.locator("img.dropclass-changed-panel").get_attribute("src")

            def after(action):
                old = changed()
                action()
                page.wait_for_function("old => document.querySelector('img.dropclass-changed-panel').src !== old", arg=old, timeout=120_000)
                page.wait_for_timeout(800)

            names = ["DropClass"] + ([BITE_NAME] if args.bite else [])
            for name in names:
                page.get_by_role("button", name=name, exact=True).click()
                page.wait_for_timeout(3000)
                options = drop.evaluate("e => [...e.options].map(o => o.text)")
                label = next((o for o in options if o.replace("\xa0", " ").split(" (")[0] == args.drop), None)  # the page's spaces do not break
                if label is None: raise SystemExit(f"no class {args.drop!r} to drop; the list has {options}")
                if drop.evaluate("e => e.options[e.selectedIndex].text") != label: after(lambda: drop.select_option(label=label))
                shot = Path(tempfile.mkdtemp()) / f"{len(shots)}.png"
                page.screenshot(path=str(shot))
                shots.append(shot)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    images = [Image.open(s) for s in shots]
    out = Image.new("RGB", (sum(i.width for i in images) + 20 * (len(images) - 1), max(i.height for i in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + 20
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out.save(args.out)
    print(f"wrote {args.out} ({out.width}x{out.height}) from {len(images)} screenshots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
