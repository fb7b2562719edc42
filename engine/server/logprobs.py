"""Engine logprobs (per position: {token id: logprob}) in OpenAI's legacy completions shape and its chat shape."""


class TokenText:
    """Single-token decoding, memoised per request (the same ids recur across steps and top-k lists)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id])
            self._cache[token_id] = text
        return text


def completion_logprobs(token_text: TokenText, token_ids: list[int], logprobs: list[dict[int, float] | None],
                        text_offset: int) -> dict:
    """Legacy shape: parallel lists; a position with no logprobs (the first prompt token) holds None."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for token_id, entry in zip(token_ids, logprobs):
        text = token_text(token_id)
        tokens.append(text)
        offsets.append(text_offset)
        text_offset += len(text)
        if entry is None:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        token_lp = entry.get(token_id)
        token_logprobs.append(None if token_lp is None else _finite(token_lp))
        top: dict[str, float] = {}
        for tid, lp in entry.items():  # distinct ids may decode to one string: keep the larger logprob
            key = token_text(tid)
            if key not in top or lp > top[key]:
                top[key] = _finite(lp)
        top_logprobs.append(top)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


def merge_completion_logprobs(first: dict, second: dict) -> dict:
    return {key: first[key] + second[key] for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}


def _finite(logprob: float) -> float:
    return max(float(logprob), -9999.0)  # JSON has no -inf; OpenAI and vLLM report -9999.0


def _chat_entry(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": _finite(logprob), "bytes": list(text.encode("utf-8"))}


def chat_logprobs(token_text: TokenText, token_ids: list[int], logprobs: list[dict[int, float]],
                  num_top: int) -> dict:
    content = []
    for token_id, entry in zip(token_ids, logprobs):
        text = token_text(token_id)
        item = _chat_entry(text, entry.get(token_id, float("-inf")))
        ranked = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:num_top]
        item["top_logprobs"] = [_chat_entry(token_text(tid), lp) for tid, lp in ranked]
        content.append(item)
    return {"content": content}
