"""Search results a person can read: trials.csv, best_hyperparameters.json, report.html.

Everything here reads plain files (KerasTuner's trial.json, the zoo's
per-trial record and history) and never imports TensorFlow, so
`zoo tune DIR --report` is instant on a finished search or one still running.

A search directory:

    search.json                 what was searched (model, data, space, tuner, seed, fingerprint)
    trials.csv                  one row per trial (rewritten after every trial)
    best_hyperparameters.json   the best trial's hyperparameters, builder kwargs and recipe
    report.html                 self-contained report (tables and figures, no server)
    kt/                         KerasTuner's project: oracle.json, trial_<id>/ with trial.json,
                                zoo_trial.json (status, reason, params, MACs, seconds),
                                history.json (per-epoch logs), logs/ (TensorBoard),
                                checkpoint.weights.h5 (best trials only)
"""

import base64
import csv
import html
import io
import json
import os
import shutil

from zoo import io as zio

SEARCH_FILE = "search.json"
TRIALS_FILE = "trials.csv"
BEST_FILE = "best_hyperparameters.json"
REPORT_FILE = "report.html"
PROJECT = "kt"
RECORD_FILE = "zoo_trial.json"

STATUSES = ("completed", "stopped_early", "running", "failed", "skipped")
# "clock": the search's wall-clock seconds when the trial ended (tuning.budget.Clock).
FIXED_COLUMNS = ("trial_id", "model", "status", "objective", "best_epoch", "epochs_run",
                 "seconds", "clock", "params", "macs", "reason", "message")


def history_file(execution=0):
    return "history.json" if execution == 0 else f"history_{execution}.json"


def remove_tree(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def format_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(format_value(v) for v in value) + ")"
    return str(value)


def format_values(values):
    if not values:
        return "default configuration"
    return " ".join(f"{k}={format_value(v)}" for k, v in values.items())


def project_dir(search_dir):
    return os.path.join(search_dir, PROJECT)


def read_records(project):
    """{trial_id: zoo record} of a KerasTuner project directory."""
    out = {}
    if not os.path.isdir(project):
        return out
    for entry in os.listdir(project):
        if entry.startswith("trial_"):
            record = zio.read_json(os.path.join(project, entry, RECORD_FILE), default=None)
            if record:
                out[entry[len("trial_"):]] = record
    return out


def _single_model(search):
    model = search.get("model")
    return model if isinstance(model, str) else None


def _sort_key(trial_id):
    digits = "".join(c for c in trial_id if c.isdigit())
    return (int(digits) if digits else 0, trial_id)


def collect(search_dir):
    """Rows (one per trial, in trial order) and the search's settings.

    Returns:
        (rows, search) where each row holds the FIXED_COLUMNS, the
        hyperparameter values (`hp` dict), `model_kwargs`, `recipe` and the
        per-epoch `curve` of the objective; `search` is search.json.
    """
    search = zio.read_json(os.path.join(search_dir, SEARCH_FILE), default={}) or {}
    project = project_dir(search_dir)
    records = read_records(project)
    rows = []
    if not os.path.isdir(project):
        return rows, search
    for entry in sorted(os.listdir(project)):
        if not entry.startswith("trial_"):
            continue
        trial_id = entry[len("trial_"):]
        trial = zio.read_json(os.path.join(project, entry, "trial.json"), default={}) or {}
        record = records.get(trial_id, {})
        if not trial and not record:
            continue
        status = record.get("status")
        kt_status = trial.get("status")
        if kt_status == "COMPLETED" and status not in ("completed", "stopped_early"):
            status = "completed"
        elif kt_status in ("FAILED", "INVALID") and status not in ("failed", "skipped"):
            status = "failed"
        elif kt_status == "RUNNING" or status is None:
            status = "running"
        hp = {k: v for k, v in ((trial.get("hyperparameters") or {}).get("values") or
                                record.get("hyperparameters") or {}).items()}
        score = trial.get("score") if kt_status == "COMPLETED" else None
        if score is None and status in ("completed", "stopped_early"):
            score = record.get("score")
        message = record.get("message")
        if message is None and status == "failed":
            message = (trial.get("message") or "").strip().splitlines()[-1:] or [""]
            message = message[0]
        reason = record.get("reason") or ("error" if status == "failed" else "")
        rows.append({
            "trial_id": trial_id, "model": record.get("model") or _single_model(search),
            "clock": record.get("search_seconds"), "status": status, "objective": score,
            "best_epoch": (record.get("best_epoch") + 1 if record.get("best_epoch") is not None
                           else None),
            "epochs_run": record.get("epochs_run"), "seconds": record.get("seconds"),
            "params": record.get("params"), "macs": record.get("macs"),
            "reason": reason, "message": message or "", "hp": hp,
            "model_kwargs": record.get("model_kwargs"), "recipe": record.get("recipe"),
            "curve": {int(k): v for k, v in (record.get("curve") or {}).items()},
            "registered_default": record.get("registered_default", False),
        })
        if status == "running":
            history = zio.read_json(os.path.join(project, entry, history_file()),
                                    default={}) or {}
            epochs = history.get("epochs", [])
            name = search.get("objective", {}).get("name")
            rows[-1]["epochs_run"] = len(epochs)
            rows[-1]["curve"] = {e["epoch"]: e.get(name) for e in epochs}
    rows.sort(key=lambda r: _sort_key(r["trial_id"]))
    return rows, search


def ranked(rows, direction):
    """Rows with a score, best first."""
    scored = [r for r in rows if r["objective"] is not None and
              r["status"] in ("completed", "stopped_early")]
    return sorted(scored, key=lambda r: r["objective"], reverse=direction == "max")


def best_row(rows, direction):
    ordered = ranked(rows, direction)
    return ordered[0] if ordered else None


def hp_names(rows, search):
    names = [h["name"] for h in search.get("space", [])]
    for row in rows:
        for name in row["hp"]:
            if name not in names:
                names.append(name)
    return names


def write_results(search_dir):
    """trials.csv and best_hyperparameters.json from the files on disk; returns the rows."""
    rows, search = collect(search_dir)
    direction = search.get("objective", {}).get("direction", "max")
    # A multi-model search's "model" hyperparameter is the model column.
    names = [n for n in hp_names(rows, search) if n not in FIXED_COLUMNS]
    ranks = {r["trial_id"]: i + 1 for i, r in enumerate(ranked(rows, direction))}
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["rank", *FIXED_COLUMNS, *names, "model_kwargs"])
    for r in rows:
        writer.writerow([ranks.get(r["trial_id"], ""),
                         *[_cell(r[c]) for c in FIXED_COLUMNS],
                         *[_cell(r["hp"].get(n)) for n in names],
                         json.dumps(zio.json_safe(r["model_kwargs"]), sort_keys=True)
                         if r["model_kwargs"] is not None else ""])
    zio.write_text(os.path.join(search_dir, TRIALS_FILE), table.getvalue(), newline="")
    best = best_row(rows, direction)
    if best is not None:
        zio.write_json(os.path.join(search_dir, BEST_FILE), {
            "trial_id": best["trial_id"], "objective": search.get("objective", {}).get("name"),
            "direction": direction, "score": best["objective"],
            "hyperparameters": {k: v for k, v in best["hp"].items()
                                if not k.startswith("tuner/")},
            "model_kwargs": best["model_kwargs"], "recipe": best["recipe"],
            "params": best["params"], "macs": best["macs"],
            "model": best["model"] or search.get("model"),
            "search_dir": os.path.abspath(search_dir)})
    return rows


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(zio.json_safe(value))
    return value


def top_table(search_dir, n=10):
    """The top-n table of a search (finished or running) as text."""
    rows, search = collect(search_dir)
    objective = search.get("objective", {})
    name, direction = objective.get("name", "objective"), objective.get("direction", "max")
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    lines = [f"search: {os.path.abspath(search_dir)}",
             f"model {search.get('model')}, data {search.get('data')}, tuner "
             f"{search.get('tuner')}, objective {name} ({direction})",
             "trials: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) +
             (f" (of at most {search['max_trials']})" if search.get("max_trials") else "")]
    top = ranked(rows, direction)[:n]
    if not top:
        lines.append("no completed trial yet")
        return "\n".join(lines)
    header = f"{'rank':>4} {'trial':>6} {name:>14} {'epochs':>6} {'params':>10} {'seconds':>8}" \
             "  hyperparameters"
    lines.append(header)
    for i, r in enumerate(top, 1):
        values = {k: v for k, v in r["hp"].items() if not k.startswith("tuner/")}
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        lines.append(f"{i:>4} {r['trial_id']:>6} {r['objective']:>14.4f} "
                     f"{r['epochs_run'] or 0:>6} {params:>10} {r['seconds'] or 0:>8.1f}  "
                     f"{format_values(values)}")
    return "\n".join(lines)


# ------------------------------------------------------------------ report.html


def pareto_front(rows, direction):
    """Rows no other row beats on both objective and parameter count (fewest params first)."""
    points = [r for r in ranked(rows, direction) if r["params"] is not None]
    points.sort(key=lambda r: (r["params"], -r["objective"] if direction == "max"
                               else r["objective"]))
    front, best = [], None
    for r in points:
        value = r["objective"]
        if best is None or (value > best if direction == "max" else value < best):
            front.append(r)
            best = value
    return front


def _figure_png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figures(rows, search, names):
    """[(title, base64 PNG)] of every figure the search's rows can show."""
    import matplotlib
    matplotlib.use("Agg")

    objective = search.get("objective", {})
    name, direction = objective.get("name", "objective"), objective.get("direction", "max")
    scored = [r for r in rows if r["objective"] is not None]
    figures = []
    for title, draw in (("Objective per trial", _objective_figure),
                        ("Objective against the search's wall clock", _clock_figure),
                        ("Objective versus each hyperparameter", _hyperparameter_figure),
                        ("Learning curves", _curves_figure),
                        ("Accuracy versus size: the Pareto front", _pareto_figure)):
        figure = draw(rows, scored, names, name, direction)
        if figure is not None:
            figure.tight_layout()
            figures.append((title, _figure_png(figure)))
    return figures


def _objective_figure(rows, scored, names, name, direction):
    from matplotlib.figure import Figure

    if not scored:
        return None
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    xs = [_sort_key(r["trial_id"])[0] for r in scored]
    ax.scatter(xs, [r["objective"] for r in scored], s=14, label="trial")
    best, running = [], None
    for r in scored:
        v = r["objective"]
        running = v if running is None else (max(running, v) if direction == "max"
                                             else min(running, v))
        best.append(running)
    ax.step(xs, best, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(name)
    ax.legend()
    return figure


def _clock_figure(rows, scored, names, name, direction):
    """Every scored trial at the wall-clock second it ended, one colour per model."""
    from matplotlib.figure import Figure

    timed = [r for r in scored if r.get("clock") is not None]
    if not timed:
        return None
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    models = sorted({r["model"] or "" for r in timed})
    for i, model in enumerate(models):
        mine = [r for r in timed if (r["model"] or "") == model]
        ax.scatter([r["clock"] / 60 for r in mine], [r["objective"] for r in mine], s=14,
                   color=f"C{i % 10}", label=model or "trial")
    best, running = [], None
    ordered = sorted(timed, key=lambda r: r["clock"])
    for r in ordered:
        v = r["objective"]
        running = v if running is None else (max(running, v) if direction == "max"
                                             else min(running, v))
        best.append(running)
    ax.step([r["clock"] / 60 for r in ordered], best, where="post", color="black",
            linewidth=1, label="best so far")
    ax.set_xlabel("wall clock (minutes since the search started)")
    ax.set_ylabel(name)
    ax.legend(fontsize=7)
    return figure


def _hyperparameter_figure(rows, scored, names, name, direction):
    from matplotlib.figure import Figure

    tuned = [n for n in names if not n.startswith("tuner/") and
             len({json.dumps(r["hp"].get(n)) for r in scored}) > 1]
    if not scored or not tuned:
        return None
    cols = min(3, len(tuned))
    nrows = -(-len(tuned) // cols)
    figure = Figure(figsize=(4 * cols, 3 * nrows))
    axes = figure.subplots(nrows, cols, squeeze=False).ravel()
    for ax, hp in zip(axes, tuned):
        values = [r["hp"].get(hp) for r in scored]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            ax.scatter(values, [r["objective"] for r in scored], s=14)
            if hp == "learning_rate" or (min(values) > 0 and max(values) / min(values) > 50):
                ax.set_xscale("log")
        else:
            labels = sorted({str(v) for v in values})
            ax.scatter([labels.index(str(v)) for v in values],
                       [r["objective"] for r in scored], s=14)
            ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_title(hp, fontsize=9)
        ax.set_ylabel(name, fontsize=8)
    for ax in axes[len(tuned):]:
        ax.set_visible(False)
    return figure


def _curves_figure(rows, scored, names, name, direction):
    from matplotlib.figure import Figure

    curves = [r for r in rows if r["curve"]]
    if not curves:
        return None
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    best = best_row(rows, direction)
    for r in curves:
        epochs = sorted(r["curve"])
        values = [r["curve"][e] for e in epochs]
        is_best = best is not None and r["trial_id"] == best["trial_id"]
        ax.plot([e + 1 for e in epochs], values, lw=2.0 if is_best else 0.8,
                alpha=1.0 if is_best else 0.5,
                label=f"best (trial {r['trial_id']})" if is_best else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    if best is not None:
        ax.legend()
    return figure


def _pareto_figure(rows, scored, names, name, direction):
    from matplotlib.figure import Figure

    sized = [r for r in scored if r["params"] is not None]
    if len({r["params"] for r in sized}) <= 1:
        return None
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    ax.scatter([r["params"] for r in sized], [r["objective"] for r in sized], s=14,
               label="trial")
    front = pareto_front(rows, direction)
    ax.step([r["params"] for r in front], [r["objective"] for r in front], where="post",
            color="C3", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(name)
    ax.legend()
    return figure


_SORT_SCRIPT = """
<script>
function sortTable(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const index = Array.from(th.parentNode.children).indexOf(th);
  const asc = th.dataset.asc !== 'true'; th.dataset.asc = asc;
  const rows = Array.from(body.rows);
  const key = r => { const t = r.cells[index].innerText; const n = parseFloat(t.replace(/,/g, ''));
                     return isNaN(n) ? t : n; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    if (x === y) return 0; if (x === '') return 1; if (y === '') return -1;
    return (x < y ? -1 : 1) * (asc ? 1 : -1); });
  rows.forEach(r => body.appendChild(r));
}
</script>
"""


def write_report(search_dir):
    """report.html: sortable trial table, figures (embedded PNGs), Pareto front; no server."""
    rows, search = collect(search_dir)
    objective = search.get("objective", {})
    name, direction = objective.get("name", "objective"), objective.get("direction", "max")
    names = hp_names(rows, search)
    ranks = {r["trial_id"]: i + 1 for i, r in enumerate(ranked(rows, direction))}
    best = best_row(rows, direction)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>zoo tune: {esc(str(search.get('model')))}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "th{cursor:pointer;background:#eee}tr.best{background:#e6ffe6}"
             "img{max-width:100%}</style>", _SORT_SCRIPT, "</head><body>",
             f"<h1>Search: {esc(str(search.get('model')))} on "
             f"{esc(str(search.get('data')))}</h1>",
             f"<p>tuner <b>{esc(str(search.get('tuner')))}</b>, objective <b>{esc(name)}</b> "
             f"({esc(direction)}), seed {esc(str(search.get('seed')))}, max_epochs "
             f"{esc(str(search.get('max_epochs')))}, "
             f"{len(rows)} trials; directory <code>{esc(os.path.abspath(search_dir))}</code></p>"]
    if best is not None:
        values = {k: v for k, v in best["hp"].items() if not k.startswith("tuner/")}
        parts.append(f"<p>Best: trial <b>{esc(best['trial_id'])}</b>, {esc(name)} = "
                     f"<b>{best['objective']:.4f}</b>: {esc(format_values(values))}</p>")
    front = pareto_front(rows, direction)
    if len(front) > 1:
        parts.append("<h2>Pareto front (objective vs parameters)</h2><ul>")
        for r in front:
            parts.append(f"<li>trial {esc(r['trial_id'])}: {r['params']:,} parameters, "
                         f"{esc(name)} {r['objective']:.4f}</li>")
        parts.append("</ul>")
    try:
        figures = _figures(rows, search, names)
    except Exception as err:  # noqa: BLE001  (the table is still worth writing)
        figures = []
        parts.append(f"<p>figures unavailable: {esc(str(err))}</p>")
    for title, png in figures:
        parts.append(f"<h2>{esc(title)}</h2><img src='data:image/png;base64,{png}'>")
    parts.append("<h2>Trials</h2><p>Click a column to sort.</p><table><thead><tr>")
    columns = ["rank", *FIXED_COLUMNS, *[n for n in names if n not in FIXED_COLUMNS]]
    parts += [f"<th onclick='sortTable(this)'>{esc(c)}</th>" for c in columns]
    parts.append("</tr></thead><tbody>")
    for r in rows:
        cls = " class='best'" if best is not None and r["trial_id"] == best["trial_id"] else ""
        cells = [ranks.get(r["trial_id"], ""), *[r[c] for c in FIXED_COLUMNS],
                 *[r["hp"].get(n) for n in names if n not in FIXED_COLUMNS]]
        parts.append(f"<tr{cls}>" + "".join(
            f"<td>{esc(str(_cell(c)))}</td>" for c in cells) + "</tr>")
    parts.append("</tbody></table></body></html>")
    return zio.write_text(os.path.join(search_dir, REPORT_FILE), "\n".join(parts))
