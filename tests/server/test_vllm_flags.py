"""`kvant serve` and `kvant eval` flags with vLLM's and lm-eval's names: parsing, meaning, help text."""
import argparse
import json

import pytest

from kvant.engine.server.protocol import ChatCompletionRequest, CompletionRequest, chat_params, completion_params
from kvant.engine.server.protocol import default_max_tokens
from kvant.engine import vllm_options as vo
from kvant.artifact.errors import KvantError
from kvant.tui import cli
from kvant.tui.commands import serve


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["serve", "eval"])
def test_every_flag_has_help_text(command):
    parser = _subparser(command)
    missing = [a.option_strings or a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())]
    assert missing == []
    assert "KVANT_HOME" in parser.format_help()


def test_engine_flags_reach_the_engine():
    args = _subparser("serve").parse_args(["m", "--seed", "5", "--no-enable-prefix-caching", "--trust-remote-code"])
    assert serve.engine_kwargs(args) == {"seed": 5, "enable_prefix_caching": False}
    args = _subparser("serve").parse_args(["m", "--enable-prefix-caching"])
    assert serve.engine_kwargs(args) == {"enable_prefix_caching": True}
    assert serve.engine_kwargs(_subparser("serve").parse_args(["m"])) == {}


def test_tensor_parallel_ends_with_the_vllm_serve_command(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    rc = cli.main(["serve", str(tmp_path), "--tensor-parallel-size", "2", "--port", "9001", "--max-model-len",
                   "2048", "--no-enable-prefix-caching"])
    out = capsys.readouterr()
    assert rc == 2
    assert out.out.strip().splitlines()[-1] == (
        f"vllm serve {tmp_path.resolve()} --tensor-parallel-size 2 --host 127.0.0.1 --port 9001 "
        f"--max-model-len 2048 --generation-config auto --no-enable-prefix-caching")
    assert "2 GPUs" in out.err


def test_model_that_needs_code_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"], "auto_map": {"AutoModel": "m.X"}}))
    assert cli.main(["serve", str(tmp_path), "--trust-remote-code", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "needs its own Python code" in err and "\n" not in err


def test_chat_template_file_or_inline(tmp_path):
    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tmp_path / "t.jinja").write_text(jinja)
    assert vo.load_chat_template(str(tmp_path / "t.jinja")) == jinja
    assert vo.load_chat_template(jinja) == jinja
    with pytest.raises(KvantError, match="neither a file nor inline Jinja"):
        vo.load_chat_template(str(tmp_path / "missing.jinja"))


def test_generation_config_defaults_and_request_overrides():
    defaults = {"temperature": 0.6, "top_p": 0.9, "max_tokens": 40}
    req = CompletionRequest(prompt="hi")
    params = completion_params(req, 16, defaults)
    assert (params.temperature, params.top_p) == (0.6, 0.9)
    params = completion_params(CompletionRequest(prompt="hi", temperature=0.0), 16, defaults)
    assert (params.temperature, params.top_p) == (0.0, 0.9)  # the request's field wins
    chat = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], top_p=0.5)
    assert chat_params(chat, 8, defaults).top_p == 0.5 and chat_params(chat, 8, defaults).temperature == 0.6
    # max_new_tokens applies only when the request sets none, capped by the room left in the context
    assert default_max_tokens(None, defaults, 100) == 40
    assert default_max_tokens(None, defaults, 10) == 10
    assert default_max_tokens(7, defaults, 100) == 7
    assert default_max_tokens(None, {}, 100) is None


def test_kvant_home_is_named_in_top_level_help():
    assert "$KVANT_HOME" in cli.build_parser().format_help()
