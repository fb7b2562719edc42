"""The Gluon async-wgmma INT4 tiles (kvant.kernels.w4a16_wgmma and/or its warp-specialized form, --tile wgmma_ws) at
16..256 rows over its configs, against bf16 cuBLAS and what the INT4 dispatch runs today
(kvant.kernels.w4a16_repacked.w4a16_repacked_gemm, static picks unless a tuned table is present), on Llama-3.1-8B's
merged g128 shapes, with the copy rate measured in the same run. Every candidate is first checked against the product
with the bf16-rounded weights on fresh random inputs, then timed as CUDA-graph replays over weight copies that L2
cannot hold (bench/w4a16_table.graph_us).

    source bench/gpu_env.sh && python -P bench/w4a16_wgmma_sweep.py --out $OUT/wgmma.json [--rows 16,32,64,128,256] \
        [--tile wgmma,wgmma_ws] [--table $KVANT_HOME/w4a16_tune.json]
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from w4a16_gemv_sweep import SHAPES, copies, int4_operands  # noqa: E402
from w4a16_wide_sweep import add_bf16_rows, check_and_time, run_shapes  # noqa: E402

MAX_ERR = 1e-2


# the tiles this sweeps: entry point name in kvant.kernels (module of the same name), and where a config holds its
# token tile (what the call runs is deduplicated: a config's tokens above the row count change nothing)
TILES = {"wgmma": ("w4a16_wgmma", 4), "wgmma_ws": ("w4a16_wgmma_ws", 5)}


def sweep_shape(name, k, n, rows, rw_rate, tiles=("wgmma",)):
    import importlib

    from kvant.kernels.w4a16_gemm import dequant_w4_ref
    from kvant.kernels.w4a16_repacked import w4a16_repacked_gemm

    group = 128
    _, (packed, scale, zp), (qweight, scales, zeros) = int4_operands(k, n, group, False)
    w16 = dequant_w4_ref(packed, scale, group, zp).to(torch.bfloat16)
    w_bytes = n * k // 2 + scales.numel() * 2
    c = copies(w_bytes)
    packs = [(qweight, scales, zeros)] + [(qweight.clone(), scales.clone(), None) for _ in range(c - 1)]
    out = []
    for m in rows:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        ref = x @ w16.t()
        nbytes = w_bytes + 2 * m * (k + n)

        def measure(fmt, fn, config=None):
            r = dict(shape=name, k=k, n=n, m=m, format=fmt, config=config, copies=c,
                     **check_and_time(fn, x, packs, ref, nbytes, rw_rate, MAX_ERR))
            out.append(r)
            print(f"  {name} m={m} {fmt} {config}: {r.get('us', r.get('error'))}", flush=True)

        measure("dispatch", lambda x, qw, s, z: w4a16_repacked_gemm(x, qw, s, group, z))
        for tile in tiles:
            mod_name, ti = TILES[tile]
            mod = importlib.import_module(f"kvant.kernels.{mod_name}")
            entry = getattr(mod, mod_name)
            seen = set()
            for cf in mod.CONFIGS:
                runs = (*cf[:ti], min(cf[ti], max(16, triton.next_power_of_2(m))), *cf[ti + 1:])  # what the call runs
                if runs in seen:
                    continue
                seen.add(runs)
                measure(tile, lambda x, qw, s, z, cf=cf, entry=entry: entry(x, qw, s, group, z, config=cf), list(cf))
    packs.clear()
    del w16
    return add_bf16_rows(out, name, k, n, rows, rw_rate)


def summary(rows_out) -> list[str]:
    lines = []
    for shape, m in sorted({(r["shape"], r["m"]) for r in rows_out}):
        rs = [r for r in rows_out if (r["shape"], r["m"]) == (shape, m) and r.get("us")]
        bf = next((r for r in rs if r["format"] == "bf16 cuBLAS"), None)
        dp = next((r for r in rs if r["format"] == "dispatch"), None)
        wg = sorted((r for r in rs if r["format"] in TILES), key=lambda r: r["us"])
        best = "; ".join(f"{r['us']:.2f} ({r['vs_bf16']:.2f}x, {r['pct_copy']}% copy) {r['config']}" for r in wg[:2])
        lines.append(f"{shape:14s} m={m:<3d} bf16 {bf['us'] if bf else '-'} | dispatch "
                     f"{dp['us'] if dp else '-'} ({dp['vs_bf16'] if dp else '-'}x) | wgmma best: {best}")
    return lines


def write_table(path, device, shapes, rows, results, margin=0.97) -> None:
    """The tuner's table (kvant.kernels.w4a16_tune's format) with the fastest config of either wgmma tile for each
    shape and row bucket where it beat the dispatch's kernel by more than 1 - margin; elsewhere no entry (the static
    dispatch)."""
    from kvant.kernels.w4a16_tune import key

    table = {}
    for name in shapes:
        k, n = SHAPES[name]
        for m in rows:
            rs = [r for r in results if (r["shape"], r["m"]) == (name, m) and r.get("us")]
            disp = next((r for r in rs if r["format"] == "dispatch"), None)
            wg = min((r for r in rs if r["format"] in TILES), key=lambda r: r["us"], default=None)
            if wg and disp and wg["us"] < margin * disp["us"]:
                table[key(device, k, n, 128, False, m, repacked=True)] = [wg["format"], wg["config"]]
    Path(path).write_text(json.dumps(table, indent=0, sort_keys=True))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="JSON file, rewritten after each shape")
    ap.add_argument("--shapes", default="llama gate_up,llama down,llama qkv,llama o")
    ap.add_argument("--rows", default="16,32,64,128,256")
    ap.add_argument("--tile", default="wgmma",
                    help="comma-separated: the single-partition tile (wgmma), the warp-specialized one (wgmma_ws)")
    ap.add_argument("--table", default=None,
                    help="write the wgmma picks that beat the dispatch here (w4a16_tune.json's format)")
    a = ap.parse_args()
    tiles = tuple(t.strip() for t in a.tile.split(","))
    if not set(tiles) <= set(TILES):
        ap.error(f"--tile takes {', '.join(TILES)}; got {a.tile}")
    shapes = [s.strip() for s in a.shapes.split(",")]
    rows = [int(r) for r in a.rows.split(",")]
    run_shapes(a.out, shapes, rows, lambda name, k, n, rw: sweep_shape(name, k, n, rows, rw, tiles), summary,
               write_table, a.table)


if __name__ == "__main__":
    main()
