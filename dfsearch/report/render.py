"""Write a report: Markdown, CSV (cells; claims.csv: the claims' verdicts), one self-contained HTML file (PNGs
inlined as data URIs) and PNG plots whose captions carry the verdicts.

Every number that comes from synthetic data carries the word SYNTHETIC, in every output.  Files are written
to a temporary name and renamed, so an interrupted report never leaves half a file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from pathlib import Path

from dfsearch.report import Cell, RunSet, Table

SYN = "SYNTHETIC"
QUOTED = "quoted from FaceForensics++, other test set"
RULE = ("a comparison is decided when the two cells' 95 % intervals separate: Wilson score interval on the N test "
        "videos (a balanced TCR: each class's Agresti-Caffo interval, combined), widened by the seeds' CI (n ≥ 2) in quadrature")


def _num(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def ours_text(cell: Cell) -> str:
    if cell.ours is None:
        if cell.reason == "quoted":
            return "—"  # the row's label says where the paper's value comes from
        return f"— ({cell.reason}" + (f"; {cell.variants} variant run(s) below" if cell.variants else "") + ")"
    s = cell.ours
    text = _num(s.mean) + (f" ± {_num(s.ci95)}" if s.ci95 is not None else "") + f" (n={s.n})"
    if cell.paper.config.get("protocol.name") == "all" and (cell.tcr_real is not None or cell.tcr_fake is not None):
        text += f" [real {_num(cell.tcr_real, 1) or '?'} / fake {_num(cell.tcr_fake, 1) or '?'}]"
    return text + (f" {SYN}" if cell.synthetic else "")


def diff_text(cell: Cell) -> str:
    d = cell.diff
    return "" if d is None else f"{d:+.2f}" + (f" {SYN}" if cell.synthetic else "")


def paper_text(cell: Cell) -> str:
    return _num(cell.paper.paper) + (" (quoted)" if cell.paper.quoted or cell.paper.paper_quoted else "")


def header_line(t: Table) -> str:
    parts = [f"space `{t.paper.space}`" if t.paper.space else "", f"{t.runs} run(s)"]
    if t.gpu_hours:
        parts.append(f"{t.gpu_hours:.2f} GPU-h")
    if t.cpu_hours:
        parts.append(f"{t.cpu_hours:.2f} CPU-h")
    if t.wall_hours:
        parts.append(f"{t.wall_hours:.2f} h wall (runs without resource tags)")
    if t.estimate is not None:
        parts.append(estimate_text(t.estimate))
    sizes = sorted({c.ours.videos for line in t.cells for c in line if c.ours is not None and c.ours.videos})
    if sizes:
        parts.append("N = " + "/".join(map(str, sizes)) + " test videos per cell")
    if t.synthetic:
        parts.append(f"**{SYN} data: a plumbing check, not a result**")
    return " · ".join(p for p in parts if p)


def estimate_text(e) -> str:
    """'estimate 0.70 CPU-h vs measured 0.76 (1.09x) for 24 tested run(s) (cpu-2core (measured 2026-12-05))'."""
    if not e.runs:
        return f"no estimate ({e.unpriced} tested run(s) could not be priced)"
    at_least = ">= " if e.lower_bound else ""
    pairs = ", ".join(f"estimate {at_least}{e.estimated[u]:.2f} {u} vs measured {e.measured[u]:.2f}"
                      + (f" ({e.ratio(u):.2f}x)" if e.ratio(u) is not None else "") for u in e.estimated)
    notes = [f"{e.lower_bound} priced by compute alone, no overhead measured"] if e.lower_bound else []
    notes += [f"{e.unpriced} not priced"] if e.unpriced else []
    return f"{pairs} for {e.runs} tested run(s){''.join(', ' + n for n in notes)} ({'; '.join(e.sources)})"


def tau_line(t: Table) -> str:
    if t.paper.rank not in ("rows", "columns"):
        return ""
    what = "the rows of each column" if t.paper.rank == "rows" else "the columns of each row"
    if t.no_planted_answer:
        return (f"Synthetic twin: {t.no_planted_answer}. The ranking against the paper's numbers is not shown: "
                "it would rank noise.")
    if not t.taus:
        return f"Ranking agreement (Kendall τ over {what}): fewer than 3 filled cells to rank."
    syn = f" {SYN}" if t.data == "synthetic" else ""
    tau = lambda x: "n/a (constant values)" if x.tau is None else f"{x.tau:+.2f}"  # noqa: E731
    return f"Ranking agreement (Kendall τ over {what}): " + ", ".join(f"{x.label} τ = {tau(x)} (n={x.n}){syn}" for x in t.taus)


def quoted_line(t: Table) -> str:
    """Which rows' paper values are quoted from FaceForensics++ (kept out of τ and Δ)."""
    only = [r for r, line in zip(t.paper.rows, t.cells) if all(c.paper.quoted for c in line)]
    theirs = [r for r, line in zip(t.paper.rows, t.cells) if any(c.paper.paper_quoted for c in line)]
    if not only and not theirs:
        return ""
    parts = []
    if only:
        parts.append(f"{', '.join(only)}: paper-only rows, not implemented here")
    if theirs:
        parts.append(f"{', '.join(theirs)}: the paper's values only (ours are measured on the official split)")
    return f"(quoted) = {QUOTED} (Rössler et al. 2019, that benchmark's fake-only test sets): " + "; ".join(parts) + ". Kept out of τ and Δ."


def notes(t: Table) -> list[str]:
    out = list(t.notes)
    for line in t.cells:
        for c in line:
            if c.other_configs:
                out.append(f"{c.paper.row} / {c.paper.column}: {c.other_configs} other accepted configuration(s) in the store "
                           "(real runs and the --smoke twin); shown: real data first, then most seeds, newest")
    for v in t.variants:
        values = ", ".join(_num(x) for x in v.tested) or "none tested"
        out.append(f"variant of {v.row} / {v.column} (not the cell): {len(v.runs)} run(s), test TCR {values}"
                   + (f" {SYN}" if v.synthetic else "") + f"; differs: {v.differs}")
    out += t.left_out
    return out


def claims_heading(t: Table) -> str:
    if not t.claims:
        return ""
    if t.data == "synthetic":
        return f"Planted claims of the synthetic twin (dfsearch/experiments/planted.yaml), checked on the {SYN} cells; {RULE}:"
    return f"The paper's claims (dfsearch/experiments/claims.yaml), checked on our cells; {RULE}:"


def row_label(label: str, line: list[Cell]) -> str:
    quoted = line[0].paper.quoted if line and all(c.paper.quoted for c in line) else ""
    return f"{label} ({QUOTED.replace('FaceForensics++', quoted)})" if quoted else label


def markdown_table(t: Table) -> str:
    head = [""] + [f"{c} {part}" for c in t.paper.columns for part in ("ours", "paper", "Δ")]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    for label, line in zip(t.paper.rows, t.cells):
        values = [v for c in line for v in (ours_text(c), paper_text(c), diff_text(c))]
        lines.append("| " + " | ".join([row_label(label, line), *values]) + " |")
    return "\n".join(lines)


def markdown(tables: list[Table], runset: RunSet) -> str:
    out = ["# dfsearch report: Das et al., FG 2021, Tables " + ", ".join(t.paper.key for t in tables), ""]
    out.append(f"Store: `{runset.tracking_uri}` · {sum(r.tested for r in runset.runs)} tested run(s) of {len(runset.runs)}"
               + (f" · {runset.duplicates} older duplicate(s) ignored" if runset.duplicates else "")
               + (f" · {runset.unreadable} run(s) with unreadable params ignored" if runset.unreadable else ""))
    out.append("Cells: ours = mean ± 95 % CI over n seeds of test TCR (%) (on `all`: [TCR of the real / the fake videos]), "
               "paper = the paper's value, Δ = ours − paper. After each table: its claims, holds / fails / undecided / not enough cells.")
    if any(t.synthetic for t in tables):
        out.append(f"**Numbers marked {SYN} come from the synthetic stand-in dataset (`run --smoke`: narrow models, small clips, no pretrained weights): they test the pipeline, not the paper.**")
    for t in tables:
        out += ["", f"## Table {t.paper.key}: {t.paper.title}", "", header_line(t), "", markdown_table(t)]
        extra = [x for x in [tau_line(t), quoted_line(t), *notes(t)] if x]
        if extra:
            out += [""] + [f"- {x}" for x in extra]
        if t.claims:
            out += ["", claims_heading(t), ""] + [f"- {v.line()}" for v in t.claims]
    return "\n".join(out) + "\n"


def csv_rows(tables: list[Table]) -> list[dict]:
    rows = []
    for t in tables:
        for line in t.cells:
            for c in line:
                rows.append({
                    "table": t.paper.key, "row": c.paper.row, "column": c.paper.column,
                    "ours": _num(c.ours.mean, 4) if c.ours else "", "ci95": _num(c.ours.ci95, 4) if c.ours else "",
                    "n": c.ours.n if c.ours else 0, "paper": _num(c.paper.paper), "diff": _num(c.diff, 4),
                    "status": "ok" if c.ours else c.reason, "data": SYN if c.synthetic else ("" if c.ours is None else "FaceForensics++"),
                    "seed_group": c.seed_group, "runs": ";".join(c.runs),
                    "videos": (c.ours.videos or "") if c.ours else "", "tcr_real": _num(c.tcr_real, 4), "tcr_fake": _num(c.tcr_fake, 4),
                    "paper_source": c.paper.quoted or c.paper.paper_quoted or ("Das et al. 2021" if c.paper.paper is not None else ""),
                })
    return rows


def claim_rows(tables: list[Table]) -> list[dict]:
    rows = []
    for t in tables:
        for v in t.claims:
            c = v.claim
            rows.append({
                "table": t.paper.key, "claim": c.id, "source": c.source, "kind": c.kind, "verdict": v.verdict, "why": v.why,
                "should_hold": str(c.expected).lower(), "paper_agrees": str(c.paper_agrees).lower(),
                "verified": "" if c.verified is None else str(c.verified).lower(), "data": SYN if t.data == "synthetic" else "FaceForensics++",
                "quote": c.quote, "note": c.note,
            })
    return rows


def csv_bytes(rows: list[dict], default_fields: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else default_fields)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plot(t: Table) -> bytes:
    """Grouped bars of our values (95 % CI whiskers), the paper's values as black diamonds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups, series = (t.paper.rows, t.paper.columns)
    by = lambda i, j: t.cells[i][j]  # noqa: E731  group i = row, series j = column
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(1, len(series)) * 0.45 + 2), 4.2), dpi=100)
    for j, name in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ours = [by(i, j).ours.mean if by(i, j).ours else float("nan") for i in range(len(groups))]  # missing: no bar
        err = [(by(i, j).ours.ci95 or 0.0) if by(i, j).ours else 0.0 for i in range(len(groups))]
        hatch = "//" if any(by(i, j).synthetic for i in range(len(groups))) else None
        ax.bar(xs, ours, width, yerr=err, capsize=2, label=f"{name} (ours)", hatch=hatch, alpha=0.85)
        for quoted in (False, True):  # quoted from FaceForensics++ (another test set): hollow diamonds
            paper = [(x, by(i, j).paper.paper) for i, x in enumerate(xs)
                     if by(i, j).paper.paper is not None and bool(by(i, j).paper.quoted or by(i, j).paper.paper_quoted) == quoted]
            if paper:
                ax.scatter([p[0] for p in paper], [p[1] for p in paper], marker="D", s=18, zorder=3,
                           facecolors="none" if quoted else "black", edgecolors="black",
                           label=(("paper, quoted from FaceForensics++" if quoted else "paper") if j == 0 else None))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test TCR (%)")
    ax.set_ylim(0, 100)
    title = f"Table {t.paper.key}"
    if t.synthetic:
        title += f" — {SYN} data (hatched bars): pipeline check, not a result"
    elif not any(c.ours for line in t.cells for c in line):
        title += " — no tested runs yet: the paper's values only"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    caption = caption_lines(t, width=int(fig.get_size_inches()[0] * 17))  # ~17 characters an inch at 6.5 pt
    if caption:
        # Room below the axes for the verdicts: one line per claim.
        fig.set_size_inches(fig.get_size_inches()[0], 4.2 + 0.17 * len(caption) + 0.2)
        fig.text(0.01, 0.01, "\n".join(caption), fontsize=6.5, va="bottom", ha="left", family="monospace")
        fig.tight_layout(rect=(0, (0.17 * len(caption) + 0.25) / (4.2 + 0.17 * len(caption) + 0.2), 1, 1))
    else:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def caption_lines(t: Table, width: int = 150) -> list[str]:
    """The PNG's caption: each claim's verdict and id, or why the synthetic twin has no planted answer."""
    if t.no_planted_answer and not t.claims:
        return _wrap(f"Synthetic twin: {t.no_planted_answer}", width)
    lines = []
    for v in t.claims:
        flag = " (paper's own table contradicts it)" if not v.claim.paper_agrees else (" (planted)" if v.claim.source == "planted" else "")
        lines += _wrap(f"{v.verdict.upper()}: {v.claim.id}{flag} — {v.why}", width)[:2]
    return lines


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def html_page(tables: list[Table], runset: RunSet, pngs: dict[str, bytes]) -> str:
    """One file, no external resources: styles inline, plots as data: URIs."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>dfsearch report</title><style>",
             "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
             ".syn{color:#b00;font-weight:bold}.miss{color:#888}</style></head><body>",
             "<h1>dfsearch report: Das et al., FG 2021</h1>",
             f"<p>Store: <code>{esc(runset.tracking_uri)}</code> · {sum(r.tested for r in runset.runs)} tested run(s) of {len(runset.runs)}</p>",
             "<p>ours = mean ± 95 % CI over seeds of test TCR (%), paper = the paper's value, Δ = ours − paper.</p>"]
    if any(t.synthetic for t in tables):
        parts.append(f"<p class='syn'>Numbers marked {SYN} come from the synthetic stand-in dataset: they test the pipeline, not the paper.</p>")
    for t in tables:
        parts.append(f"<h2>Table {esc(t.paper.key)}: {esc(t.paper.title)}</h2><p>{esc(header_line(t).replace('**', '').replace('`', ''))}</p>")
        head = "".join(f"<th>{esc(c)} ours</th><th>{esc(c)} paper</th><th>{esc(c)} Δ</th>" for c in t.paper.columns)
        parts.append(f"<table><tr><th></th>{head}</tr>")
        for label, line in zip(t.paper.rows, t.cells):
            tds = "".join(
                f"<td class='{'syn' if c.synthetic else ('miss' if c.ours is None else '')}'>{esc(ours_text(c))}</td>"
                f"<td>{esc(paper_text(c))}</td><td>{esc(diff_text(c))}</td>" for c in line)
            parts.append(f"<tr><td>{esc(row_label(label, line))}</td>{tds}</tr>")
        parts.append("</table>")
        for x in [tau_line(t), quoted_line(t), *notes(t)]:
            if x:
                parts.append(f"<p>{esc(x)}</p>")
        if t.claims:
            parts.append(f"<p>{esc(claims_heading(t))}</p><ul>")
            for v in t.claims:
                parts.append(f"<li class='{'syn' if v.alarming else ''}'>{esc(v.line()).replace('**' + v.verdict + '**', '<b>' + v.verdict + '</b>', 1)}</li>")
            parts.append("</ul>")
        if t.paper.key in pngs:
            data = base64.b64encode(pngs[t.paper.key]).decode()
            parts.append(f"<p><img alt='Table {esc(t.paper.key)}' src='data:image/png;base64,{data}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_all(tables: list[Table], runset: RunSet, out_dir: str | Path) -> list[Path]:
    """report.md, report.csv, report.html and table_<KEY>.png in ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = markdown(tables, runset)
    pngs = {t.paper.key: plot(t) for t in tables}
    written = []
    write_atomic(out / "report.md", md.encode())
    write_atomic(out / "report.csv", csv_bytes(csv_rows(tables), ["table"]))
    write_atomic(out / "claims.csv", csv_bytes(claim_rows(tables), ["table", "claim", "verdict", "why"]))
    write_atomic(out / "report.html", html_page(tables, runset, pngs).encode())
    written += [out / "report.md", out / "report.csv", out / "claims.csv", out / "report.html"]
    for key, png in pngs.items():
        write_atomic(out / f"table_{key}.png", png)
        written.append(out / f"table_{key}.png")
    return written
