"""kvant's LLM under vLLM's offline API: prompt forms, skip_tokenizer_init, output fields, generation config."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvant.artifact.errors import KvantError
from kvant.engine.inputs import parse_prompts
from kvant.engine import vllm_options as vo

from .conftest import hf_generate

NEW = 8
# Written against vLLM's documented offline API (examples/offline_inference); only the import line differs.
VLLM_SCRIPT = '''\
import json
import sys

from vllm import LLM, SamplingParams

llm = LLM(model=sys.argv[1], max_model_len=256, dtype="float32", seed=None)
tokenizer = llm.get_tokenizer()
greedy = SamplingParams(temperature=0, max_tokens=8, logprobs=2)
text = "The capital of France is"
ids = tokenizer(text).input_ids
outputs = llm.generate([text, {"prompt": text}, {"prompt_token_ids": ids}], greedy)
outputs += llm.generate(text, sampling_params=greedy)
outputs += llm.generate({"prompt_token_ids": ids}, greedy, use_tqdm=False)
rows = []
for output in outputs:
    completion = output.outputs[0]
    first = completion.logprobs[0][completion.token_ids[0]]
    rows.append({"prompt": output.prompt, "prompt_token_ids": output.prompt_token_ids, "text": completion.text,
                 "token_ids": list(completion.token_ids), "finish_reason": completion.finish_reason,
                 "num_logprobs": len(completion.logprobs), "finished": output.finished,
                 "first": [first.logprob, first.rank, first.decoded_token]})
print(json.dumps({"rows": rows, "default": repr(llm.get_default_sampling_params().temperature)}))
'''


def test_vllm_script_runs_unchanged_but_for_the_import(model_path, tokenizer, hf_model, tmp_path):
    source = VLLM_SCRIPT.replace("from vllm import", "from kvant.engine import")
    assert source.count("\n") == VLLM_SCRIPT.count("\n") and source != VLLM_SCRIPT
    script = tmp_path / "offline.py"
    script.write_text(source)
    done = subprocess.run([sys.executable, "-P", str(script), str(model_path)], capture_output=True, text=True,
                          timeout=600, env={"PYTHONSAFEPATH": "1", **__import__("os").environ})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    text = "The capital of France is"
    ids = tokenizer(text).input_ids
    expected = hf_generate(hf_model, [ids], NEW)[0]
    assert len(rows) == 5
    for row in rows:
        assert row["prompt_token_ids"] == ids
        assert row["token_ids"] == expected
        assert row["text"] == tokenizer.decode(expected, skip_special_tokens=True)
        assert row["finish_reason"] == ("stop" if expected[-1] == tokenizer.eos_token_id else "length")
        assert row["num_logprobs"] == len(expected) and row["finished"] is True
        # greedy: the chosen token is the most likely one; vLLM's Logprob fields
        assert row["first"][0] <= 0 and row["first"][1] == 1 and row["first"][2] == tokenizer.decode(expected[:1])
    # vLLM: a text prompt keeps its text, a token prompt has none
    assert [r["prompt"] for r in rows] == [text, text, None, text, None]
    assert result["default"] == "1.0"  # SmolLM2's generation_config.json sets no sampling values


def test_skip_tokenizer_init_runs_on_token_ids(model_path, tokenizer, hf_model, tmp_path):
    from kvant.engine import LLM, SamplingParams

    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        (bare / name).symlink_to(Path(model_path) / name)
    with pytest.raises(Exception):  # transformers cannot find a tokenizer there
        LLM(str(bare), max_model_len=128, dtype="float32")
    llm = LLM(str(bare), skip_tokenizer_init=True, max_model_len=128, dtype="float32")
    assert llm.get_tokenizer() is None
    ids = tokenizer("Once upon a time").input_ids
    out = llm.generate({"prompt_token_ids": ids}, SamplingParams(temperature=0, max_tokens=NEW))[0]
    assert out.prompt is None and out.prompt_token_ids == ids
    assert out.outputs[0].token_ids == hf_generate(hf_model, [ids], NEW)[0]
    assert out.outputs[0].text == ""  # nothing to detokenize with, as in vLLM
    with pytest.raises(ValueError, match="token ids"):
        llm.generate("text needs a tokenizer", SamplingParams(max_tokens=1))


@pytest.mark.parametrize("prompts, expected", [
    ("hi", ["hi"]),
    ([1, 2, 3], [[1, 2, 3]]),
    ({"prompt": "hi"}, ["hi"]),
    ({"prompt_token_ids": [4, 5]}, [[4, 5]]),
    (["a", {"prompt": "b"}, {"prompt_token_ids": [7]}, [8, 9]], ["a", "b", [7], [8, 9]]),
    ([[1], [2, 3]], [[1], [2, 3]]),
    ([], []),
])
def test_parse_prompts_accepts_vllm_and_kvant_forms(prompts, expected):
    assert parse_prompts(prompts) == expected


@pytest.mark.parametrize("prompts, message", [
    ({"prompt": "a", "multi_modal_data": {}}, "multi_modal_data"),
    ({"prompt_token_ids": []}, "prompt_token_ids must be a non-empty list"),
    ({}, "needs 'prompt'"),
    ([3.5], "got float"),
    (7, "got int"),
])
def test_parse_prompts_refuses_bad_forms_in_one_line(prompts, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_prompts(prompts)
    assert "\n" not in str(info.value)


def test_generation_config_defaults(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.9, "top_k": 50, "max_new_tokens": 7, "do_sample": True,
         "repetition_penalty": 1.0}))
    # do_sample is not a sampling value vLLM reads
    assert vo.sampling_defaults("auto", tmp_path) == {"temperature": 0.6, "top_p": 0.9, "top_k": 50,
                                                      "max_tokens": 7, "repetition_penalty": 1.0}
    assert vo.sampling_defaults("vllm", tmp_path) == {}
    other = tmp_path / "other"
    other.mkdir()
    assert vo.sampling_defaults("auto", other) == {}  # no file: nothing
    assert vo.sampling_defaults(str(tmp_path), other)["temperature"] == 0.6  # a FOLDER
    with pytest.raises(KvantError, match="auto, vllm or a folder"):
        vo.sampling_defaults(str(other), tmp_path)


def test_remote_code_model_refused_in_one_line(tmp_path):
    config = {"architectures": ["FancyForCausalLM"], "auto_map": {"AutoModelForCausalLM": "modeling.Fancy"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(KvantError, match="needs its own Python code") as info:
        vo.check_remote_code(tmp_path)
    assert "\n" not in str(info.value)
    config["architectures"] = ["LlamaForCausalLM"]  # built in: the custom code is not needed
    (tmp_path / "config.json").write_text(json.dumps(config))
    vo.check_remote_code(tmp_path)


def test_tensor_parallel_hands_over_to_vllm(tmp_path):
    vo.check_tensor_parallel(1, str(tmp_path))
    with pytest.raises(KvantError) as info:
        vo.check_tensor_parallel(4, str(tmp_path), {"port": 9000, "max_model_len": 4096, "kv_cache_dtype": None})
    line = str(info.value)
    assert line.endswith(f"vllm serve {tmp_path.resolve()} --tensor-parallel-size 4 --port 9000 "
                         f"--max-model-len 4096")
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        vo.check_tensor_parallel(0, str(tmp_path))


def test_logprobs_are_vllm_logprob_objects_with_vocabulary_ranks(tiny_model):
    import torch

    from kvant.engine import LLM, Logprob, SamplingParams

    prompt = [3, 17, 42, 8, 5, 60, 11]
    llm = LLM.from_model(tiny_model, None)
    # seeded random sampling: some chosen tokens are not in the top 2, so their rank is counted over the vocabulary
    (o,) = llm.generate([prompt], SamplingParams(temperature=1.0, seed=3, max_tokens=12, logprobs=2, prompt_logprobs=2,
                                                 ignore_eos=True))
    full = prompt + o.outputs[0].token_ids
    with torch.inference_mode():
        lp = tiny_model.compute_logits(tiny_model(torch.tensor(full), torch.arange(len(full)))).float().log_softmax(-1)
    entries = [(j - 1, o.prompt_logprobs[j]) for j in range(1, len(prompt))]
    entries += [(len(prompt) - 1 + k, d) for k, d in enumerate(o.outputs[0].logprobs)]
    ranks_seen = set()
    for row, d in entries:
        for token, value in d.items():
            assert isinstance(value, Logprob) and value.decoded_token is None  # no tokenizer
            assert value.logprob == pytest.approx(lp[row, token].item(), abs=1e-4) and value == value.logprob
            assert value.rank == int((lp[row] > lp[row, token] + 1e-6).sum()) + 1, (row, token)
            ranks_seen.add(value.rank)
    assert {1, 2} <= ranks_seen and max(ranks_seen) > 2
    assert "Logprob(logprob=" in repr(next(iter(o.outputs[0].logprobs[0].values())))
