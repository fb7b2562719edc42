# A/B of one auto trial's quantize (GPTQ, MSE observer, 8 x 128 builtin samples), CPU seconds of this process:
# A = before (one GPTQ per Linear, MSE ranges recomputed), B = after (q/k/v and gate/up stacked, MSE ranges memoized)
import dataclasses, json, sys, time, torch
from pathlib import Path
from kvant.quantize import calibrate, linear_quant
from kvant.quantize.recipe import load_recipe
from kvant.quantize.api import quantize
torch.set_num_threads(1)
recipe = load_recipe("auto").with_calibration(num_samples=8, seq_len=128)
units = [f"model.layers.{i}.{p}" for i in range(30) for p in ("self_attn.qkv", "self_attn.o_proj", "mlp.gate_up", "mlp.down_proj")]
# two points like the search's: INT4 g64 everywhere, and the same with every other layer's MLP in INT8
p1 = {u: "int4-g64" for u in units}
p2 = {u: ("int8" if ".mlp." in u and int(u.split(".")[2]) % 2 else "int4-g64") for u in units}
stack = calibrate._stack_groups
runs = []
def run(arm, point, tag):
    if arm == "A":
        calibrate._stack_groups = lambda linears, schemes: [[n] for n in linears]
        linear_quant.MSE_MEMO_SIZE = 0; linear_quant._mse_memo.clear()
    else:
        calibrate._stack_groups = stack
        linear_quant.MSE_MEMO_SIZE = 4096
    concrete = dataclasses.replace(recipe, layer_schemes=tuple(sorted(point.items())))
    c0, w0 = time.process_time(), time.monotonic()
    quantize("smollm2-135m", concrete, Path(sys.argv[1]) / f"{arm}-{tag}", force=True)
    runs.append({"arm": arm, "point": tag, "cpu_s": time.process_time() - c0, "wall_s": time.monotonic() - w0})
    print(runs[-1], flush=True)
# warm-up (imports, first reads) outside the measurement
quantize("smollm2-135m", dataclasses.replace(load_recipe("w8a16-int8")), Path(sys.argv[1]) / "warm", force=True)
for arm, point, tag in [("B", p1, "p1"), ("A", p1, "p1"), ("B", p2, "p2"), ("A", p2, "p2"), ("B", p1, "p1-again")]:
    run(arm, point, tag)
json.dump(runs, open(sys.argv[2], "w"), indent=1)
