"""Headless Chromium check of small offline pages: images counted, errors caught, screenshot kept."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from valuemech.errors import ValuemechError
from valuemech.report.browser import (
    PAGE_ERROR_HOOK_JS,
    PAGE_PROBE_JS,
    check_page,
    console_errors,
    find_chromium,
    parse_probe,
)

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (`make browser` installs Debian's chromium)")


def _png(path: Path, w: int = 40, h: int = 20) -> None:
    """A valid RGB PNG, a red-to-blue gradient, without matplotlib."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"".join(bytes((255 * x // w, 0, 255 - 255 * x // w)) for x in range(w)) for _ in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _page(path: Path, body: str, head: str = PAGE_ERROR_HOOK_JS, probe: str = PAGE_PROBE_JS) -> Path:
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'>{head}</head>"
                    f"<body><h1>Report</h1>{body}{probe}</body></html>", encoding="utf-8")
    return path


def test_parse_probe_and_console_lines() -> None:
    dom = ('<html><head></head><body data-probe="done" data-images-total="2" data-images-loaded="1" '
           'data-broken="[&quot;a,b.png&quot;]" data-js-errors="[&quot;console.error: x&quot;]"></body></html>')
    check = parse_probe(dom)
    assert (check.images_total, check.images_loaded, check.broken_images, check.js_errors, check.problem) == \
        (2, 1, ["a,b.png"], ["console.error: x"], None)
    assert not check.ok
    assert "PAGE_PROBE_JS" in parse_probe("<html><body></body></html>").problem
    assert "load event" in parse_probe('<body data-probe="installed">').problem
    stderr = ('[1:1:1128/125903.336903:INFO:CONSOLE:1] "hello", source: file:///p.html (1)\n'
              '[1:1:1128/125903.340326:INFO:CONSOLE:4] "Uncaught Error: boom", source: file:///p.html (4)\n'
              '[1:2:1128/125902.550846:ERROR:dbus/bus.cc:405] Failed to connect to the bus\n'
              '[1:1:1128/125903.3:ERROR:CONSOLE(7)] "x", source: file:///p.html (7)\n')
    assert console_errors(stderr) == ['"Uncaught Error: boom", source: file:///p.html (4)',
                                      '"x", source: file:///p.html (7)']


def test_missing_chromium_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = _page(tmp_path / "p.html", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VALUEMECH_CHROMIUM", raising=False)
    assert find_chromium() is None
    with pytest.raises(ValuemechError, match="chromium not found"):
        check_page(page)
    monkeypatch.setenv("VALUEMECH_CHROMIUM", str(tmp_path / "nope"))
    with pytest.raises(ValuemechError, match="VALUEMECH_CHROMIUM"):
        find_chromium()


@needs_chromium
def test_good_page_ok_with_screenshot(tmp_path: Path) -> None:
    _png(tmp_path / "fig.png")
    (tmp_path / "figs").mkdir()
    _png(tmp_path / "figs" / "b.png", 300, 200)
    page = _page(tmp_path / "good.html", "<img src='fig.png'><p>text</p><img src='figs/b.png'>")
    shot = tmp_path / "shot.png"
    check = check_page(page, screenshot=shot)
    assert (check.images_total, check.images_loaded, check.broken_images) == (2, 2, [])
    assert (check.console_errors, check.js_errors, check.problem) == ([], [], None)
    assert check.ok and check.summary().startswith("ok (2/2")
    assert check.screenshot == shot.resolve()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert struct.unpack(">II", data[16:24]) == (1280, 2400)


@needs_chromium
def test_broken_image_and_errors_caught(tmp_path: Path) -> None:
    _png(tmp_path / "fig.png")
    page = _page(tmp_path / "bad.html", "<img src='fig.png'><img src='missing.png'>"
                 "<script>console.error('bad');</script><script>throw new Error('boom');</script>")
    url, line = page.resolve().as_uri(), page.read_text().split("throw new")[0].count("\n") + 1
    check = check_page(page)
    assert (check.images_total, check.images_loaded, check.broken_images) == (2, 1, ["missing.png"])
    assert check.js_errors == ["console.error: bad", f"Uncaught Error: boom ({url}:{line})"]
    assert check.console_errors == [f'"Uncaught Error: boom", source: {url} ({line})']
    assert check.problem is None and not check.ok


@needs_chromium
def test_page_without_probe_fails(tmp_path: Path) -> None:
    _png(tmp_path / "fig.png")
    bare = _page(tmp_path / "bare.html", "<img src='fig.png'>", head="", probe="")
    check = check_page(bare)
    assert not check.ok and "PAGE_PROBE_JS" in check.problem
    no_hook = _page(tmp_path / "nohook.html", "<img src='fig.png'>", head="")
    check = check_page(no_hook)
    assert not check.ok and "PAGE_ERROR_HOOK_JS" in check.problem and check.images_loaded == 1
