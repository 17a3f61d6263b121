"""The offline HTML view of ``valuemech monitor``: tokens coloured by one value's z-score, and the most value-laden responses.

Self-contained (inline CSS and script, no network). Each token's background is its z-score on the
chosen value and component (red: more along the axis than the run's responses, blue: less; full
colour at |z| >= 3); hovering shows the number. The colours of the value and component given on the
command line are in the HTML itself; a small inline script re-colours for another choice.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from valuemech.io import atomic_write_text
from valuemech.monitor import MONITOR_COMPONENTS, Scored, Stats, top_responses
from valuemech.report.page import html_page

SATURATE = 3.0
EXTRA_CSS = """<style>.tok{white-space:pre-wrap;border-radius:2px}.resp{border:1px solid #ddd;padding:.5em;
margin:.6em 0;font-family:ui-monospace,monospace;font-size:.85em;line-height:1.7}.rid{color:#555;font-size:.8em}</style>"""

SCRIPT = """<script>
(function () {
  var data = JSON.parse(document.getElementById('monitor-data').textContent);
  function ok(z) { return z !== null && isFinite(z); }
  function colour(z) {
    if (!ok(z)) return 'transparent';
    var a = Math.min(Math.abs(z) / data.saturate, 1) * 0.85;
    return z >= 0 ? 'rgba(214,39,40,' + a.toFixed(3) + ')' : 'rgba(31,119,180,' + a.toFixed(3) + ')';
  }
  function paint() {
    var k = data.axes.indexOf(document.getElementById('mv').value + '/' + document.getElementById('mc').value);
    if (k < 0) return;
    data.responses.forEach(function (r, i) {
      var spans = document.querySelectorAll('#resp-' + i + ' .tok');
      for (var t = 0; t < spans.length && t < r.z.length; t++) {
        var z = r.z[t][k];
        spans[t].style.background = colour(z);
        spans[t].title = 'z = ' + (ok(z) ? z.toFixed(2) : 'n/a');
      }
      var s = document.getElementById('score-' + i);
      if (s) s.textContent = ok(r.score[k]) ? r.score[k].toFixed(2) : 'n/a';
    });
  }
  document.getElementById('mv').addEventListener('change', paint);
  document.getElementById('mc').addEventListener('change', paint);
})();
</script>"""


def _colour(z: float) -> str:
    if z != z:  # NaN
        return "transparent"
    a = min(abs(z) / SATURATE, 1.0) * 0.85
    return f"rgba(214,39,40,{a:.3f})" if z >= 0 else f"rgba(31,119,180,{a:.3f})"


def _num(x: float) -> float | None:
    return round(x, 3) if x == x else None


def monitor_html(scored: list[Scored], stats: Stats, value: str, component: str = "shared", title: str = "",
                 top: int = 3, max_responses: int = 200) -> str:
    """The page (module docstring) for ``scored`` (the first ``max_responses`` are shown token by token)."""
    axes = [f"{v}/{c}" for v, c in stats.names]
    k = axes.index(f"{value}/{component}")
    shown = scored[:max_responses]
    values = list(dict.fromkeys(v for v, _ in stats.names))
    opts_v = "".join(f"<option{' selected' if v == value else ''}>{html.escape(v)}</option>" for v in values)
    opts_c = "".join(f"<option{' selected' if c == component else ''}>{c}</option>" for c in MONITOR_COMPONENTS)
    blocks = []
    for i, s in enumerate(shown):
        toks = "".join(f"<span class='tok' style='background:{_colour(float(z))}' title='z = {float(z):.2f}'>"
                       f"{html.escape(t)}</span>" for t, z in zip(s.tokens, s.token_z[:, k]))
        blocks.append(f"<div class='resp' id='resp-{i}'><div class='rid'>{html.escape(s.row['id'])} · response "
                      f"z = <b id='score-{i}'>{s.row['z'][value][component]:.2f}</b> · {s.row['n_tokens']} tokens"
                      f"</div>{toks}</div>")
    rows = [s.row for s in scored]
    laden = []
    for v in values:
        for r in top_responses(rows, v, "shared", top):
            z = r["z"][v]
            preview = html.escape(" ".join(r["text"].split())[:160])
            laden.append(f"<tr><td>{html.escape(v)}</td><td>{html.escape(r['id'])}</td>"
                         + "".join(f"<td>{z[c]:+.2f}</td>" for c in MONITOR_COMPONENTS) + f"<td>{preview}</td></tr>")
    data = {"axes": axes, "saturate": SATURATE,
            "responses": [{"z": [[_num(float(x)) for x in row] for row in s.token_z.tolist()],
                           "score": [_num(s.row["z"][v][c]) for v, c in stats.names]} for s in shown]}
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    note = (f"<p class='small'>Block {stats.layer}. Colour: the token's z-score on the chosen axis against the "
            f"run's {stats.n_tokens} response tokens ({stats.n_responses} responses): red = more along the value's "
            f"axis than the run's responses, blue = less, full colour at |z| ≥ {SATURATE:g}. Response z: the mean "
            f"projection against the run's per-response means. Showing {len(shown)} of {len(scored)} texts.</p>")
    body = (f"{EXTRA_CSS}<h1>{html.escape(title or 'valuemech monitor')}</h1>{note}"
            f"<p>value <select id='mv'>{opts_v}</select> component <select id='mc'>{opts_c}</select></p>"
            + "".join(blocks)
            + f"<h2>Most value-laden responses (top {top} per value by shared z)</h2>"
            "<table><tr><th>value</th><th>id</th>" + "".join(f"<th>z {c}</th>" for c in MONITOR_COMPONENTS)
            + "<th>text</th></tr>" + "".join(laden) + "</table>"
            f"<script type='application/json' id='monitor-data'>{payload}</script>{SCRIPT}")
    return html_page(title or "valuemech monitor", body)


def write_monitor_page(path: Path, scored: list[Scored], stats: Stats, value: str, component: str = "shared",
                       title: str = "") -> Path:
    atomic_write_text(Path(path), monitor_html(scored, stats, value, component, title))
    return Path(path)
