"""The number formats kvant stores and computes in, defined once: kernels, the engine and the quantizers import these.

Here rather than in kvant.artifact because the kernels sit beside the artifact in the layers and may not import it.
"""
import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value, torch.finfo(FP8).max
INT8_MIN, INT8_MAX = -128, 127
INT4_MIN, INT4_MAX = -8, 7  # signed 4-bit codes; packed offset-binary (code + 8) in kvant.kernels.int4_pack
MIN_SCALE = 1e-12  # floor of a dynamic scale: an all-zero row still gets a finite scale
