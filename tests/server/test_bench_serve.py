"""`kvant bench serve` against the real server: every request completes with its token count, metrics are sane."""
import json

from kvant.tui.cli import main


def test_bench_serve_poisson_with_concurrency_cap(server, tmp_path, capsys):
    out = tmp_path / "serve.json"
    rc = main(["bench", "serve", "--base-url", server.base_url, "--workload", "W4", "--limit", "3",
               "--request-rate", "20", "--max-concurrency", "2", "--slo-ttft-ms", "600000", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["completed"] == res["requests"] == 3 and res["failed"] == 0
    assert res["output_tokens"] == 3 * 128 and res["prompt_tokens"] == 3 * 128
    assert res["model"] == "smollm2-test"  # taken from /v1/models
    for name in ("ttft", "tpot", "itl", "e2e"):
        st = res[name]
        assert 0 < st["p50_ms"] <= st["p90_ms"] <= st["p99_ms"]
    assert res["ttft"]["mean_ms"] < res["e2e"]["mean_ms"]
    # every request met the (generous) TTFT objective
    assert res["goodput_req_per_s"] == res["request_throughput"]
    printed = capsys.readouterr().out
    assert "3/3 requests" in printed and "TPOT" in printed


def test_bench_serve_unreachable_server_is_a_clear_error(capsys):
    rc = main(["bench", "serve", "--base-url", "http://127.0.0.1:9", "--limit", "1"])
    assert rc == 3  # environment (README exit-code table): nothing answers there
    assert "cannot reach a server at http://127.0.0.1:9" in capsys.readouterr().err
