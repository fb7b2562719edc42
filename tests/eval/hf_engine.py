"""A stand-in for kvant's LLM built on transformers (fp32, CPU), answering generate() per the engine contract.
It tests the backend's request/score plumbing independently of the engine; the acceptance tests use the real engine."""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from kvant.engine.outputs import CompletionOutput, RequestOutput


class HFEngine:
    def __init__(self, path):
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.max_model_len = self.model.config.max_position_embeddings
        self.calls = 0

    @torch.no_grad()
    def _prompt_logprobs(self, ids):
        logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        out = [None]
        for i in range(1, len(ids)):
            row = logp[i - 1]
            top = int(row.argmax())
            out.append({ids[i]: float(row[ids[i]]), top: float(row[top])})
        return out

    @torch.no_grad()
    def _greedy(self, ids, params):
        tokens, text = [], ""
        for _ in range(params.max_tokens):
            nxt = int(self.model(torch.tensor([ids + tokens])).logits[0, -1].argmax())
            tokens.append(nxt)
            if nxt == self.tokenizer.eos_token_id:
                break
            text = self.tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens)
            hit = [text.index(s) for s in params.stop if s in text]
            if hit:
                return tokens, text[:min(hit)]
        return tokens, text

    def generate(self, prompts, params):
        self.calls += 1
        outs = []
        for i, ids in enumerate(prompts):
            ids = list(ids)
            plp = self._prompt_logprobs(ids) if params.prompt_logprobs is not None else None
            toks, text = self._greedy(ids, params) if params.prompt_logprobs is None else ([], "")
            outs.append(RequestOutput(str(i), None, ids, plp, [CompletionOutput(0, text, toks, None, None, "stop")],
                                      True))
        return outs
