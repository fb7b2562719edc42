"""The model card (README.md) of a pushed artifact, from its manifest and eval results.

Front matter follows the Hub conventions for quantized checkpoints (research/hub-upload.md §4); the text depends only
on its inputs, so re-pushing an unchanged artifact regenerates a byte-identical card and sends no commit.
"""
import re

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from kvant.artifact.schemes import scheme_info

ALGORITHM_TAGS = ("gptq", "awq")  # recipe algorithms worth a tag ("awq+gptq" gets both); rtn gets none
LM_EVAL_URL = "https://github.com/EleutherAI/lm-evaluation-harness"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(name: str | None) -> bool:
    return bool(name) and HUB_ID.match(name) is not None and not name.startswith((".", "/"))


def _algorithms(recipe: dict) -> list[str]:
    parts = str(recipe.get("algorithm") or "").lower().split("+")
    tags = [a for a in ALGORITHM_TAGS if a in parts]
    return tags + (["smoothquant"] if recipe.get("smoothing_strength") is not None else [])


def _calibrated(calib: dict) -> bool:
    return bool(calib.get("source")) and bool(calib.get("num_samples"))


def card_data(manifest: dict, results: dict | None, repo_id: str) -> ModelCardData:
    info = scheme_info(manifest["scheme"])
    weight_tag, scheme_tag = info.weight_tag, info.scheme_tag
    base, calib = manifest["base_model"], manifest.get("calibration") or {}
    tags = ["kvant", weight_tag, scheme_tag, "compressed-tensors", *_algorithms(manifest.get("recipe") or {}),
            "quantized", "vllm"]
    if manifest.get("kv_cache_dtype") == "fp8":
        tags.append("fp8-kv-cache")
    evals = None
    if results is not None:
        source = f"lm-evaluation-harness {results.get('lm_eval_version', '')}".strip()
        evals = [EvalResult(task_type="text-generation", dataset_type=t["task"], dataset_name=t["task"],
                            metric_type=t["metric"], metric_value=t["quant"], source_name=source,
                            source_url=LM_EVAL_URL)
                 for t in results["tasks"]]
        if ppl := results.get("perplexity"):
            evals.append(EvalResult(task_type="text-generation", dataset_type=ppl["task"], dataset_name=ppl["task"],
                                    metric_type="perplexity", metric_value=ppl["quant"], source_name=source,
                                    source_url=LM_EVAL_URL))
    return ModelCardData(
        base_model=base["name"] if is_hub_id(base.get("name")) else None,
        base_model_relation="quantized" if is_hub_id(base.get("name")) else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=base.get("license") or None,
        tags=tags,
        datasets=[calib["source"]] if _calibrated(calib) and is_hub_id(calib["source"]) else None,
        model_name=repo_id.split("/")[-1],
        eval_results=evals or None,
    )


# ---------------------------------------------------------------- body
def _overview(manifest: dict) -> str:
    base, scheme = manifest["base_model"], manifest["scheme"]
    kv = "FP8 (E4M3) with per-layer scales" if manifest.get("kv_cache_dtype") == "fp8" else "model dtype"
    name = base.get("name") or "?"
    link = f"[{name}](https://huggingface.co/{name})" if is_hub_id(name) else f"`{name}`"
    rows = [("Base model", link), ("Base revision", f"`{base.get('revision') or 'unknown'}`"),
            ("Architecture", base.get("architecture") or "?"), ("Scheme", f"`{scheme}`: {scheme_info(scheme).description}"),
            ("KV cache", kv), *_group_size_rows(manifest),
            ("Format", "compressed-tensors"), ("License", base.get("license") or "see the base model"),
            ("Made with", f"kvant {manifest.get('kvant_version', '')}".strip())]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def _mixed_precision(manifest: dict) -> str:
    # a mixed-precision artifact: its bits per weight, the auto search's points, the per-layer choice
    if not manifest.get("layer_schemes"):
        return ""
    from kvant.artifact.tables import layer_table, points_table

    text = (f"## Mixed precision\n\nAverage {manifest.get('bits_per_weight', 0):.3f} bits per decoder-layer Linear "
            "weight, scales included.\n\n")
    points = (manifest.get("auto") or {}).get("points")
    if points:
        text += f"Points validated by `kvant quantize --recipe auto`:\n\n{points_table(points, points[0]['quality_name'])}\n\n"
    return text + f"Per-layer choice:\n\n{layer_table(manifest['layer_schemes'])}\n\n"


def _group_size_rows(manifest: dict) -> list[tuple[str, str]]:
    # INT4 layers whose input size the recipe's group size does not divide
    return [(f"Group size of `{k}`", f"{v} (the recipe's does not divide its input size)")
            for k, v in sorted((manifest.get("group_size_fallbacks") or {}).items())]


def _calibration(manifest: dict) -> str:
    calib = manifest.get("calibration") or {}
    if not _calibrated(calib):
        return "No calibration data (data-free quantization)."
    source = calib["source"]
    if source == "builtin":
        src = "kvant's built-in sample (paragraphs of eleven public-domain Project Gutenberg books)"
    elif is_hub_id(source):
        src = f"[{source}](https://huggingface.co/datasets/{source})"
    else:
        src = f"`{source}`"
    return (f"{calib.get('num_samples', '?')} samples of {calib.get('seq_len', '?')} tokens from {src} "
            f"(sha256 of the token ids `{calib.get('sha256', '?')}`).")


def _cost(manifest: dict) -> str:
    calib = manifest.get("calibration") or {}
    if calib.get("time_s") is None:
        return ""
    return (f"\n\nQuantization took {calib['time_s']:.1f} s, peak memory {calib.get('peak_memory_mib', 0):.0f} MiB. "
            "`kvant.json` holds the manifest with every file's sha256.")


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def _evaluation(results: dict | None) -> str:
    if results is None:
        return "**Not evaluated.** Run `kvant eval ARTIFACT` before pushing to add a recovery table."
    lines = [f"lm-evaluation-harness {results.get('lm_eval_version', '?')}, "
             f"limit {results.get('limit') if results.get('limit') is not None else 'none (full tasks)'}; recovery = "
             f"quantized / base score, gate: every task ≥ {results.get('gate', {}).get('min_recovery', '?')}.", "",
             "| Task | Metric | Base | Quantized | Recovery | Gate |", "|---|---|---|---|---|---|"]
    for t in results["tasks"]:
        rec = "–" if t.get("recovery") is None else f"{100 * t['recovery']:.2f}%"
        verdict = "pass" if t["passed"] else "FAIL"
        lines.append(f"| {t['task']} | {t['metric']} | {_fmt(t['base'])} ± {_fmt(t.get('base_stderr'))} | "
                     f"{_fmt(t['quant'])} ± {_fmt(t.get('quant_stderr'))} | {rec} | {verdict} |")
    if ppl := results.get("perplexity"):
        lines += ["", f"Perplexity ({ppl['task']}): base {_fmt(ppl['base'])}, quantized {_fmt(ppl['quant'])} "
                      f"(ratio {_fmt(ppl['ratio'])})."]
    lines += ["", f"Overall: **{'passed' if results['passed'] else 'FAILED'}** the recovery gate."]
    return "\n".join(lines)


def _usage(repo_id: str, fp8_kv: bool) -> str:
    # the checkpoint carries k/v scales, but both engines keep a 16-bit KV cache unless asked
    kv = " --kv-cache-dtype fp8" if fp8_kv else ""
    return f"""With kvant:

```bash
kvant serve {repo_id}{kv}
```

With vLLM:

```bash
vllm serve {repo_id}{kv}
```

With transformers (needs `compressed-tensors` installed):

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo_id}")
model = AutoModelForCausalLM.from_pretrained("{repo_id}", device_map="auto")
messages = [{{"role": "user", "content": "Hello!"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt").to(model.device)
print(tokenizer.decode(model.generate(inputs, max_new_tokens=64)[0]))
```"""


def card_text(manifest: dict, results: dict | None, repo_id: str, recipe_yaml: str | None = None) -> str:
    data = card_data(manifest, results, repo_id)
    recipe = recipe_yaml if recipe_yaml is not None else yaml.safe_dump(manifest.get("recipe") or {}, sort_keys=False)
    base_name = manifest["base_model"].get("name") or "the base model"
    body = f"""# {repo_id.split("/")[-1]}

Quantized version of `{base_name}` made with kvant: {scheme_info(manifest["scheme"]).description}.

## Model overview

{_overview(manifest)}

## Recipe

```yaml
{recipe.rstrip()}
```

{_mixed_precision(manifest)}## Calibration data

{_calibration(manifest)}{_cost(manifest)}

## Evaluation

{_evaluation(results)}

## How to run

{_usage(repo_id, manifest.get("kv_cache_dtype") == "fp8")}
"""
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def build_card(manifest: dict, results: dict | None, repo_id: str, recipe_yaml: str | None = None) -> ModelCard:
    return ModelCard(card_text(manifest, results, repo_id, recipe_yaml))
