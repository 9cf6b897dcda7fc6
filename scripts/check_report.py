"""Render a geomxai report in headless Chromium and check that every figure loaded.

    python scripts/check_report.py reports/quick/index.html [--screenshot shot.png]

Chromium opens a small page that loads the report in a frame, waits for it, and writes into its
own DOM how many <img> elements the report has and how many decoded with a non-zero size;
``--dump-dom`` hands that back. Exit status 0 when every figure rendered. Needs Debian's
``chromium`` package (``apt-get install chromium``); the network is never used.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--virtual-time-budget=15000",
]

WIDTH = 1200
PROBE = """<!doctype html><html><body><iframe id='r' src='{src}' width='1200' height='900'></iframe>
<pre id='out'>pending</pre><script>
document.getElementById('r').addEventListener('load', () => {{
  const doc = document.getElementById('r').contentDocument;
  const imgs = Array.from(doc.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0);
  document.getElementById('out').textContent = 'RESULT' + JSON.stringify({{
    images: imgs.length, rendered: ok.length,
    missing: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    title: doc.title, headings: Array.from(doc.querySelectorAll('h2')).length,
    height: Math.ceil(Math.max(doc.documentElement.scrollHeight, doc.body.scrollHeight))
  }}) + 'END';
}});
</script></body></html>"""


def screenshot_height(result: dict) -> int:
    """The window height that holds the whole page the probe measured (at least one screen)."""
    return max(int(result.get("height") or 0), 900)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument(
        "--screenshot", type=Path, help="also save a full-page PNG (every section, top to bottom)"
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    index = args.index.resolve()
    if not index.is_file():
        parser.error(f"no report at {index}")
    if not Path(args.chromium).exists():
        parser.error("Chromium not found; install Debian's chromium package")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(PROBE.format(src=index.as_uri()))
        profile = ["--user-data-dir=" + str(Path(tmp) / "profile")]
        out = subprocess.run(
            [args.chromium, *FLAGS, *profile, "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        found = re.search(r"RESULT(.*?)END", out.stdout, re.S)
        if not found:
            print(f"the report did not load in Chromium:\n{out.stderr[-2000:]}", file=sys.stderr)
            return 1
        result = json.loads(found.group(1).replace("&quot;", '"'))
        if args.screenshot:
            # Chromium's screenshot is the window: make it as tall as the page the probe measured
            # at this width, so every section is in it (a fixed height cut the page off).
            subprocess.run(
                [
                    args.chromium,
                    *FLAGS,
                    *profile,
                    f"--window-size={WIDTH},{screenshot_height(result)}",
                    "--hide-scrollbars",
                    f"--screenshot={args.screenshot.resolve()}",
                    index.as_uri(),
                ],
                capture_output=True,
                timeout=120,
            )
    print(json.dumps(result, indent=2))
    return 0 if result["images"] > 0 and result["rendered"] == result["images"] else 1


if __name__ == "__main__":
    sys.exit(main())
