"""Build benchmarks/README.md from benchmarks/results/*.json: one section per results file, a
table (or a few) per section, each with the machine line and the date. Nothing is typed in by
hand: every number comes from a results file.

    .venv/bin/python benchmarks/make_readme.py [--results benchmarks/results] [--out benchmarks/README.md]

Known files (throughput, evaluation, scaling, corpus) get their own tables; any other results
file (e.g. sasrec_*.json, quality_*.json) gets a generic one: its `results`/`rows`/`runs` list
as a table of the scalar fields, or else its scalar fields as key | value.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, RESULTS, machine_line  # noqa: E402

SCRIPTS = {"throughput": "throughput.py", "throughput_attention": "throughput.py", "evaluation": "evaluation.py",
           "scaling": "scaling.py", "corpus": "corpus.py"}
ORDER = ["throughput", "throughput_attention", "evaluation", "scaling", "corpus"]


# ---------------------------------------------------------------------- formatting
def fmt(v, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != v:
            return "nan"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1 or a == 0:
            return f"{v:.{digits - 1}f}".rstrip("0").rstrip(".") if digits > 1 else f"{v:.0f}"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x, digits) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f}%"


def table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def producer(name: str, rep: dict) -> str:
    """The command that wrote a results file, rebuilt from what the file records."""
    if rep.get("command"):
        cmd = rep["command"]
        return cmd if cmd.startswith(".venv/") else ".venv/bin/" + cmd
    if name.startswith("quality_"):
        seeds = " ".join(str(s) for s in rep.get("seeds", []))
        overrides = " ".join(rep.get("overrides", []))
        return (f".venv/bin/python benchmarks/quality.py --name {rep.get('name', name[len('quality_'):])}"
                f" --seeds {seeds}" + (f" -- {overrides}" if overrides else ""))
    return f".venv/bin/python benchmarks/{SCRIPTS.get(name, name + '.py')}"


def header(name: str, rep: dict, path: Path) -> str:
    m = rep.get("machine")
    if isinstance(m, dict):
        mline = machine_line(m)
    elif m:
        mline = str(m)
    else:
        mline = "not recorded"
    date = rep.get("date") or dt.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%dT%H:%M:%S") + \
        " (file time)"
    bits = [f"Machine: {mline}.", f"Date: {date}."]
    if rep.get("load_avg_start") is not None:
        bits.append(f"Load average (1/5/15 min) at start {fmt(rep['load_avg_start'])}, at end "
                    f"{fmt(rep.get('load_avg_end'))} (on {fmt((m or {}).get('cores') if isinstance(m, dict) else None)}"
                    " cores: other jobs shared the machine when it exceeds the core count).")
    if rep.get("wall_s") is not None:
        bits.append(f"Run time {fmt(rep['wall_s'])} s.")
    title = rep.get("benchmark", name)
    how = f"`{producer(name, rep)}`"
    if rep.get("note"):
        bits.append(f"Note: {rep['note']}")
    return f"## {name}: {title}\n\n`results/{path.name}`, written by {how}. " + " ".join(bits) + "\n"


# ---------------------------------------------------------------------- known files
def render_throughput(rep: dict) -> str:
    out = []
    pk = rep.get("matmul_peak_gflops", {})
    measured = [d for d in ("fp32", "bf16") if isinstance(pk.get(d), (int, float)) and pk[d] == pk[d]]
    out.append(f"Matrix-multiply peak measured in the same process (max over {len(pk.get('samples', []))} samples "
               "interleaved with the measurements): " + ", ".join(f"{d} **{fmt(pk[d])}** GFLOP/s" for d in measured)
               + ". Per shape (best): " + "; ".join(
                   f"{d} " + ", ".join(f"{k} {fmt(v)}" for k, v in pk.get(f"{d}_per_shape", {}).items())
                   for d in measured) + ".")
    spread = {}
    for smp in pk.get("samples", []):
        spread.setdefault(smp["dtype"], []).append(smp["gflops"])
    if spread:
        # a shared or AMX machine's peak moves between samples: the column "MFU (block peak)" uses
        # the sample taken just before the block, so a block is not judged against another's luck
        out.append(" Range of the samples: " + ", ".join(f"{k} {fmt(min(v))}-{fmt(max(v))}" for k, v in spread.items())
                   + " GFLOP/s.")
    out.append("\n")
    out.append(f"Model FLOPs: `{rep.get('flops_formula', '')}`. MFU: {rep.get('mfu_definition', '')}.\n")
    prec = rep.get("precisions", {})
    if prec:
        out.append("Precisions: " + "; ".join(f"**{k}** = {v}" for k, v in prec.items()) + ".")
    var = rep.get("variants", {})
    if var:
        out.append(" Variants: " + "; ".join(f"**{k}** = {v}" for k, v in var.items()) + ".\n")
    res = rep.get("results", [])
    real = [r for r in res if r.get("source") == "real"]
    if real:
        out.append("\n### Real ML-100K batches (CorpusData.epoch_batches; tokens/s counts non-pad tokens)\n")
        out.append(table(["backbone", "precision", "variant", "step", "batches", "real tokens", "padding",
                          "s/step", "tokens/s", "MFU", "MFU (block peak)", "MFU incl. attention", "est. epoch (min)",
                          "first step (s)"],
                         [[r["backbone"], r["precision"], r["variant"], r["step"], r["batches"], r["real_tokens"],
                           pct(r["padding_fraction"]), r["seconds_per_step"], r["tokens_per_s"], pct(r["mfu"]),
                           pct(r.get("mfu_local")), pct(r.get("mfu_incl_attention")), r.get("estimated_epoch_minutes"),
                           (r.get("warmup_seconds") or [None])[0]] for r in real]))
        out.append("\nFirst step: the first warm-up step of the block, outside the timed sample (for `compiled`, "
                   "the compilation of that step kind's graphs; later kinds reuse the graphs).")
        out.append("")
    variants = list(dict.fromkeys(r["variant"] for r in real))
    if len(variants) > 1:
        out.append("\n### Before / after (real batches, tokens/s; variants interleaved batch by batch)\n")
        keys = list(dict.fromkeys((r["backbone"], r["precision"], r["step"]) for r in real))
        by = {(r["backbone"], r["precision"], r["step"], r["variant"]): r for r in real}
        body = []
        vs_current = "compiled" in variants and "current" in variants[1:]
        for k in keys:
            base = by.get((*k, "baseline")) or by.get((*k, "current"))
            cells = []
            for v in variants:
                r = by.get((*k, v))
                cells.append("" if r is None else f"{fmt(r['tokens_per_s'])} ({pct(r['mfu'])})")
            speed = [("" if by.get((*k, v)) is None or base is None else
                      f"x{by[(*k, v)]['tokens_per_s'] / base['tokens_per_s']:.2f}") for v in variants[1:]]
            if vs_current:
                c, e = by.get((*k, "compiled")), by.get((*k, "current"))
                speed.append("" if c is None or e is None else f"x{c['tokens_per_s'] / e['tokens_per_s']:.2f}")
            body.append([*k, *cells, *speed])
        out.append(table(["backbone", "precision", "step", *[f"{v} tok/s (MFU)" for v in variants],
                          *[f"{v} vs {variants[0]}" for v in variants[1:]], *["compiled vs current"] * vs_current],
                         body))
        out.append("")
    syn = [r for r in res if r.get("source") == "synthetic"]
    if syn:
        out.append("\n### Synthetic batches (no padding, ML-100K sizes)\n")
        out.append(table(["backbone", "precision", "step", "B x T", "s/step", "tokens/s", "MFU", "head FLOPs share"],
                         [[r["backbone"], r["precision"], r["step"], r["shape"], r["seconds_per_step"],
                           r["tokens_per_s"], pct(r["mfu"]), pct(r["head_flops_share"])] for r in syn]))
        out.append("")
    ep = rep.get("epochs", {})
    if ep:
        out.append("\n### One ML-100K epoch per step kind (as batched)\n")
        out.append(table(["backbone", "step", "batches", "real tokens", "padded tokens", "data (s)"],
                         [[b, s, e["batches"], e["real_tokens"], e["padded_tokens"], e["data_seconds"]]
                          for b, d in ep.items() for s, e in d.items()]))
        out.append("")
    for p in rep.get("profile", []):
        out.append(f"\n### Profile: {p['backbone']} {p['precision']}, real batches\n")
        kinds = p.get("kinds", {})
        cats = list(dict.fromkeys(c for k in kinds.values() for c in k["categories_share"]))
        out.append("torch.profiler, one batch per step kind: share of the step's wall time by op category "
                   "(op self time).\n")
        out.append(table(["category", *[f"{s} {tuple(k['shape'])}" for s, k in kinds.items()]],
                         [[c, *[pct(k["categories_share"].get(c)) for k in kinds.values()]] for c in cats]))
        abl = p.get("ablations", {})
        if abl:
            out.append("\nTimed over the whole real sample: where the step's time goes, and the effect of each "
                       "fix (time of the step without the fix / with it).\n")
            rows_ = list(dict.fromkeys(c for a in abl.values() for c in a["share_of_step"]))
            body = [[c, *[pct(a["share_of_step"].get(c)) for a in abl.values()]] for c in rows_]
            body.append(["speed-up: attention mask dropped (vs kept)",
                         *[f"x{fmt(a['speedup_mask_dropped_vs_kept'])}" for a in abl.values()]])
            body.append(["speed-up of the step: SDPA (vs eager attention)",
                         *[f"x{fmt(a.get('speedup_sdpa_vs_eager_attention'))}" for a in abl.values()]])
            body.append(["speed-up of embed: index_put (vs torch.where)",
                         *[f"x{fmt(a.get('speedup_index_put_vs_where_embed_embed_only'))}" for a in abl.values()]])
            out.append(table(["share of the step", *abl.keys()], body))
        out.append("")
    return "\n".join(out)


def render_evaluation(rep: dict) -> str:
    out = []
    if rep.get("data"):
        out.append(f"Data: {rep['data']}.")
    cfg = rep.get("config")
    if cfg:
        out.append(" Config: " + "; ".join(f"{k} = {fmt(v)}" for k, v in cfg.items()) + ".\n")
    out.append(table(["part", "data", "backbone", "bound (MiB)", "users", "items", "users per batch",
                      "one batch of scores (MiB)", "seconds", "users/s", "peak RSS increase (MiB)"],
                     [[r["part"], r.get("data", "beauty"), r.get("backbone") or ("tiny_gpt2" if r["part"] == "whole"
                                                                                 else "-"),
                       r["bound_mib"], r["users"], r["items"], r.get("batch_users"),
                       r.get("one_batch_scores_mib"), r["seconds"], r["users_per_s"], r["peak_rss_increase_mib"]]
                      for r in rep.get("results", [])]))
    return "\n".join(out) + "\n"


def render_scaling(rep: dict) -> str:
    out = []
    if rep.get("code_path"):
        out.append(f"Code path: {rep['code_path']}. Epoch time: {rep.get('epoch_s', '')}.\n")
    runs = rep.get("runs", [])
    variants = [k for k in ("phases", "phases_sparse") if runs and k in runs[0]]
    out.append(table(["users", "items", "interactions", "user rows", "L epoch (s)", "C epoch (s)",
                      "fine-tuning epoch (s)", "evaluation pass (s)", "peak RSS (MiB)", "trainable (MiB)"],
                     [[r["users"], r["items"], r["interactions"], "dense" if v == "phases" else "sparse",
                       *(r[v][p]["epoch_s"] for p in PHASE_KEYS[:3]), r["phases"]["eval"]["epoch_s"],
                       r.get("peak_rss_mib"), r.get("trainable_mib")] for r in runs for v in variants]))
    out.append("\nPer training batch: milliseconds per batch (forward, backward, optimizer), the optimizer step alone "
               "(dense rows: fused AdamW vs torch's per-tensor loop, same parameters and gradients), and what "
               "collating the whole epoch up front would hold.\n")
    rows = []
    for r in runs:
        for v in variants:
            for p in PHASE_KEYS[:3]:
                ph = r[v][p]
                opt = ph.get("optimizer_ms") or {}
                rows.append([r["users"], "dense" if v == "phases" else "sparse", p, ph["batches"],
                             ph.get("ms_per_batch"), opt.get("fused"), opt.get("per_tensor_loop"), ph.get("plan_s"),
                             ph.get("collate_s"), ph.get("upfront_mib")])
    out.append(table(["users", "user rows", "phase", "batches", "ms per batch", "optimizer fused (ms)",
                      "optimizer per-tensor loop (ms)", "plan (s)", "collate all (s)", "up front (MiB)"], rows))
    for variant, fits in rep.get("fits", {}).items():
        if not isinstance(fits, dict) or "L" not in fits:
            continue
        out.append(f"\nFitted scaling, {variant} user rows: time ~ users^b (least squares, log-log); ratios to the "
                   "smallest size.\n")
        out.append(table(["phase", "b", "user ratios", "time ratios"],
                         [[ph, r["exponent"], fmt(r["user_ratios"]), fmt(r["time_ratios"])] for ph, r in fits.items()]))
    return "\n".join(out) + "\n"


PHASE_KEYS = ("L", "C", "rec", "eval")


def render_corpus(rep: dict) -> str:
    out = []
    rows = []
    for d in rep.get("results", []):
        for k, r in d.get("kinds", {}).items():
            rows.append([d["dataset"], k, r.get("documents"), r.get("tokens"), round(1e3 * r["cpu_s"], 2),
                         r.get("docs_per_s"), r.get("tokens_per_s")])
    out.append(table(["dataset", "kind", "documents", "tokens", "CPU ms", "documents/s", "tokens/s"], rows))
    extra = [[d["dataset"], d.get("users"), d.get("items"), d.get("train_interactions"), d.get("tokenize_cpu_s"),
              round(1e3 * d["collate_finetune_epoch"]["cpu_s"], 1) if "collate_finetune_epoch" in d else None,
              round(1e3 * d["collate_finetune_epoch_dense_targets"]["cpu_s"], 1)
              if "collate_finetune_epoch_dense_targets" in d else None]
             for d in rep.get("results", [])]
    out.append("\n" + table(["dataset", "users", "items", "train interactions", "text tokenization (s, once)",
                             "sampler + collate, finetune epoch (ms)", "same, dense [B, J] targets (ms)"], extra))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- unknown files
def _scalar(v) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))


def _flat(d: dict, prefix: str = "", depth: int = 2) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if _scalar(v):
            out[key] = v
        elif isinstance(v, dict) and depth > 0:
            out.update(_flat(v, key + ".", depth - 1))
        elif isinstance(v, list) and len(v) <= 8 and all(_scalar(x) for x in v):
            out[key] = v
    return out


def render_generic(rep) -> str:
    if isinstance(rep, list):
        rep = {"results": rep}
    rows = None
    for key in ("results", "rows", "runs", "models", "table"):
        v = rep.get(key)
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            rows = [_flat(x) for x in v]
            break
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            rows = [{"name": k, **_flat(x)} for k, x in v.items()]
            break
    out = []
    skip = {"machine", "date", "benchmark", "load_avg_start", "load_avg_end", "wall_s"}
    top = {k: v for k, v in _flat({k: v for k, v in rep.items() if k not in skip}, depth=1).items()}
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        cols = [c for c in cols if any(r.get(c) is not None for r in rows)][:14]
        out.append(table(cols, [[fmt(r.get(c)) for c in cols] for r in rows]))
        top = {k: v for k, v in top.items() if not k.startswith(("results", "rows", "runs", "models", "table"))}
    if top:
        out.append(("\n" if out else "") + table(["field", "value"], [[k, fmt(v)] for k, v in list(top.items())[:40]]))
    return "\n".join(out) + "\n"


def _mean_std(m: dict | None) -> str:
    if not m:
        return ""
    return fmt(m["mean"], 4) + (f" ± {fmt(m['std'], 4)}" if m.get("n", 1) > 1 else "")


def render_quality(rep) -> str:
    """quality_*.json: the test metrics per row over seeds (mean ± std), the cold-item views when
    the split holds items out, then the generic table of the runs."""
    out = []
    summ = rep.get("summary") or {}
    keys = [k for k in ("recall@20", "recall@40", "ndcg@20", "ndcg@100", "hr@10", "ndcg@10")
            if any(k in m for m in summ.values())]
    if summ:
        out.append(f"Test, full ranking, over seeds {fmt(rep.get('seeds'))}:\n\n"
                   + table(["row", *keys], [[r, *(_mean_std(m.get(k)) for k in keys)] for r, m in summ.items()]))
    for view, rows in (rep.get("summary_cold_items") or {}).items():
        what = (rep.get("cold_views") or {}).get(view, "")
        out.append(f"\nCold items, {view} view ({what}):\n\n"
                   + table(["row", "recall@20", "ndcg@20", "recall@50"],
                           [[r, *(_mean_std(m.get(k)) for k in ("recall@20", "ndcg@20", "recall@50"))]
                            for r, m in rows.items()]))
    return "\n".join(out) + ("\n\n" if out else "") + render_generic(
        {k: v for k, v in rep.items() if k not in ("summary", "summary_sampled", "summary_cold_items")})


RENDER = {"throughput": render_throughput, "throughput_attention": render_throughput, "evaluation": render_evaluation,
          "scaling": render_scaling, "corpus": render_corpus}


def build(results: Path) -> str:
    files = sorted(results.glob("*.json"))
    names = {p.stem: p for p in files}
    ordered = [names[n] for n in ORDER if n in names] + [p for p in files if p.stem not in ORDER]
    parts = ["# Benchmarks\n",
             "Generated by `.venv/bin/python benchmarks/make_readme.py` from `benchmarks/results/*.json`: do not "
             "edit by hand, rerun the benchmark and this script. Each section says the machine, the date and the "
             "machine's load average during the run (2-core machines shared with other jobs run slower; ratios "
             "such as MFU are measured within one process and are the figures to compare).\n",
             "Contents: " + ", ".join(f"[{p.stem}](#{p.stem})" for p in ordered) + ".\n"]
    for p in ordered:
        try:
            rep = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            parts.append(f"## {p.stem}\n\n`results/{p.name}` could not be read: {e}\n")
            continue
        head = header(p.stem, rep if isinstance(rep, dict) else {}, p)
        try:
            body = RENDER.get(p.stem, render_quality if p.stem.startswith("quality_") else render_generic)(rep)
        except (KeyError, TypeError, AttributeError, ValueError) as e:   # a changed format: fall back
            body = f"(layout not recognised: {type(e).__name__}: {e}; generic table)\n\n" + render_generic(rep)
        parts.append(f'<a id="{p.stem}"></a>\n{head}\n{body}')
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=HERE / "README.md")
    a = ap.parse_args()
    text = build(a.results)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(a.out)
    print(f"wrote {a.out} ({len(text.splitlines())} lines, {len(list(a.results.glob('*.json')))} results files)")


if __name__ == "__main__":
    main()
