"""The decision rule of issue 30 for a pixel-map candidate, on a bench.accuracy result file.

    .venv/bin/python -m bench.map_rule bench/results/accuracy.json [--base engine]

The file must hold candidate rows `<row>~<name>`, each with the same image scores as `<row>`
and another pixel map: `<row>~mix<w>` (bench.accuracy --map-mix: the engine's row, pure,
online or line, its map mixed) or `<row>@rest~labels` against `<row>@rest` (--label-choice:
the map chosen from labelled defects, both on the images left after the labelled ones).
Per protocol and K, a candidate replaces the default only when
(a) the suite mean improves: mean pixel AUROC up and mean image AUROC not down;
(b) no category with 30+ evaluated images falls below the lower end of the default's 95%
    interval (image or pixel);
(c) leave-one-category-out agrees: for each category, the choice made on the others
    (the best candidate by mean pixel AUROC among those passing (a) and (b) there, else the
    default) still holds on it: its pixel AUROC there is not below the default's. Out of
    sample, a held-out category must not pay for the others' gain; the 95% interval is not
    used here, since the small categories' intervals (12-16 images) would pass almost any
    loss. The lead-out of each held-out category is printed with its interval.
Prints a markdown table and the verdict per protocol and K.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MIN_IMAGES = 30


def _key(r: dict) -> str:
    return f"{r['root']}/{r['category']}"


def _below(cand: dict, ref: dict) -> bool:
    if ref.get("image_ci") and cand["image_auroc"] < ref["image_ci"][0]:
        return True
    return bool(ref.get("pixel_ci")) and cand["pixel_auroc"] < ref["pixel_ci"][0]


def _passes(cand: dict[str, dict], ref: dict[str, dict], cats: list[str]) -> tuple[bool, float]:
    """(a) and (b) on `cats`; returns (passes, mean pixel gain)."""
    d_pix = float(np.mean([cand[c]["pixel_auroc"] - ref[c]["pixel_auroc"] for c in cats]))
    d_img = float(np.mean([cand[c]["image_auroc"] - ref[c]["image_auroc"] for c in cats]))
    worse = [c for c in cats if ref[c]["n_evaluated"] >= MIN_IMAGES and _below(cand[c], ref[c])]
    return d_pix > 0 and d_img >= 0 and not worse, d_pix


def _holds(cand: dict, ref: dict) -> bool:
    return cand["pixel_auroc"] - ref["pixel_auroc"] >= -0.05  # equal at the table's 0.1


def _held_out(cands: dict, ref: dict, c: str, pick: str | None, held: bool) -> str:
    if pick is None:
        return ""
    delta = cands[pick][c]["pixel_auroc"] - ref[c]["pixel_auroc"]
    return f" ({delta:+.1f} there{'' if held else ', does NOT hold'})"


def decide(rows: list[dict], base: str, k: object) -> list[str]:
    """Table rows and verdict for one base row (e.g. "engine+line") at K = k."""
    sel = [r for r in rows if r["shots"] == k and r.get("pixel_auroc") is not None]
    ref = {_key(r): r for r in sel if r["method"] == base}
    names = sorted({r["method"] for r in sel if r["method"].startswith(base + "~")})
    cands = {n: {_key(r): r for r in sel if r["method"] == n} for n in names}
    cats = sorted(c for c in ref if all(c in cands[n] for n in names))
    if not cats or not names:
        return []
    out = [f"#### {base}, K = {k}", "",
           "| category | n | default | " + " | ".join(n.split("~")[1] for n in names) + " |",
           "|---|---|---|" + "---|" * len(names)]  # fmt: skip
    for c in cats:
        ci = ref[c].get("pixel_ci")
        dflt = f"{ref[c]['pixel_auroc']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")
        out.append(f"| {c} | {ref[c]['n_evaluated']} | {dflt} | "
                   + " | ".join(f"{cands[n][c]['pixel_auroc']:.1f}" for n in names) + " |")
    mean = [float(np.mean([cands[n][c]["pixel_auroc"] for c in cats])) for n in names]
    base_mean = float(np.mean([ref[c]["pixel_auroc"] for c in cats]))
    out.append(f"| **mean pixel** | | **{base_mean:.2f}** | "
               + " | ".join(f"**{m:.2f}**" for m in mean) + " |")
    verdicts = {n: _passes(cands[n], ref, cats) for n in names}
    ok = [n for n in names if verdicts[n][0]]
    best = max(ok, key=lambda n: verdicts[n][1]) if ok else None
    loco = []
    for c in cats:
        others = [o for o in cats if o != c]
        passing = [(n, _passes(cands[n], ref, others)) for n in names]
        good = [(n, v[1]) for n, v in passing if v[0]]
        pick = max(good, key=lambda x: x[1])[0] if good else None
        held = True if pick is None else _holds(cands[pick][c], ref[c])
        loco.append((c, pick, held))
    agree = all(h for _c, _p, h in loco)
    out += ["", f"- (a)+(b) on all categories: {best or 'no candidate passes'}"
            + "".join(f"; {n.split('~')[1]}: mean {verdicts[n][1]:+.2f}"
                      + ("" if verdicts[n][0] else " (fails)") for n in names),  # fmt: skip
            "- (c) leave-one-category-out: " + "; ".join(
                f"without {c.split('/')[-1]}: {(p or 'default').split('~')[-1]}"
                + _held_out(cands, ref, c, p, h) for c, p, h in loco),  # fmt: skip
            f"- verdict: {'CHANGE to ' + best if best and agree else 'keep the default'}", ""]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    args = ap.parse_args()
    rows = json.loads(args.results.read_text())["categories"]
    bases = sorted({r["method"].split("~")[0] for r in rows if "~" in r["method"]})
    lines = [f"Pixel AUROC, default vs map candidates ({args.results}); "
             "image AUROC is the default's in every candidate", ""]  # fmt: skip
    for base in bases:
        for k in sorted({r["shots"] for r in rows if r["method"] == base}, key=str):
            lines += decide(rows, base, k)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
