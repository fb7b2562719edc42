"""What artifacts a user has: base, scheme, size, bits per weight, gate verdict, checksum state (for `kvant models
list` and the TUI's artifact list). Reads headers and JSON only; never loads weights."""
import json
from dataclasses import dataclass
from pathlib import Path

from kvant.engine.errors import KvantError
from kvant.quantize import manifest as mf

# safetensors dtype -> bits per element
DTYPE_BITS = {"F64": 64, "F32": 32, "BF16": 16, "F16": 16, "F8_E4M3": 8, "F8_E5M2": 8, "I64": 64, "I32": 32,
              "I16": 16, "I8": 8, "U8": 8, "BOOL": 8}
QUANT_PARTS = ("weight_scale", "weight_zero_point", "weight_g_idx")


@dataclass(slots=True, frozen=True)
class ArtifactRow:
    name: str
    path: Path
    base: str
    scheme: str
    size_bytes: int
    bits_per_weight: float | None  # stored bits (codes + scales + zero points) per quantized weight
    gate: str  # "pass" | "fail" | "not evaluated"
    checksums: str  # "ok" or the first problem, in one line


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def bits_per_weight(folder: Path) -> float | None:
    """Over the quantized Linear layers (those with a weight_scale): stored bits / weights they stand for."""
    from safetensors import safe_open

    tensors: dict[str, tuple[str, list[int]]] = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(shard), framework="numpy") as f:
            for key in f.keys():
                part = f.get_slice(key)
                tensors[key] = (part.get_dtype(), part.get_shape())
    bits = weights = 0
    for key in tensors:
        if not key.endswith(".weight_scale"):
            continue
        layer = key.removesuffix(".weight_scale")
        if f"{layer}.weight_packed" in tensors:
            dtype, shape = tensors[f"{layer}.weight_packed"]
            codes = (DTYPE_BITS[dtype] // 4) * _numel(shape)  # int32 words hold eight 4-bit codes
            bits += DTYPE_BITS[dtype] * _numel(shape)
        elif f"{layer}.weight" in tensors:
            dtype, shape = tensors[f"{layer}.weight"]
            codes = _numel(shape)
            bits += DTYPE_BITS[dtype] * codes
        else:
            continue
        weights += codes
        for part in QUANT_PARTS:
            if f"{layer}.{part}" in tensors:
                dtype, shape = tensors[f"{layer}.{part}"]
                bits += DTYPE_BITS.get(dtype, 32) * _numel(shape)
    return bits / weights if weights else None


def _gate(folder: Path) -> str:
    results = folder / "eval" / "results.json"
    if not results.is_file():
        return "not evaluated"
    try:
        return "pass" if json.loads(results.read_text(encoding="utf-8")).get("passed") else "fail"
    except json.JSONDecodeError:
        return "unreadable results"


def _checksums(folder: Path) -> str:
    try:
        mf.verify(folder)
    except KvantError as exc:
        return " ".join(str(exc).split())
    return "ok"


def describe(folder: Path) -> ArtifactRow:
    folder = Path(folder)
    manifest = mf.read(folder)
    base = manifest.get("base_model") or {}
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return ArtifactRow(folder.name, folder, str(base.get("name") or base.get("path") or "?"),
                       str(manifest.get("scheme", "?")), size, bits_per_weight(folder), _gate(folder),
                       _checksums(folder))


def list_artifacts(root: Path) -> list[ArtifactRow]:
    """Every folder under `root` (one level) holding a kvant.json, by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [describe(p) for p in sorted(root.iterdir()) if (p / mf.MANIFEST).is_file()]


def format_rows(rows: list[ArtifactRow]) -> str:
    header = ("artifact", "base", "scheme", "size", "bits/w", "gate", "checksums")
    table = [header] + [(r.name, r.base, r.scheme, f"{r.size_bytes / 2**20:.1f} MiB",
                         "-" if r.bits_per_weight is None else f"{r.bits_per_weight:.2f}", r.gate, r.checksums)
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in table)
