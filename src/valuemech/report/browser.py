"""Open an offline HTML page in headless Chromium: did every image load, were there errors?

No Python dependency: Chromium runs twice at most, once with ``--dump-dom`` (the DOM after the
load event) and, when a screenshot is asked for, once with ``--screenshot``. The page carries two
inline scripts that do the in-page bookkeeping: ``PAGE_ERROR_HOOK_JS`` (first thing in <head>)
records uncaught errors, unhandled rejections, ``console.error`` calls and failed script or
stylesheet loads; ``PAGE_PROBE_JS`` (last thing in <body>) counts images on window load and
writes the results as ``data-*`` attributes on <body>, which ``check_page`` reads back from the
dumped DOM. Chromium's stderr is scanned too: it prints every console message as
``[pid:tid:date:INFO:CONSOLE:LINE] "message", source: URL (LINE)`` — at INFO whatever the
console level, so only ``Uncaught ...`` messages (and any ``ERROR:CONSOLE`` line) count there;
``console.error`` is seen only through the hook.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from valuemech.errors import ValuemechError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
VIRTUAL_TIME_BUDGET_MS = 5000
WINDOW_SIZE = (1280, 2400)
BASE_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--allow-file-access-from-files",
    "--enable-logging=stderr",
    "--v=0",
    f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
    "--no-first-run",
    "--disable-extensions",
)

# First script in <head>: collects errors into window.__valuemechErrors (and re-flushes the
# probe's attribute when an error comes after the load event).
PAGE_ERROR_HOOK_JS = """<script>
(function () {
  var errs = window.__valuemechErrors = [];
  function add(msg) {
    errs.push(String(msg).slice(0, 500));
    if (window.__valuemechFlush) window.__valuemechFlush();
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      if (t.tagName !== 'IMG') add('failed to load <' + t.tagName.toLowerCase() + '> ' + (t.src || t.href || ''));
      return;
    }
    add('Uncaught ' + (e.error && e.error.name ? e.error.name + ': ' : '') +
        (e.error && e.error.message !== undefined ? e.error.message : e.message) +
        ' (' + (e.filename || '') + ':' + (e.lineno || 0) + ')');
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    var r = e.reason;
    add('Unhandled rejection: ' + (r && r.message !== undefined ? r.message : String(r)));
  });
  var original = console.error;
  console.error = function () {
    add('console.error: ' + Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
})();
</script>"""

# Last script in <body>: on window load, counts images and writes the results on <body>.
PAGE_PROBE_JS = """<script>
(function () {
  var body = document.body;
  body.setAttribute('data-probe', 'installed');
  function flush() {
    var errs = window.__valuemechErrors;
    body.setAttribute('data-js-errors', errs ? JSON.stringify(errs) : 'null');
  }
  function done() {
    var imgs = Array.prototype.slice.call(document.images), loaded = 0, broken = [];
    imgs.forEach(function (im) {
      if (im.complete && im.naturalWidth > 0) { loaded++; return; }
      var src = im.getAttribute('src') || im.currentSrc || '';
      broken.push(src.length > 120 ? src.slice(0, 120) + '...' : src);
    });
    body.setAttribute('data-images-total', String(imgs.length));
    body.setAttribute('data-images-loaded', String(loaded));
    body.setAttribute('data-broken', JSON.stringify(broken));
    flush();
    window.__valuemechFlush = flush;
    body.setAttribute('data-probe', 'done');
  }
  if (document.readyState === 'complete') done();
  else window.addEventListener('load', function () { setTimeout(done, 0); });
})();
</script>"""

_CONSOLE_LINE = re.compile(r"^\[[^\]]*:(?P<level>[A-Z0-9]+):CONSOLE[:(]?\d*\)?\] (?P<msg>.*)$")


@dataclass
class PageCheck:
    """What headless Chromium saw on one page. ``problem`` is set when the probe did not report."""

    images_total: int = 0
    images_loaded: int = 0
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    js_errors: list[str] = field(default_factory=list)
    problem: str | None = None
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return (self.problem is None and self.images_loaded == self.images_total
                and not self.broken_images and not self.console_errors and not self.js_errors)

    def summary(self) -> str:
        """One line: 'ok (n images)' or what went wrong."""
        if self.ok:
            return f"ok ({self.images_loaded}/{self.images_total} images loaded, no errors)"
        parts = [self.problem] if self.problem else []
        if self.images_loaded != self.images_total or self.broken_images:
            parts.append(f"{self.images_loaded}/{self.images_total} images loaded, broken: {self.broken_images}")
        parts += [f"console: {m}" for m in self.console_errors] + [f"js: {m}" for m in self.js_errors]
        return "; ".join(parts)


def find_chromium() -> str | None:
    """$VALUEMECH_CHROMIUM (a name or a path), else chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("VALUEMECH_CHROMIUM")
    if env:
        found = shutil.which(env)
        if found is None:
            raise ValuemechError(f"VALUEMECH_CHROMIUM={env} is not an executable")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_command(binary: str, url: str, user_data_dir: Path, screenshot: Path | None = None) -> list[str]:
    """The command line: --dump-dom, or --screenshot=PATH at WINDOW_SIZE when a path is given."""
    cmd = [binary, *BASE_FLAGS, f"--user-data-dir={user_data_dir}"]
    if screenshot is None:
        cmd.append("--dump-dom")
    else:
        cmd += [f"--screenshot={screenshot}", f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}", "--hide-scrollbars"]
    return [*cmd, url]


def _run(cmd: list[str], timeout: float, what: str) -> tuple[str, str]:
    """Run Chromium in its own process group (killed whole on timeout); (stdout, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ValuemechError(f"chromium timed out after {timeout:g}s on {what}") from None
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = " | ".join(l for l in stderr.splitlines()[-3:] if l.strip())
        raise ValuemechError(f"chromium exited with {proc.returncode} on {what}: {tail}")
    return stdout, stderr


def console_errors(stderr: str) -> list[str]:
    """Console messages at ERROR/FATAL level or starting with "Uncaught", from Chromium's log."""
    found = []
    for line in stderr.splitlines():
        m = _CONSOLE_LINE.match(line.strip())
        if m and (m["level"] in ("ERROR", "FATAL") or m["msg"].lstrip('"').startswith("Uncaught")):
            found.append(m["msg"])
    return found


class _BodyAttrs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.attrs: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body" and self.attrs is None:
            self.attrs = {k: v or "" for k, v in attrs}


def parse_probe(dom: str) -> PageCheck:
    """The probe's attributes on <body> of a dumped DOM, as a PageCheck (``problem`` if absent)."""
    parser = _BodyAttrs()
    parser.feed(dom)
    attrs = parser.attrs or {}
    state = attrs.get("data-probe")
    if state is None:
        return PageCheck(problem="no probe result on <body>: the page does not embed PAGE_PROBE_JS")
    if state != "done":
        return PageCheck(problem=f"the load event did not fire within {VIRTUAL_TIME_BUDGET_MS} ms (probe state {state!r})")
    try:
        check = PageCheck(images_total=int(attrs["data-images-total"]), images_loaded=int(attrs["data-images-loaded"]),
                          broken_images=list(json.loads(attrs["data-broken"])))
        errors = json.loads(attrs["data-js-errors"])
    except (KeyError, ValueError, TypeError) as e:
        return PageCheck(problem=f"malformed probe attributes on <body>: {e}")
    if errors is None:
        check.problem = "no error hook: the page does not embed PAGE_ERROR_HOOK_JS in <head>"
    else:
        check.js_errors = [str(m) for m in errors]
    return check


def check_page(html_path: Path, screenshot: Path | None = None, timeout: float = 60) -> PageCheck:
    """Load ``html_path`` in headless Chromium; images, errors, and optionally a PNG screenshot.

    ``timeout`` bounds each Chromium run. Raises ValuemechError if Chromium is missing, fails or
    times out, or the page does not exist; a page without the probe scripts gives ``ok`` False.
    """
    html_path = Path(html_path)
    if not html_path.is_file():
        raise ValuemechError(f"{html_path}: no such HTML file")
    binary = find_chromium()
    if binary is None:
        raise ValuemechError("chromium not found: install Debian's chromium (`make browser`) "
                             "or set VALUEMECH_CHROMIUM to a Chromium/Chrome executable")
    url = html_path.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="valuemech-chromium-", ignore_cleanup_errors=True) as tmp:
        dom, stderr = _run(chromium_command(binary, url, Path(tmp) / "dom"), timeout, str(html_path))
        check = parse_probe(dom)
        check.console_errors = console_errors(stderr)
        if screenshot is not None:
            screenshot = Path(screenshot).resolve()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.unlink(missing_ok=True)
            _run(chromium_command(binary, url, Path(tmp) / "shot", screenshot), timeout, f"screenshot of {html_path}")
            if not screenshot.is_file() or screenshot.stat().st_size == 0:
                raise ValuemechError(f"chromium wrote no screenshot to {screenshot}")
            check.screenshot = screenshot
    return check
