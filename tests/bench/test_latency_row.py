"""`kvant bench latency`'s TPOT: medians of alternating runs, so one slow run does not move it."""
from kvant.tui.commands import bench


class FakeLLM:
    # generate() advances a fake clock: 10 ms of prefill + 2 ms per token after the first, plus the given excess on
    # given calls (a slow first TTFT run, as a one-off allocation would make it, and a slow long run)
    def __init__(self, clock, excess):
        self.clock, self.excess, self.calls = clock, excess, 0

    def generate(self, prompts, params):
        assert len(prompts) == 4 and all(len(p) == 16 for p in prompts)
        self.clock[0] += 0.010 + 0.002 * (params.max_tokens - 1) + self.excess.get(self.calls, 0.0)
        self.calls += 1


def test_tpot_is_the_difference_of_medians(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    # call 0 is the warm-up; then TTFT and the 33-token run alternate: calls 1, 3, 5 and 2, 4, 6
    llm = FakeLLM(clock, {1: 0.060, 4: 0.040})
    row = bench.latency_row(llm, 4, 16, 33, repeats=3)
    assert llm.calls == 7
    assert abs(row["ttft_ms"] - 10.0) < 1e-9 and abs(row["tpot_ms"] - 2.0) < 1e-9
    assert [round(t, 6) for t in row["ttft_ms_runs"]] == [70.0, 10.0, 10.0]
    assert [round(t, 6) for t in row["total_ms_runs"]] == [74.0, 114.0, 74.0]
    # one run each, as before: the slow TTFT sample alone takes 60 / 32 ms off TPOT
    clock[0] = 0.0
    one = bench.latency_row(FakeLLM(clock, {1: 0.060}), 4, 16, 33, repeats=1)
    assert abs(one["tpot_ms"] - (2.0 - 60 / 32)) < 1e-9
