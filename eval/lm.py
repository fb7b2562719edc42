"""lm-eval backend "kvant": scores and generates through kvant's engine (prompt logprobs, vLLM-backend style)."""
import inspect
import logging
from pathlib import Path
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    _add_special_kwargs,
    handle_stop_sequences,
    has_bos_prefix,
    maybe_truncate,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from kvant.artifact.errors import KvantError
from kvant.artifact.progress import CancelToken, Progress, silent

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 512  # requests per engine call: big enough for prefix caching, small enough for a live progress bar


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def continuation_score(tokens: list[int], prompt_logprobs: list[dict[int, float] | None],
                       ctxlen: int) -> tuple[float, bool]:
    # prompt_logprobs[i] is log p(tokens[i] | tokens[:i]); entry 0 is None
    total, greedy = 0.0, True
    for tok, lps in zip(tokens[ctxlen:], prompt_logprobs[ctxlen:], strict=True):
        if lps is None or tok not in lps:
            raise KvantError(f"the engine returned no prompt logprob for token {tok}")
        total += float(lps[tok])
        if max(lps, key=lps.get) != tok:
            greedy = False
    return total, greedy


@register_model("kvant")
class KvantLM(TemplateLM):
    def __init__(self, pretrained: str | Path, batch_size: int | str = "auto", max_length: int | None = None,
                 max_gen_toks: int = 256, add_bos_token: bool | None = None, llm: Any = None,
                 progress: Progress | None = None, max_batch_size: int | None = None, device: str | None = None,
                 cancel: CancelToken | None = None, **engine_kwargs):
        super().__init__()
        from transformers import AutoTokenizer

        from kvant.engine.config import ModelConfig
        from kvant.engine.registry import resolve_model

        path = resolve_model(str(pretrained))
        self.pretrained = path
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._config = ModelConfig.from_pretrained(path)
        if device is not None and device != "cpu" and not str(device).startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
        if llm is None:
            from kvant.engine import LLM

            if device is not None:  # lm-eval's --device may say cuda:0; the engine takes cpu | cuda
                engine_kwargs.setdefault("device", "cuda" if str(device).startswith("cuda") else "cpu")
            llm = LLM(str(path), **engine_kwargs)
        self.llm = llm
        self.chunk_size = DEFAULT_CHUNK if str(batch_size).startswith("auto") else int(batch_size)
        if self.chunk_size < 1:
            raise ValueError(f"batch_size must be >= 1 or 'auto', got {batch_size}")
        self._max_length = int(max_length) if max_length else None
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = None if add_bos_token is None else _as_bool(add_bos_token)
        self.progress, self.cancel = progress or silent, cancel or CancelToken()

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "KvantLM":
        # lm-eval's CLI passes its own --device/--batch_size beside --model_args; a key set in --model_args wins
        # (lm-eval's version raises "got multiple values for keyword argument" when both carry one)
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # ---- properties lm-eval reads

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        return int(getattr(self.llm, "max_model_len", None) or self._config.max_model_len)

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        special = _add_special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    # ---- engine calls

    def _report(self, phase: str, bar: tqdm, n: int) -> None:
        # after each chunk of requests: the one place an evaluation can stop, before any result is written
        bar.update(n)
        self.progress(phase, bar.n, bar.total, f"{phase} {bar.n}/{bar.total}")
        self.cancel.raise_if_cancelled("evaluation")

    def _prompt_logprobs(self, prompts: list[list[int]], starts: list[int], phase: str,
                         disable_tqdm: bool) -> list[list]:
        """Prompt logprobs of prompts[i] from position starts[i] on. Requests whose context another one shares
        run after it, so the prefix cache serves them the context's blocks; the lm_head sees only scored rows."""
        from kvant.engine import SamplingParams

        # longest first: errors surface early and the ETA over-, not under-estimates
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), prompts[i]))
        seen, first_wave, second_wave = set(), [], []
        for i in order:
            key = tuple(prompts[i][:starts[i]])
            (second_wave if key in seen else first_wave).append(i)
            seen.add(key)
        result: list[list | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc=phase, disable=disable_tqdm)
        for wave in (first_wave, second_wave):
            for a in range(0, len(wave), self.chunk_size):
                idx = wave[a:a + self.chunk_size]
                params = [SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1,
                                         prompt_logprobs_from=starts[i]) for i in idx]
                outs = self.llm.generate([prompts[i] for i in idx], params)
                for i, out in zip(idx, outs, strict=True):
                    result[i] = out.prompt_logprobs
                self._report(phase, bar, len(idx))
        bar.close()
        return result

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        max_prompt = self.max_length - 1  # the engine samples one token after the prompt
        prompts, ctxlens = [], []
        for _, context_enc, continuation_enc in requests:
            whole = context_enc + continuation_enc
            if len(continuation_enc) >= max_prompt:
                raise KvantError(f"a continuation of {len(continuation_enc)} tokens does not fit max_length "
                                 f"{self.max_length}")
            cut = max(0, len(whole) - max_prompt)
            prompts.append(whole[cut:])
            ctxlens.append(len(context_enc) - cut)
        logprobs = self._prompt_logprobs(prompts, ctxlens, "loglikelihood", disable_tqdm)
        res = []
        for (cache_key, _, _), prompt, ctxlen, lps in zip(requests, prompts, ctxlens, logprobs, strict=True):
            answer = continuation_score(prompt, lps, ctxlen)
            res.append(answer)
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string)
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length - 2, context_len=1)):  # + the prefix token + one sampled
                windows.append((None, ctx, cont))
                owners.append(i)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for owner, (lp, _) in zip(owners, scores, strict=True):
            totals[owner] += lp
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _sampling_params(self, gen_kwargs: dict, eos: str):
        from kvant.engine import SamplingParams

        kwargs = normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen_toks = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
        kwargs.pop("do_sample", None)
        accepted = set(inspect.signature(SamplingParams).parameters)
        ignored = sorted(k for k in kwargs if k not in accepted)
        if ignored:
            log.warning("kvant backend ignores generation arguments %s", ", ".join(ignored))
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        kwargs.setdefault("temperature", 0.0)
        kwargs.setdefault("skip_special_tokens", False)
        return kwargs, until, max_gen_toks

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from kvant.engine import SamplingParams

        eos = self.tokenizer.decode(self.eot_token_id)
        prompts, untils, groups = [], [], {}
        for i, (context, gen_kwargs) in enumerate(req.args for req in requests):
            kwargs, until, max_gen_toks = self._sampling_params(gen_kwargs, eos)
            toks, max_gen_toks = maybe_truncate(self.tok_encode(context), max_gen_toks=max_gen_toks,
                                                max_model_len=self.max_length, verbose=False)
            prompts.append(toks)
            untils.append(until)
            key = repr((sorted(kwargs.items()), until, max_gen_toks))
            groups.setdefault(key, (SamplingParams(max_tokens=max_gen_toks, stop=until, **kwargs), []))[1].append(i)
        res: list[str | None] = [None] * len(prompts)
        bar = tqdm(total=len(prompts), desc="generate_until", disable=disable_tqdm)
        for params, members in groups.values():
            members.sort(key=lambda i: -len(prompts[i]))
            for start in range(0, len(members), self.chunk_size):
                idx = members[start:start + self.chunk_size]
                # continuous batching inside the engine: the whole chunk is submitted at once
                outs = self.llm.generate([prompts[i] for i in idx], params)
                for i, out in zip(idx, outs, strict=True):
                    text = postprocess_generated_text(out.outputs[0].text, untils[i], None)
                    res[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                self._report("generate_until", bar, len(idx))
        bar.close()
        return res
