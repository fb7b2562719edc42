"""Generative check: greedy chat completions of artifact and base on fixed prompts, scored against each other."""
import json
import math
from dataclasses import dataclass
from pathlib import Path

PROMPTS_FILE = Path(__file__).resolve().parent / "prompts.json"
DEFAULT_MAX_TOKENS = 64
# Gate: the base model's per-token perplexity of the artifact's completions may be at most this multiple of its
# perplexity of its own greedy completions. Token agreement is reported, not gated: one early flip of a near-tie
# changes every later token of a greedy run, while the text can stay just as likely under the base model.
DEFAULT_MAX_PPL_RATIO = 1.25


@dataclass(slots=True, frozen=True)
class GenerativeConfig:
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_ppl_ratio: float = DEFAULT_MAX_PPL_RATIO

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.max_ppl_ratio < 1.0:
            raise ValueError(f"max_ppl_ratio must be >= 1, got {self.max_ppl_ratio}")


def load_prompts() -> list[str]:
    return json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))


def chat_prompt_ids(tokenizer, prompts: list[str]) -> list[list[int]]:
    out = []
    for p in prompts:
        text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True)
        out.append(tokenizer.encode(text, add_special_tokens=False))
    return out


def agreement(base: list[int], quant: list[int]) -> tuple[float, float]:
    # (share of the base's tokens before the first divergence, position-wise matches over the longer output)
    longest = max(len(base), len(quant))
    if longest == 0:
        return 1.0, 1.0
    prefix = 0
    for a, b in zip(base, quant):
        if a != b:
            break
        prefix += 1
    matches = sum(a == b for a, b in zip(base, quant))
    return (prefix / len(base) if base else 0.0), matches / longest


def greedy(llm, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
    from kvant.engine import SamplingParams

    outs = llm.generate(prompt_ids, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return [list(o.outputs[0].token_ids) for o in outs]


def completion_logprobs(llm, prompt_ids: list[list[int]], completions: list[list[int]]) -> list[tuple[float, int]]:
    # (sum of log p(completion token | prompt, earlier completion tokens), number of tokens) per prompt
    from kvant.engine import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1)
    scored = [(p, c) for p, c in zip(prompt_ids, completions, strict=True) if c]
    outs = iter(llm.generate([p + c for p, c in scored], params)) if scored else iter(())
    res = []
    for p, c in zip(prompt_ids, completions, strict=True):
        if not c:
            res.append((0.0, 0))
            continue
        lps = next(outs).prompt_logprobs
        res.append((sum(float(lps[len(p) + i][t]) for i, t in enumerate(c)), len(c)))
    return res


def _ppl(scores: list[tuple[float, int]]) -> float:
    n = sum(k for _, k in scores)
    return math.exp(-sum(s for s, _ in scores) / n) if n else 1.0


def summarize(base_tokens: list[list[int]], quant_tokens: list[list[int]], base_own: list[tuple[float, int]],
              base_on_quant: list[tuple[float, int]], cfg: GenerativeConfig) -> dict:
    pairs = [agreement(b, q) for b, q in zip(base_tokens, quant_tokens, strict=True)]
    ppl_own, ppl_quant = _ppl(base_own), _ppl(base_on_quant)
    ratio = ppl_quant / ppl_own
    return {
        "num_prompts": len(pairs), "max_tokens": cfg.max_tokens,
        "prefix_agreement": sum(p for p, _ in pairs) / len(pairs),
        "token_agreement": sum(t for _, t in pairs) / len(pairs),
        "base_ppl_own": ppl_own, "base_ppl_quant": ppl_quant, "ppl_ratio": ratio,
        "max_ppl_ratio": cfg.max_ppl_ratio, "passed": ratio <= cfg.max_ppl_ratio,
    }


def quant_answers(llm, tokenizer, cfg: GenerativeConfig) -> tuple[list[list[int]], list[list[int]]]:
    # the artifact's side, run first so its engine can be released before the base loads: (prompt ids, answers)
    prompt_ids = chat_prompt_ids(tokenizer, load_prompts())
    return prompt_ids, greedy(llm, prompt_ids, cfg.max_tokens)


def base_answers(llm, prompt_ids: list[list[int]], cfg: GenerativeConfig):
    # the base's side that does not depend on the artifact: its greedy answers and its log-probabilities of them
    base_tokens = greedy(llm, prompt_ids, cfg.max_tokens)
    return base_tokens, completion_logprobs(llm, prompt_ids, base_tokens)


def score_against_base(llm, prompt_ids: list[list[int]], quant_tokens: list[list[int]], cfg: GenerativeConfig,
                       base_side=None) -> dict:
    # the base's side (its own greedy answers and their log-probabilities, computed here unless given as
    # `base_side`, from base_answers), then its log-probabilities of the artifact's answers; the check's summary
    base_tokens, own = base_side or base_answers(llm, prompt_ids, cfg)
    on_quant = completion_logprobs(llm, prompt_ids, quant_tokens)
    return summarize(base_tokens, quant_tokens, own, on_quant, cfg)
