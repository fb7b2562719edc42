"""Malformed requests get the documented 4xx in OpenAI's error shape; the server keeps serving afterwards."""
import httpx
import pytest

MODEL_NAME = "smollm2-test"  # as served by conftest.py
API_KEY = "sk-test-key"
C, CHAT = "/v1/completions", "/v1/chat/completions"
GOOD = {"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 2}
GOOD_CHAT = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
LONG = "hello " * 1500  # > max_model_len (1024) tokens


def c(**fields):
    return {**GOOD, **fields}


def chat(**fields):
    return {**GOOD_CHAT, **fields}


def without(body, key):
    return {k: v for k, v in body.items() if k != key}


# (id, path, body: dict | bytes, expected status, expected param or None when the error names no single field)
CASES = [
    ("bad-json", C, b'{"prompt": "x", ', 400, None),
    ("empty-body", C, b"", 400, None),
    ("json-array", C, b"[1, 2]", 400, None),
    ("missing-prompt", C, without(GOOD, "prompt"), 400, "prompt"),
    ("prompt-int", C, c(prompt=5), 400, "prompt"),
    ("prompt-empty-list", C, c(prompt=[]), 400, "prompt"),
    ("prompt-empty-token-list", C, c(prompt=[[]]), 400, "prompt"),
    ("prompt-float-ids", C, c(prompt=[1.5, 2]), 400, "prompt"),
    ("prompt-negative-id", C, c(prompt=[-1, 2]), 400, "prompt"),
    ("prompt-id-out-of-vocab", C, c(prompt=[10**9]), 400, "prompt"),
    ("prompt-too-long", C, c(prompt=LONG), 400, "input_tokens"),
    ("max-tokens-negative", C, c(max_tokens=-1), 400, "max_tokens"),
    ("max-tokens-string", C, c(max_tokens="ten"), 400, "max_tokens"),
    ("max-tokens-huge", C, c(max_tokens=10**9), 400, "max_tokens"),
    ("max-tokens-zero-no-echo", C, c(max_tokens=0), 400, "max_tokens"),
    ("temperature-negative", C, c(temperature=-0.5), 400, "temperature"),
    ("temperature-huge", C, c(temperature=1e9), 400, "temperature"),
    ("temperature-string", C, c(temperature="hot"), 400, "temperature"),
    ("top-p-zero", C, c(top_p=0), 400, "top_p"),
    ("top-p-above-one", C, c(top_p=1.5), 400, "top_p"),
    ("top-k-below-minus-one", C, c(top_k=-2), 400, "top_k"),
    ("min-p-above-one", C, c(min_p=2), 400, "min_p"),
    ("n-zero", C, c(n=0), 400, "n"),
    ("n-huge", C, c(n=100000), 400, "n"),
    ("logprobs-too-many", C, c(logprobs=50), 400, "logprobs"),
    ("presence-penalty-range", C, c(presence_penalty=3), 400, "presence_penalty"),
    ("repetition-penalty-zero", C, c(repetition_penalty=0), 400, "repetition_penalty"),
    ("seed-beyond-int64", C, c(seed=2**70), 400, "seed"),
    ("stop-empty-string", C, c(stop=[""]), 400, "stop"),
    ("stop-int", C, c(stop=5), 400, "stop"),
    ("stop-token-ids-negative", C, c(stop_token_ids=[-1]), 400, "stop_token_ids"),
    ("stop-token-ids-out-of-vocab", C, c(stop_token_ids=[10**9]), 400, "stop_token_ids"),
    ("min-tokens-above-max", C, c(min_tokens=10, max_tokens=2), 400, "min_tokens"),
    ("ignore-eos-list", C, c(ignore_eos=[1]), 400, "ignore_eos"),
    ("unknown-field", C, c(best_of_everything=3), 400, "best_of_everything"),
    ("suffix-unsupported", C, c(suffix="end"), 400, "suffix"),
    ("logit-bias-unsupported", C, c(logit_bias={"5": 10}), 400, "logit_bias"),
    ("stream-options-without-stream", C, c(stream_options={"include_usage": True}), 400, "stream_options"),
    ("unknown-model", C, c(model="gpt-4"), 404, "model"),
    ("chat-messages-empty", CHAT, chat(messages=[]), 400, "messages"),
    ("chat-messages-missing", CHAT, without(GOOD_CHAT, "messages"), 400, "messages"),
    ("chat-messages-string", CHAT, chat(messages="hi"), 400, "messages"),
    ("chat-unknown-role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages"),
    ("chat-missing-role", CHAT, chat(messages=[{"content": "x"}]), 400, "messages"),
    ("chat-top-logprobs-without-logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    ("chat-max-completion-tokens-zero", CHAT, chat(max_completion_tokens=0), 400, "max_completion_tokens"),
    ("chat-prompt-too-long", CHAT, chat(messages=[{"role": "user", "content": LONG}]), 400, "input_tokens"),
    ("chat-unknown-model", CHAT, chat(model="nope"), 404, "model"),
]


def _check_error(response: httpx.Response, status: int, param: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status and error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
        assert param.split("_")[0] in error["message"].lower()
    return error


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        yield client


@pytest.mark.parametrize(("path", "body", "status", "param"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_request(http, path, body, status, param):
    if isinstance(body, bytes):
        response = http.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = http.post(path, json=body)
    _check_error(response, status, param)


def test_context_length_message_is_vllms(http):
    error = http.post(C, json=c(prompt=LONG)).json()["error"]
    assert error["message"].startswith("This model's maximum context length is 1024 tokens. However, you requested")
    assert error["type"] == "BadRequestError"


def test_wrong_method_and_route(http):
    _check_error(http.get(C), 405, None)
    _check_error(http.post("/v1/nothing", json=GOOD), 404, None)


def test_server_still_serves_after_bad_requests(http, engine, idle_stats):
    for path, body in ((C, GOOD), (CHAT, GOOD_CHAT)):
        response = http.post(path, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] >= 1
    stats = idle_stats(engine)
    assert stats.num_free_blocks == stats.num_blocks


@pytest.fixture(scope="module")
def keyed(engine):
    from kvant.engine.server import build_app

    return build_app(engine, MODEL_NAME, api_key=API_KEY)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"},
                                     {"Authorization": API_KEY}], ids=["missing", "wrong", "basic", "no-scheme"])
def test_api_key_required(serve_app, keyed, headers):
    srv = serve_app(keyed)
    for method, path in (("POST", C), ("POST", CHAT), ("GET", "/v1/models")):
        response = httpx.request(method, srv.base_url + path, json=GOOD, headers=headers, timeout=30)
        _check_error(response, 401, None)
    good = httpx.post(srv.base_url + C, json=GOOD, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert good.status_code == 200
    assert httpx.get(srv.base_url + "/health").status_code == 200  # health and metrics stay open, as in vLLM
