"""Quantization on CUDA (each decoder layer calibrated on the GPU) gives the artifact the CPU run gives, up to
floating-point summation order in the statistics."""
import pytest
import torch
from safetensors.torch import load_file

from kvant.engine.loader import load_model
from kvant.kernels.int4_pack import unpack_int4
from kvant.quantize.api import quantize
from kvant.quantize.recipe import load_recipe

PROMPT = torch.tensor([1, 520, 2333, 314, 1000, 45, 9000, 13, 77, 300, 12, 8, 4410, 93, 7])
CASES = [("w4a16-gptq", "llama"), ("w4a16-awq", "qwen3"), ("w8a8-int8", "qwen2"), ("fp8-static", "llama"),
         ("fp8-dynamic-kv", "mistral"), ("fp8-dynamic", "qwen3")]


def _logits(path) -> torch.Tensor:
    model = load_model(path, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        return model.compute_logits(model(PROMPT, torch.arange(len(PROMPT))))


@pytest.mark.gpu
@pytest.mark.parametrize("recipe_name,arch", CASES)
def test_cuda_artifact_matches_cpu_artifact(recipe_name, arch, tiny_models, tmp_path):
    recipe = load_recipe(recipe_name).with_calibration(num_samples=4, seq_len=32)
    cpu = load_file(str(quantize(str(tiny_models[arch]), recipe, tmp_path / "cpu", device="cpu") / "model.safetensors"))
    gpu_dir = quantize(str(tiny_models[arch]), recipe, tmp_path / "gpu", device="cuda")
    gpu = load_file(str(gpu_dir / "model.safetensors"))
    assert set(cpu) == set(gpu)
    for key, a in cpu.items():
        b = gpu[key]
        assert (a.dtype, a.shape, b.device.type) == (b.dtype, b.shape, "cpu"), key
        if key.endswith("weight_packed"):  # GPTQ/AWQ decisions can flip near ties: compare the codes
            cols = int(cpu[key.replace("weight_packed", "weight_shape")][1])
            same = (unpack_int4(a, cols) == unpack_int4(b, cols)).float().mean()
            assert same > 0.95, f"{key}: only {same:.1%} of the codes agree"
        elif a.dtype in (torch.int8, torch.float8_e4m3fn):
            same = (a.view(torch.uint8) == b.view(torch.uint8)).float().mean()
            assert same > 0.95, f"{key}: only {same:.1%} of the codes agree"
        elif a.is_floating_point():
            torch.testing.assert_close(b.float(), a.float(), rtol=2e-2, atol=1e-6, msg=key)
    ref, got = _logits(tmp_path / "cpu"), _logits(gpu_dir)
    assert float((got - ref).norm() / ref.norm()) < 0.05
