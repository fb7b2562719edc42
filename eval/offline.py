"""Validation with nothing but what ships with kvant: word perplexity on builtin paragraphs that the artifact's
calibration did not read, and the generative check. Writes the same eval/results.json as `kvant eval`."""
import gc
import json
import math
from pathlib import Path

from kvant.artifact import manifest as M
from kvant.artifact.errors import KvantError
from kvant.artifact.gate import gate_for
from kvant.artifact.progress import CancelToken, Progress, silent
from kvant.engine.integrity import verify_artifact
from kvant.eval import generative as gen
from kvant.eval.artifact import check_same_model
from kvant.eval.binding import bind_results
from kvant.eval.report import EvalReport, Perplexity, write_report

NUM_HELDOUT = 16  # builtin paragraphs scored
HELDOUT_TASK = "builtin_heldout"
PREFIX_CHARS = 64  # a paragraph counts as read by calibration if its opening is in a decoded calibration sample
# The base's side of the check (held-out perplexity, greedy answers and their log-probabilities) depends only on the
# base's files and the fixed inputs. An auto search validates several points against one base in one process: it is
# computed once per (base files, inputs) and kept for the next point. Only the latest entry is kept.
_BASE_SIDE: dict[tuple, tuple] = {}


def read_builtin() -> list[str]:
    from kvant.quantize.calibration_data import BUILTIN

    return [json.loads(line)["text"] for line in BUILTIN.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_by(text: str, sample: str) -> bool:
    # calibration packs whole paragraphs from their first character, the last one possibly cut short: a paragraph it
    # read opens inside a sample, or the sample's unfinished tail is the paragraph's opening
    tail = sample.rsplit("\n", 1)[-1].strip()
    return text[:PREFIX_CHARS] in sample or bool(tail) and text.startswith(tail)


def heldout_texts(tokenizer, manifest: dict, num: int = NUM_HELDOUT) -> list[str]:
    """`num` builtin paragraphs, spread over the file, none of which the artifact's calibration read."""
    from kvant.quantize.calibration_data import load_calibration
    from kvant.quantize.recipe import recipe_from_dict

    texts = read_builtin()
    recipe = recipe_from_dict(manifest["recipe"])
    read = set()
    if recipe.needs_data and recipe.calibration.dataset == "builtin":
        # rebuild the calibration set the artifact was made from, checked by its sha256, and look at its text
        calib = load_calibration(recipe.calibration, tokenizer)
        if calib.sha256 != manifest["calibration"].get("sha256"):
            raise KvantError("cannot rebuild the artifact's calibration set (sha256 differs), so no builtin text is "
                             "known to be held out: pass --data-dir to validate on local tasks")
        samples = [tokenizer.decode(ids.tolist(), skip_special_tokens=True) for ids in calib.input_ids]
        read = {i for i, t in enumerate(texts) if any(_read_by(t, s) for s in samples)}
    unread = [i for i in range(len(texts)) if i not in read]
    if len(unread) < num:
        raise KvantError(f"calibration read {len(read)} of {len(texts)} builtin paragraphs: fewer than {num} are left "
                         "to validate on; pass --data-dir")
    return [texts[unread[k * len(unread) // num]] for k in range(num)]


def word_perplexity(llm, texts: list[str]) -> float:
    # exp(-sum of token log-likelihoods / number of words), each text scored from a BOS (or EOS) token
    from kvant.engine import SamplingParams

    tok = llm.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = [[start] + tok.encode(t, add_special_tokens=False) for t in texts]
    outs = llm.generate(ids, SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=1))
    total = sum(float(o.prompt_logprobs[i][t]) for o, x in zip(outs, ids) for i, t in enumerate(x) if i > 0)
    return math.exp(-total / sum(len(t.split()) for t in texts))


def _base_key(base_path: Path, texts: list[str], prompt_ids: list[list[int]], cfg: gen.GenerativeConfig) -> tuple:
    # every file of the base folder by name, size, mtime and inode: a rewritten or replaced file is a new base
    folder = Path(base_path).resolve()
    files = tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ino)
                         for p in folder.iterdir() if p.is_file() for st in (p.stat(),)))
    return str(folder), files, tuple(texts), tuple(map(tuple, prompt_ids)), cfg


def evaluate_offline(artifact: Path, base_path: Path, *, generative: gen.GenerativeConfig = gen.GenerativeConfig(),
                     num_heldout: int = NUM_HELDOUT, progress: Progress | None = None,
                     cancel: CancelToken | None = None) -> EvalReport:
    """Artifact first, then base (one engine in memory at a time); the report is written into the artifact."""
    from kvant.engine import LLM

    progress, cancel = progress or silent, cancel or CancelToken()
    artifact = Path(artifact)
    manifest = M.read(artifact)
    verify_artifact(artifact)  # the scores must belong to the bytes the manifest lists
    check_same_model(base_path, artifact)
    progress("artifact", 0, 2, "artifact: held-out perplexity and greedy answers")
    quant = LLM(str(artifact))
    texts = heldout_texts(quant.tokenizer, manifest, num_heldout)
    quant_ppl = word_perplexity(quant, texts)
    prompt_ids, quant_tokens = gen.quant_answers(quant, quant.tokenizer, generative)
    del quant
    gc.collect()
    cancel.raise_if_cancelled("evaluation")
    progress("base", 1, 2, "base: held-out perplexity, greedy answers, and scoring both answer sets")
    base = LLM(str(base_path))
    key = _base_key(base_path, texts, prompt_ids, generative)
    if key not in _BASE_SIDE:
        side = (word_perplexity(base, texts), gen.base_answers(base, prompt_ids, generative))
        _BASE_SIDE.clear()
        _BASE_SIDE[key] = side
    base_ppl, base_side = _BASE_SIDE[key]
    check = gen.score_against_base(base, prompt_ids, quant_tokens, generative, base_side=base_side)
    del base
    gc.collect()
    cancel.raise_if_cancelled("evaluation")  # before anything is written: the artifact keeps its old report
    report = EvalReport(base_model=str(base_path), artifact=str(artifact), limit=None, gate=gate_for(manifest),
                        tasks=[], perplexity=Perplexity(HELDOUT_TASK, base_ppl, quant_ppl, quant_ppl / base_ppl),
                        generative=check, lm_eval_version="not used")
    write_report(report, artifact)
    bind_results(artifact)
    progress("done", 2, 2, "evaluation done")
    return report
