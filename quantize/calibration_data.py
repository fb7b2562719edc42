"""Calibration token sequences from: the shipped `builtin` sample, local .txt/.jsonl files or folders, text the model
generates (`synthetic`), or a Hugging Face dataset id."""
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from kvant.artifact.errors import KvantError, NetworkError
from kvant.engine.registry import is_network_error
from kvant.quantize.recipe import Calibration

BUILTIN = Path(__file__).resolve().parent / "data" / "builtin.jsonl"


@dataclass(slots=True, frozen=True)
class CalibrationSet:
    input_ids: tuple[torch.Tensor, ...]  # each int64 [L], 1 <= L <= seq_len
    source: str
    sha256: str  # of the token ids, so two artifacts can be checked for the same calibration data

    @property
    def num_tokens(self) -> int:
        return sum(int(t.numel()) for t in self.input_ids)


def _read_jsonl(path: Path, field: str) -> list[str]:
    texts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KvantError(f"{path}:{i + 1}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise KvantError(f"{path}:{i + 1}: expected an object with a string {field!r} field")
        texts.append(row[field])
    return texts


def _read_local(path: Path, field: str) -> list[str]:
    files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl")) if path.is_dir() else [path]
    texts = []
    for f in files:
        if f.suffix == ".jsonl":
            texts += _read_jsonl(f, field)
        elif f.suffix == ".txt":
            texts += [" ".join(p.split()) for p in f.read_text(encoding="utf-8", errors="replace").split("\n\n")]
        else:
            raise KvantError(f"calibration file {f} must be .txt or .jsonl")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise KvantError(f"no calibration text found in {path}")
    return texts


def _read_hf(calib: Calibration) -> list[str]:
    import datasets

    try:
        ds = datasets.load_dataset(calib.dataset, split=calib.split)
    except Exception as exc:  # datasets raises many unrelated types for offline/missing datasets
        from huggingface_hub import constants

        if is_network_error(exc) or constants.HF_HUB_OFFLINE:
            raise NetworkError(f"cannot reach the Hugging Face Hub for calibration dataset {calib.dataset!r}, and it "
                               "is not in the local cache; connect, or use a local file or `dataset: builtin`") from None
        raise KvantError(f"cannot load calibration dataset {calib.dataset!r} (split {calib.split!r}): "
                         f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    if calib.text_field not in ds.column_names:
        raise KvantError(f"dataset {calib.dataset!r} has no column {calib.text_field!r} (has {ds.column_names})")
    return [t for t in ds[calib.text_field][: calib.num_samples * 20] if isinstance(t, str) and t.strip()]


def _format(tokenizer, texts: list[str], chat: bool) -> list[str]:
    if not chat:
        return texts
    if not getattr(tokenizer, "chat_template", None):
        raise KvantError("calibration.chat_template is true but the tokenizer has no chat template")
    # consecutive texts become a user turn and the assistant's reply
    pairs = zip(texts[0::2], texts[1::2])
    return [tokenizer.apply_chat_template([{"role": "user", "content": u}, {"role": "assistant", "content": a}],
                                          tokenize=False) for u, a in pairs]


def _pack(tokenizer, texts: list[str], calib: Calibration, chat: bool) -> list[torch.Tensor]:
    # each sample: consecutive texts from a seeded random start, joined until seq_len tokens, truncated to seq_len
    rng = random.Random(calib.seed)
    samples = []
    for _ in range(calib.num_samples):
        start = rng.randrange(len(texts))
        ids: list[int] = []
        for j in range(len(texts)):
            text = texts[(start + j) % len(texts)]
            ids += tokenizer(text if chat else text + "\n\n", add_special_tokens=not ids and not chat)["input_ids"]
            if len(ids) >= calib.seq_len:
                break
        samples.append(torch.tensor(ids[: calib.seq_len], dtype=torch.long))
    return samples


def _synthetic(tokenizer, model, calib: Calibration) -> list[torch.Tensor]:
    if model is None:
        raise KvantError("calibration.dataset 'synthetic' needs the model to generate from")
    gen = torch.Generator().manual_seed(calib.seed)
    vocab = min(tokenizer.vocab_size, model.config.vocab_size)
    samples = []
    for _ in range(calib.num_samples):
        # a random first token, then the model's own sampled continuation (llm-compressor-style "self" data)
        first = torch.randint(0, vocab, (1, 1), generator=gen)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.no_grad():
            out = model.generate(first, attention_mask=torch.ones_like(first), do_sample=True, top_p=0.95,
                                 max_new_tokens=calib.seq_len - 1, min_new_tokens=calib.seq_len - 1,
                                 pad_token_id=tokenizer.eos_token_id)
        samples.append(out[0, : calib.seq_len].cpu())
    return samples


def load_calibration(calib: Calibration, tokenizer, model=None) -> CalibrationSet:
    if calib.dataset == "synthetic":
        samples = _synthetic(tokenizer, model, calib)
    else:
        if calib.dataset == "builtin":
            texts = _read_jsonl(BUILTIN, "text")
        elif Path(calib.dataset).expanduser().exists():
            texts = _read_local(Path(calib.dataset).expanduser(), calib.text_field)
        elif calib.dataset.startswith((".", "/", "~")):
            raise KvantError(f"calibration path {calib.dataset} does not exist")
        else:
            texts = _read_hf(calib)
        chat = calib.chat_template
        samples = _pack(tokenizer, _format(tokenizer, texts, chat), calib, chat)
    digest = hashlib.sha256()
    for s in samples:
        digest.update(s.to(torch.int64).numpy().tobytes())
    return CalibrationSet(tuple(samples), calib.dataset, digest.hexdigest())
