"""`kvant quantize` against llm-compressor on one model: same scheme, same calibration token ids, same evaluator.

Runs in kvant's venv; the peer runs in its own venv (llm-compressor pins other transformers/compressed-tensors
versions), through this same file's `peer-quantize` stage:

    python bench/quality.py --peer-python /tmp/llmc-venv/bin/python \
        --data-dir ../shared/data --schemes w4a16,w4a16-rtn,fp8 --work /tmp/qb

Schemes: w4a16 (GPTQ, group 64), w4a16-awq (AWQ then round-to-nearest, group 64), w8a8 (SmoothQuant 0.5 + GPTQ),
w4a16-rtn and fp8 (data-free).
Stages (all by default, in order; work whose result is already saved at the same limits is not redone unless --redo):
  calib    kvant's calibration loader -> WORK/calib-N-L.json (token ids both tools calibrate on)
  quantize each tool x scheme under /usr/bin/time -v: wall time, peak RSS, artifact size
  eval     base and every artifact through kvant's engine and lm-eval (KvantLM), same tasks and limits
  weights  the two tools' tensors compared name by name (int4/fp8 codes, scales, codes vs round(w / scale))
  hf       wikitext word perplexity of the base and one artifact per tool, in transformers and in kvant's engine
  (always) quantize-summary.json and a markdown table of every result so far; `--stages table` does only that
Results: bench/results/quantize-<tool>-<scheme>.json, quantize-weights-check.json, quantize-hf-check.json,
quantize-summary.json. Write-up: bench/QUANTIZE.md.

Why one file of ~500 lines: the peer's venv (llm-compressor, no kvant) runs this same file (`peer-quantize`), and
under PYTHONSAFEPATH=1, as this project runs Python, a sibling module is not importable there; both sides must
share one copy of the schemes, recipes and calibration settings (SCHEMES, WRITTEN_RECIPES, GPTQ) so the comparison
stays like for like.
"""
import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
RESULTS = HERE.parent / "results"
MODEL = "smollm2-135m"
TOOLS = ("kvant", "llmcompressor")
# kvant's shipped recipe per scheme; the peer's modifiers below mirror it field by field
KVANT_RECIPES = {"w4a16": "w4a16-gptq-g64", "w8a8": "w8a8-int8", "fp8": "fp8-dynamic"}  # others: WRITTEN_RECIPES
SCHEMES = ("w4a16", "w4a16-awq", "w8a8", "w4a16-rtn", "fp8", "w4a16-minmax", "w4a16-mse", "w4a16-asym", "w4a16-asym-mse",
           "w4a16-awq-gptq", "w4a16-awq-gptq-mse", "w4a16-awq-gptq-asym-mse")
DATA_FREE = ("w4a16-rtn", "fp8")
# kvant ships no data-free INT4 recipe at group size 64; this one is written into --work and used as is
W4A16_RTN_RECIPE = """description: INT4 weight-only round-to-nearest, group size 64 (data-free)
scheme: W4A16
group_size: 64
targets: [Linear]
ignore: [lm_head]
algorithm: rtn
"""
# kvant's shipped w4a16-awq recipe (20-point grid, duo scaling, clipping search) at group size 64
W4A16_AWQ_RECIPE = """description: INT4 weight-only, group size 64, AWQ scale and clipping search then round-to-nearest
scheme: W4A16
group_size: 64
targets: [Linear]
ignore: [lm_head]
algorithm: awq
n_grid: 20
duo_scaling: true
clip_search: true
"""
# issue #19's INT4 options, kvant only (no peer run): each is kvant's GPTQ g64 recipe with one or more changes
W4A16_GPTQ = """description: INT4 weight-only GPTQ g64, {what}
scheme: {scheme}
group_size: 64
targets: [Linear]
ignore: [lm_head]
algorithm: {algorithm}
dampening_frac: 0.01
actorder: static
observer: {observer}
"""
GPTQ_VARIANTS = {  # scheme name -> (what, preset, algorithm, observer)
    "w4a16-minmax": ("symmetric, full-range scales (the recipe before issue 19)", "W4A16", "gptq", "minmax"),
    "w4a16-mse": ("MSE range search", "W4A16", "gptq", "mse"),
    "w4a16-asym": ("asymmetric zero points", "W4A16_ASYM", "gptq", "minmax"),
    "w4a16-asym-mse": ("asymmetric zero points, MSE range search", "W4A16_ASYM", "gptq", "mse"),
    "w4a16-awq-gptq": ("AWQ scaling and clipping before GPTQ", "W4A16", "awq+gptq", "minmax"),
    "w4a16-awq-gptq-mse": ("AWQ before GPTQ, MSE range search", "W4A16", "awq+gptq", "mse"),
    "w4a16-awq-gptq-asym-mse": ("AWQ before GPTQ, asymmetric, MSE range search", "W4A16_ASYM", "awq+gptq", "mse"),
}
WRITTEN_RECIPES = {"w4a16-rtn": W4A16_RTN_RECIPE, "w4a16-awq": W4A16_AWQ_RECIPE,
                   **{name: W4A16_GPTQ.format(what=what, scheme=preset, algorithm=algorithm, observer=observer)
                      for name, (what, preset, algorithm, observer) in GPTQ_VARIANTS.items()}}
GPTQ = {"dampening_frac": 0.01, "block_size": 128, "actorder": "static"}  # kvant's recipe defaults
MC_TASKS = ("kvant_arc_easy", "kvant_hellaswag")
PPL_TASK = "kvant_wikitext"


# ---- peer side (runs in llm-compressor's venv: no kvant imports here)

def peer_recipe(scheme: str) -> list:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    if scheme == "fp8":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"])]
    if scheme in ("w4a16", "w4a16-rtn", "w4a16-awq"):
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=64)
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        if scheme == "w4a16-rtn":
            return [QuantizationModifier(config_groups=groups, ignore=["lm_head"])]
        if scheme == "w4a16-awq":  # its default Llama mappings are kvant's four smoothing pairs
            return [AWQModifier(duo_scaling=True, n_grid=20),
                    QuantizationModifier(config_groups=groups, ignore=["lm_head"])]
        return [GPTQModifier(config_groups=groups, ignore=["lm_head"], **GPTQ)]
    if scheme == "w8a8":
        # kvant's SmoothQuant pairs: input_layernorm -> q/k/v, post_attention_layernorm -> gate/up
        mappings = [[["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"],
                    [["re:.*gate_proj", "re:.*up_proj"], "re:.*post_attention_layernorm"]]
        return [SmoothQuantModifier(smoothing_strength=0.5, mappings=mappings),
                GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"], **GPTQ)]
    raise SystemExit(f"unknown scheme {scheme!r}")


def peer_quantize(args) -> None:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    if not torch.accelerator.is_available():
        # its AWQ step pins cached activations for faster host-to-device copies, which fails without an accelerator;
        # pinning changes no value, so on CPU it is skipped and the algorithm runs unchanged
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, *a, **k: None
    started = time.perf_counter()  # after start-up and imports, as kvant's "wrote ... in N s" counts
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    kwargs = {}
    if args.scheme not in DATA_FREE:
        ids = json.loads(Path(args.calib).read_text())["input_ids"]
        ds = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
        kwargs = {"dataset": ds, "num_calibration_samples": len(ids), "max_seq_length": max(map(len, ids)),
                  "shuffle_calibration_samples": False}
    oneshot(model=model, recipe=peer_recipe(args.scheme), **kwargs)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, save_compressed=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    print(f"work_s {time.perf_counter() - started:.2f}", flush=True)


# ---- kvant side

def export_calibration(num_samples: int, seq_len: int, path: Path) -> dict:
    from transformers import AutoTokenizer

    from kvant.engine.registry import resolve_model
    from kvant.quantize.calibration_data import load_calibration
    from kvant.quantize.recipe import load_recipe

    recipe = load_recipe(KVANT_RECIPES["w4a16"]).with_calibration(num_samples=num_samples, seq_len=seq_len)
    calib = load_calibration(recipe.calibration, AutoTokenizer.from_pretrained(resolve_model(MODEL)))
    data = {"source": calib.source, "seed": recipe.calibration.seed, "num_samples": num_samples, "seq_len": seq_len,
            "sha256": calib.sha256, "input_ids": [t.tolist() for t in calib.input_ids]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return data


def _timed(cmd: list[str], log: Path) -> dict:
    # wall time and peak RSS of one process tree's largest process (GNU time's "Maximum resident set size")
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed (exit {rc}); see {log}")
    return {"wall_s": round(wall, 1), "cpu_s": _cpu_s(log),
            "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None}


def _cpu_s(log: Path) -> float | None:
    # user + system seconds from GNU time: unlike wall time, barely moved by another job sharing the cores
    text = log.read_text(errors="replace") if log.is_file() else ""
    user, system = (re.search(rf"{k} time \(seconds\): ([0-9.]+)", text) for k in ("User", "System"))
    return round(float(user.group(1)) + float(system.group(1)), 1) if user and system else None


def _work_s(tool: str, log: Path) -> float | None:
    # the run after interpreter start-up and imports: kvant prints "wrote DIR in N s", the peer stage "work_s N"
    text = log.read_text(errors="replace") if log.is_file() else ""
    work = re.search(r"^wrote .* in ([0-9.]+)s" if tool == "kvant" else r"^work_s ([0-9.]+)", text, re.M)
    return float(work.group(1)) if work else None


def _sizes(folder: Path) -> dict:
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {"weights_mib": round(weights / 2**20, 2), "folder_mib": round(total / 2**20, 2)}


def quantize_one(tool: str, scheme: str, args, calib_path: Path) -> dict:
    out = args.work / f"{tool}-{scheme}"
    log = args.work / f"{tool}-{scheme}.log"
    if tool == "kvant":
        recipe = KVANT_RECIPES.get(scheme)
        if scheme in WRITTEN_RECIPES:
            recipe = str(args.work / f"{scheme}-g64.yaml")
            Path(recipe).write_text(WRITTEN_RECIPES[scheme], encoding="utf-8")
        calib = [] if scheme in DATA_FREE else ["--num-samples", str(args.num_samples), "--seq-len", str(args.seq_len)]
        cmd = [str(Path(sys.executable).parent / "kvant"), "quantize", MODEL, "--recipe", recipe, *calib,
               "--out", str(out), "--force", "--device", "cpu"]
    else:
        from kvant.engine.registry import resolve_model

        if out.exists():
            import shutil

            shutil.rmtree(out)
        cmd = [args.peer_python, str(HERE), "peer-quantize", "--scheme", scheme, "--out", str(out),
               "--model-path", str(resolve_model(MODEL)), "--threads", str(args.threads)]
        if scheme not in DATA_FREE:
            cmd += ["--calib", str(calib_path)]
    stats = _timed(cmd, log)
    stats["work_s"] = _work_s(tool, log)
    info = {"tool": tool, "scheme": scheme, "artifact": str(out), "command": " ".join(cmd), **stats, **_sizes(out)}
    if tool == "kvant":
        manifest = json.loads((out / "kvant.json").read_text())
        info["calibration_sha256"] = manifest["calibration"].get("sha256")
        info["kvant_reported_time_s"] = manifest["calibration"].get("time_s")
    info["quantization_config"] = json.loads((out / "config.json").read_text()).get("quantization_config")
    return info


def _metric(res: dict, name: str) -> tuple[float | None, float | None]:
    value, err = res.get(f"{name},none"), res.get(f"{name}_stderr,none")
    return value, (err if isinstance(err, (int, float)) else None)


def evaluate(path: Path, args, done: dict | None = None) -> dict:
    # `done`: this model's earlier results; parts already run at the same limit are kept, not re-run
    import gc

    from kvant.eval.lm import KvantLM
    from kvant.eval.runner import plan_tasks, run_tasks

    out = dict(done or {}) if not args.redo else {}
    need_ppl = (out.get("wikitext") or {}).get("limit") != args.ppl_limit
    mc_tasks = tuple(t for t in MC_TASKS if args.mc_limit and
                     (out.get(t.removeprefix("kvant_")) or {}).get("limit") != args.mc_limit)
    if not need_ppl and not mc_tasks:
        return out
    plan = plan_tasks((PPL_TASK, *MC_TASKS), args.data_dir)
    out["load_error"] = None
    try:
        lm = KvantLM(pretrained=path, max_model_len=args.max_model_len)
    except Exception as exc:  # a finding, not a crash: report what kvant's loader said about the peer's artifact
        out["load_error"] = f"{type(exc).__name__}: {exc}"
        return out
    if need_ppl:
        start = time.perf_counter()
        ppl = run_tasks(lm, plan, (PPL_TASK,), args.ppl_limit)[PPL_TASK]
        out["wikitext"] = {"limit": args.ppl_limit, "word_perplexity": _metric(ppl, "word_perplexity")[0],
                           "bits_per_byte": _metric(ppl, "bits_per_byte")[0],
                           "eval_s": round(time.perf_counter() - start, 1)}
    if mc_tasks:
        start = time.perf_counter()
        mc = run_tasks(lm, plan, mc_tasks, args.mc_limit)
        for task in mc_tasks:
            acc, acc_err = _metric(mc[task], "acc")
            norm, norm_err = _metric(mc[task], "acc_norm")
            out[task.removeprefix("kvant_")] = {"limit": args.mc_limit, "acc": acc, "acc_stderr": acc_err,
                                                "acc_norm": norm, "acc_norm_stderr": norm_err}
        out["mc_eval_s"] = round(time.perf_counter() - start, 1)
    lm.llm = None
    gc.collect()
    return out


# ---- transformers cross-check: lm-eval's wikitext word perplexity, one window per page (pages < max_model_len)

def hf_wikitext(path: Path, pages: list[str], max_len: int) -> dict:
    import torch
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll, words, tokens = 0.0, 0, 0
    with torch.no_grad():
        for page in pages:
            ids = tok(wikitext_detokenizer({"page": page}), add_special_tokens=False)["input_ids"]
            if len(ids) + 1 > max_len:
                raise SystemExit(f"page of {len(ids)} tokens exceeds {max_len}: lower --hf-pages")
            x = torch.tensor([[prefix, *ids]])
            logp = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1)
            nll -= float(logp.gather(1, x[0, 1:, None]).sum())
            words += len(re.split(r"\s+", page))
            tokens += len(ids)
    return {"pages": len(pages), "tokens": tokens, "word_perplexity": math.exp(nll / words),
            "token_perplexity": math.exp(nll / tokens)}


def kvant_wikitext(path: Path, pages: list[str], max_len: int) -> dict:
    # the same pages and windows through kvant's engine (prompt logprobs), for a like-for-like comparison
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    from kvant.engine import LLM, SamplingParams

    llm = LLM(str(path), max_model_len=max_len, enable_prefix_caching=False)
    tok = llm.tokenizer
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll, words, tokens = 0.0, 0, 0
    for page in pages:
        ids = tok(wikitext_detokenizer({"page": page}), add_special_tokens=False)["input_ids"]
        seq = [prefix, *ids]
        out = llm.generate([seq], SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0))[0]
        nll -= sum(lp[t] for t, lp in zip(seq[1:], out.prompt_logprobs[1:], strict=True))
        words += len(re.split(r"\s+", page))
        tokens += len(ids)
    return {"pages": len(pages), "tokens": tokens, "word_perplexity": math.exp(nll / words),
            "token_perplexity": math.exp(nll / tokens)}


def hf_check(models: dict[str, Path], args) -> dict:
    from kvant.eval.data import wikitext

    pages = [row["page"] for _, row in zip(range(args.hf_pages), wikitext(args.data_dir))]
    out = {}
    for name, path in models.items():
        row = {"path": str(path)}
        for who, fn in (("transformers", hf_wikitext), ("kvant_engine", kvant_wikitext)):
            try:
                row[who] = fn(path, pages, args.max_model_len)
            except Exception as exc:
                row[who] = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        out[name] = row
        print(f"hf-check {name}: {json.dumps(row)}", flush=True)
    return out


# ---- the two tools' tensors side by side (same names expected: both write compressed-tensors)

def _nearest_codes(w, scale, kind: str, fp32: bool):
    # the codes a weight gets from its saved scale: w / scale in float32, or in the checkpoint's bf16 as well
    import torch

    scale = scale.repeat_interleave(w.shape[1] // scale.shape[1], dim=1)
    ratio = (w.float() / scale.float()) if fp32 else (w / scale.to(w.dtype)).float()
    if kind == "int4":
        return torch.round(ratio).clamp(-8, 7).int()
    return ratio.clamp(-448, 448).to(torch.float8_e4m3fn).view(torch.int8).int()


def compare_weights(a_dir: Path, b_dir: Path, base_dir: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    from kvant.kernels.int4_pack import unpack_int4

    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    base = {}
    for f in sorted(base_dir.glob("*.safetensors")):
        base.update(load_file(str(f)))
    out = {"only_a": sorted(set(a) - set(b)), "only_b": sorted(set(b) - set(a)), "identical": 0, "different": {}}
    codes = differ = 0
    # fraction of codes equal to round-to-nearest of w / scale computed in fp32 and in bf16, per tool
    match = {f"{t}_{m}": [0, 0] for t in ("a", "b") for m in ("fp32", "bf16")}
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            out["different"][k] = f"{x.dtype} {tuple(x.shape)} vs {y.dtype} {tuple(y.shape)}"
            continue
        if torch.equal(x, y):
            out["identical"] += 1
            continue
        kind, prefix = None, k.rsplit(".", 1)[0] + "."
        if k.endswith("weight_packed"):  # compare the int4 codes, not the packed words
            cols = int(a[prefix + "weight_shape"][1])
            x, y, kind = unpack_int4(x, cols).int(), unpack_int4(y, cols).int(), "int4"
        elif x.dtype == torch.float8_e4m3fn:
            x, y, kind = x.view(torch.int8).int(), y.view(torch.int8).int(), "fp8"  # one step = one code apart
        if kind and prefix + "weight" in base and torch.equal(a[prefix + "weight_scale"], b[prefix + "weight_scale"]):
            for m in ("fp32", "bf16"):
                ref = _nearest_codes(base[prefix + "weight"], a[prefix + "weight_scale"], kind, m == "fp32")
                for t, q in (("a", x), ("b", y)):
                    match[f"{t}_{m}"][0] += int((q == ref).sum())
                    match[f"{t}_{m}"][1] += ref.numel()
        d = (x.float() - y.float()).abs()
        codes += d.numel()
        differ += int((d > 0).sum())
        out["different"][k] = {"fraction": float((d > 0).float().mean()), "max_abs_diff": float(d.max())}
    out["codes_compared"], out["codes_differing"] = codes, differ
    out["codes_equal_to_nearest"] = {k: (n / d if d else None) for k, (n, d) in match.items()}
    kinds = {k.rsplit(".", 1)[-1] for k in out["different"]}
    out["summary"] = (f"{out['identical']} tensors identical, {len(out['different'])} differ ({sorted(kinds)}); "
                      f"{differ}/{codes} codes of the differing tensors differ; codes equal to round(w / scale) "
                      f"(a = kvant, b = llm-compressor): {json.dumps(out['codes_equal_to_nearest'])}")
    return out


# ---- driver

def _versions(peer_python: str) -> dict:
    import importlib.metadata as md

    mine = {p: md.version(p) for p in ("torch", "transformers", "compressed-tensors", "lm_eval", "kvant")}
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('torch', 'transformers', 'compressed-tensors', 'llmcompressor')}))")
    peer = json.loads(subprocess.run([peer_python, "-c", code], capture_output=True, text=True, check=True).stdout)
    return {"kvant_venv": mine, "peer_venv": peer}


def _write(name: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _read(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _fmt(v, spec=".3f") -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    # markdown: one line per model; recovery = metric / base metric (perplexity: base / quant, so higher is better)
    base = next((r.get("eval") for r in rows if r["tool"] == "base"), None) or {}
    head = ("| tool | scheme | quantize wall s | work s | CPU s | peak RSS MiB | weights MiB | wikitext word ppl | arc_easy acc | "
            "hellaswag acc_norm | recovery ppl / arc / hs |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        e = r.get("eval") or {}
        if r.get("status"):  # a run stopped before it wrote an artifact
            lines.append(f"| {r['tool']} | {r['scheme']} | not finished: {r['status']} | | | | | | | | |")
            continue
        if e.get("load_error"):
            lines.append(f"| {r['tool']} | {r['scheme']} | {_fmt(r.get('wall_s'), '.0f')} | "
                         f"{_fmt(r.get('work_s'), '.1f')} | {_fmt(r.get('cpu_s'), '.1f')} | "
                         f"{_fmt(r.get('peak_rss_mib'), '.0f')} | {_fmt(r.get('weights_mib'), '.1f')} | "
                         f"load error: {e['load_error']} | | | |")
            continue
        ppl = (e.get("wikitext") or {}).get("word_perplexity")
        arc, hs = e.get("arc_easy") or {}, e.get("hellaswag") or {}
        bppl = (base.get("wikitext") or {}).get("word_perplexity")
        rec = [bppl / ppl if ppl and bppl else None,
               arc.get("acc") / base["arc_easy"]["acc"] if arc.get("acc") and base.get("arc_easy") else None,
               hs.get("acc_norm") / base["hellaswag"]["acc_norm"] if hs.get("acc_norm") and base.get("hellaswag")
               else None]
        lines.append(f"| {r['tool']} | {r['scheme']} | {_fmt(r.get('wall_s'), '.1f')} | "
                     f"{_fmt(r.get('work_s'), '.1f')} | {_fmt(r.get('cpu_s'), '.1f')} | "
                     f"{_fmt(r.get('peak_rss_mib'), '.0f')} | {_fmt(r.get('weights_mib'), '.1f')} | {_fmt(ppl, '.2f')} | "
                     f"{_fmt(arc.get('acc'))} ± {_fmt(arc.get('acc_stderr'))} | "
                     f"{_fmt(hs.get('acc_norm'))} ± {_fmt(hs.get('acc_norm_stderr'))} | "
                     f"{' / '.join(_fmt(x) for x in rec)} |")
    return "\n".join(lines)


def main() -> None:
    global RESULTS
    if len(sys.argv) > 1 and sys.argv[1] == "peer-quantize":
        p = argparse.ArgumentParser()
        for flag in ("--scheme", "--out", "--model-path", "--calib"):
            p.add_argument(flag, required=flag != "--calib")
        p.add_argument("--threads", type=int, default=2)
        peer_quantize(p.parse_args(sys.argv[2:]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="calib,quantize,eval,weights,hf")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--tools", default=",".join(("base", *TOOLS)), help="base (eval only), kvant, llmcompressor")
    p.add_argument("--peer-python", default="/tmp/llmc-venv/bin/python")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/kvant-quantize-bench"))
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--ppl-limit", type=int, default=20, help="wikitext pages")
    p.add_argument("--mc-limit", type=int, default=300, help="arc_easy / hellaswag items (0: skip them)")
    p.add_argument("--hf-pages", type=int, default=3, help="first wikitext pages (each must fit max-model-len)")
    p.add_argument("--max-model-len", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--redo", action="store_true", help="recompute results that already exist")
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results")
    args = p.parse_args()
    RESULTS = args.results
    import torch

    torch.set_num_threads(args.threads)
    stages, schemes, tools = (set(s.split(",")) for s in (args.stages, args.schemes, args.tools))
    args.work.mkdir(parents=True, exist_ok=True)
    calib_path = args.work / f"calib-{args.num_samples}-{args.seq_len}.json"
    if "calib" in stages and (args.redo or not calib_path.is_file()):
        data = export_calibration(args.num_samples, args.seq_len, calib_path)
        print(f"calibration: {data['num_samples']} x {data['seq_len']} tokens, sha256 {data['sha256']}", flush=True)

    from kvant.engine.registry import resolve_model

    runs = [(t, s) for s in SCHEMES if s in schemes for t in TOOLS if t in tools]
    for tool, scheme in runs:
        name = f"quantize-{tool}-{scheme}.json"
        row = _read(name) or {}
        if "quantize" in stages and (args.redo or "wall_s" not in row):
            row = quantize_one(tool, scheme, args, calib_path)
            row["calibration"] = {"num_samples": args.num_samples, "seq_len": args.seq_len,
                                  "sha256": json.loads(calib_path.read_text())["sha256"]} if scheme not in DATA_FREE else None
            _write(name, row)
            print(f"{tool} {scheme}: {row['wall_s']} s, {row['peak_rss_mib']} MiB, {row['weights_mib']} MiB",
                  flush=True)
    for tool, scheme in runs:  # rows quantized before the work time was recorded: read it from their logs
        row = _read(f"quantize-{tool}-{scheme}.json")
        log = args.work / f"{tool}-{scheme}.log"
        if row and "wall_s" in row and (row.get("work_s") is None or row.get("cpu_s") is None):
            row["work_s"], row["cpu_s"] = row.get("work_s") or _work_s(tool, log), row.get("cpu_s") or _cpu_s(log)
            _write(f"quantize-{tool}-{scheme}.json", row)
    if "eval" in stages:
        targets = [("base", "bf16", resolve_model(MODEL))] if "base" in tools else []
        targets += [(t, s, args.work / f"{t}-{s}") for t, s in runs]
        for tool, scheme, path in targets:
            name = f"quantize-{tool}-{scheme}.json"
            row = _read(name) or {"tool": tool, "scheme": scheme, "artifact": str(path)}
            row["eval"] = evaluate(path, args, row.get("eval"))
            _write(name, row)
            print(f"eval {tool} {scheme}: {json.dumps(row['eval'])}", flush=True)
    if "hf" in stages:
        models = {"base-bf16": resolve_model(MODEL)}
        for tool in TOOLS:
            scheme = next((s for t, s in runs if t == tool and (args.work / f"{t}-{s}").is_dir()), None)
            if scheme:
                models[f"{tool}-{scheme}"] = args.work / f"{tool}-{scheme}"
        _write("quantize-hf-check.json", {"pages": args.hf_pages, "models": hf_check(models, args)})
    if "weights" in stages:
        checks = {s: compare_weights(args.work / f"kvant-{s}", args.work / f"llmcompressor-{s}", resolve_model(MODEL))
                  for s in schemes if all((args.work / f"{t}-{s}").is_dir() for t in TOOLS)}
        _write("quantize-weights-check.json", checks)
        for s, c in checks.items():
            print(f"weights {s}: {c['summary']}", flush=True)
    summary = {"model": MODEL, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "versions": _versions(args.peer_python), "threads": args.threads,
               "rows": [r for r in (_read(f"quantize-{t}-{s}.json") for t, s in [("base", "bf16"), *runs]) if r]}
    _write("quantize-summary.json", summary)
    print(table(summary["rows"]))


if __name__ == "__main__":
    main()
