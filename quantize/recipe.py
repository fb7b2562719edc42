"""Flat YAML recipes in llm-compressor's vocabulary -> a validated `Recipe`, before any work starts."""
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from kvant.artifact.errors import KvantError
from kvant.artifact.schemes import Scheme, get_scheme
from kvant.quantize.candidates import CANDIDATES, check_candidate
from kvant.quantize.primitives import OBSERVERS

ALGORITHMS = ("rtn", "gptq", "awq", "awq+gptq")
ACTORDERS = (None, "static", "weight")  # "group"/"dynamic" need g_idx, which compressed-tensors >= 0.19 rejects
KV_CACHE_SCHEMES = (None, "fp8")
# keys that only mean something with a given algorithm
GPTQ_KEYS = ("dampening_frac", "actorder", "block_size")
AWQ_KEYS = ("n_grid", "duo_scaling", "clip_search")
# keys of an auto (mixed-precision search) recipe; `layer_schemes` holds the search's answer
AUTO_KEYS = ("target", "budget", "candidates", "sensitivity_samples", "sensitivity")
SENSITIVITY_METHODS = ("fisher", "kl")  # kvant.quantize.sensitivity: estimated (Fisher) or measured KL
DEFAULT_CANDIDATES = ("int4-g128", "int4-g64", "int4-g32", "int8", "bf16")


def _find_recipes_dir() -> Path:
    # an installed wheel ships recipes/*.yaml as the data package kvant.recipes; a source checkout (editable install)
    # has no such package and reads the repo's recipes/ folder
    try:
        found = resources.files("kvant.recipes")
    except ModuleNotFoundError:
        found = None
    if isinstance(found, Path) and found.is_dir():
        return found
    return Path(__file__).resolve().parents[1] / "recipes"


RECIPES_DIR = _find_recipes_dir()


@dataclass(slots=True, frozen=True)
class Calibration:
    dataset: str = "builtin"  # builtin | synthetic | local .txt/.jsonl/folder | HF dataset id
    num_samples: int = 512
    seq_len: int = 2048
    seed: int = 0
    chat_template: bool = False  # format builtin/local samples with the tokenizer's chat template
    split: str = "train"  # HF datasets only
    text_field: str = "text"  # HF datasets and .jsonl

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"calibration.dataset must be a non-empty string, got {self.dataset!r}")
        for name in ("num_samples", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"calibration.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.chat_template, bool):
            raise ValueError(f"calibration.chat_template must be true or false, got {self.chat_template!r}")


@dataclass(slots=True, frozen=True)
class Recipe:
    scheme: str
    description: str = ""
    group_size: int | None = None  # W4A16 only; default 128 from the preset
    targets: tuple[str, ...] = ("Linear",)
    ignore: tuple[str, ...] = ("lm_head",)
    algorithm: str = "rtn"
    smoothing_strength: float | None = None  # SmoothQuant alpha; None = off
    dampening_frac: float = 0.01
    actorder: str | None = "static"
    block_size: int = 128
    n_grid: int = 20
    duo_scaling: bool = True
    clip_search: bool = True
    observer: str = "minmax"  # INT4 group ranges: the full range, or the shrink with the least error ("mse")
    kv_cache_scheme: str | None = None
    # mixed precision: (module name or "re:" pattern, candidate) pairs, first match wins; unmatched Linears take
    # `scheme`. Written as a mapping in YAML.
    layer_schemes: tuple[tuple[str, str], ...] = ()
    # auto: choose layer_schemes among `candidates` so the artifact passes `target` (min recovery; None: the gate of
    # `scheme`) with the fewest weight bytes, within `budget` (max average bits per Linear weight; None: no cap)
    candidates: tuple[str, ...] = ()
    target: float | None = None
    budget: float | None = None
    sensitivity_samples: int = 4  # calibration samples the per-layer sensitivity is measured on
    sensitivity: str = "fisher"
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self):
        self.quant_scheme  # raises ValueError naming scheme / group_size
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if not self.targets or any(t != "Linear" and not t.startswith("re:") for t in self.targets):
            raise ValueError(f"targets must be 'Linear' or 're:<regex>' module patterns, got {list(self.targets)}")
        if self.smoothing_strength is not None:
            if not 0.0 <= float(self.smoothing_strength) <= 1.0:
                raise ValueError(f"smoothing_strength must be in [0, 1], got {self.smoothing_strength}")
            if self.quant_scheme.input_activations is None:
                raise ValueError("smoothing_strength needs a scheme that quantizes activations (W8A8_INT8, FP8_*)")
        if not 0.0 < self.dampening_frac < 1.0:
            raise ValueError(f"dampening_frac must be in (0, 1), got {self.dampening_frac}")
        if self.actorder not in ACTORDERS:
            raise ValueError(f"actorder must be one of {ACTORDERS}, got {self.actorder!r}")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {self.block_size!r}")
        if not isinstance(self.n_grid, int) or self.n_grid < 2:
            raise ValueError(f"n_grid must be an integer >= 2, got {self.n_grid!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {OBSERVERS}, got {self.observer!r}")
        if self.kv_cache_scheme not in KV_CACHE_SCHEMES:
            raise ValueError(f"kv_cache_scheme must be one of {KV_CACHE_SCHEMES}, got {self.kv_cache_scheme!r}")
        for pattern, candidate in self.layer_schemes:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"layer_schemes keys must be module names or 're:' patterns, got {pattern!r}")
            check_candidate(candidate)
        for candidate in self.candidates:
            check_candidate(candidate)
        if self.candidates and len(set(self.candidates)) < 2:
            raise ValueError(f"candidates must name at least two of {', '.join(CANDIDATES)}, got {list(self.candidates)}")
        if self.target is not None and not 0.0 < float(self.target) <= 1.0:
            raise ValueError(f"target must be a recovery in (0, 1], got {self.target}")
        if self.budget is not None and not 4.0 <= float(self.budget) <= 16.0:
            raise ValueError(f"budget must be average bits per weight in [4, 16], got {self.budget}")
        if not isinstance(self.sensitivity_samples, int) or self.sensitivity_samples < 1:
            raise ValueError(f"sensitivity_samples must be a positive integer, got {self.sensitivity_samples!r}")
        if self.sensitivity not in SENSITIVITY_METHODS:
            raise ValueError(f"sensitivity must be one of {SENSITIVITY_METHODS}, got {self.sensitivity!r}")
        if not self.candidates and (self.target is not None or self.budget is not None):
            raise ValueError("target and budget need a candidates list (an auto recipe, such as recipes/auto.yaml)")

    @property
    def quant_scheme(self) -> Scheme:
        return get_scheme(self.scheme, self.group_size)

    @property
    def is_auto(self) -> bool:
        # a search still to run: candidates given, no per-layer answer yet
        return bool(self.candidates) and not self.layer_schemes

    @property
    def uses_gptq(self) -> bool:
        return self.algorithm in ("gptq", "awq+gptq")

    @property
    def uses_awq(self) -> bool:
        return self.algorithm in ("awq", "awq+gptq")

    @property
    def needs_data(self) -> bool:
        return (self.algorithm != "rtn" or self.smoothing_strength is not None or self.kv_cache_scheme is not None
                or self.quant_scheme.needs_activation_stats)

    def with_calibration(self, **changes) -> "Recipe":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, calibration=dataclasses.replace(self.calibration, **changes))

    def to_dict(self) -> dict:
        # the recipe as run: keys of algorithms not used are left out, so the dict reloads to an equal Recipe
        data = dataclasses.asdict(self)
        data["targets"], data["ignore"] = list(self.targets), list(self.ignore)
        data["layer_schemes"] = dict(self.layer_schemes)
        data["candidates"] = list(self.candidates)
        for key in (() if self.uses_gptq else GPTQ_KEYS) + (() if self.uses_awq else AWQ_KEYS):
            del data[key]
        if not self.candidates:
            for key in AUTO_KEYS:
                del data[key]
        if not self.layer_schemes:
            del data["layer_schemes"]
        if not self.needs_data:
            del data["calibration"]
        return data


def _reject_unknown(data: dict, allowed, where: str) -> None:
    for key in data:
        if key not in allowed:
            raise ValueError(f"unknown recipe key {where}{key!r} (allowed: {', '.join(sorted(allowed))})")


def recipe_from_dict(data: dict) -> Recipe:
    if not isinstance(data, dict):
        raise ValueError("a recipe must be a YAML mapping")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    _reject_unknown(data, fields, "")
    if "scheme" not in data:
        raise ValueError("recipe key 'scheme' is required")
    algorithm = data.get("algorithm", "rtn")
    for key in GPTQ_KEYS:
        if key in data and algorithm not in ("gptq", "awq+gptq"):
            raise ValueError(f"recipe key {key!r} needs algorithm gptq or awq+gptq, got {algorithm!r}")
    for key in AWQ_KEYS:
        if key in data and algorithm not in ("awq", "awq+gptq"):
            raise ValueError(f"recipe key {key!r} needs algorithm awq or awq+gptq, got {algorithm!r}")
    kwargs = dict(data)
    calib = kwargs.pop("calibration", None) or {}
    if not isinstance(calib, dict):
        raise ValueError("recipe key 'calibration' must be a mapping")
    _reject_unknown(calib, {f.name for f in dataclasses.fields(Calibration)}, "calibration.")
    for key in ("targets", "ignore", "candidates"):
        if key in kwargs:
            value = kwargs[key]
            kwargs[key] = tuple([value] if isinstance(value, str) else value or ())
    if "layer_schemes" in kwargs:
        if not isinstance(kwargs["layer_schemes"], dict):
            raise ValueError("recipe key 'layer_schemes' must be a mapping of module name (or 're:' pattern) to one "
                             f"of {', '.join(CANDIDATES)}")
        kwargs["layer_schemes"] = tuple(kwargs["layer_schemes"].items())
    return Recipe(**kwargs, calibration=Calibration(**calib))


def shipped_recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(source: str | Path) -> Recipe:
    # a path to a YAML file, or the name of a shipped recipe (recipes/<name>.yaml)
    path = Path(source)
    if not path.is_file():
        shipped = RECIPES_DIR / f"{source}.yaml"
        if not shipped.is_file():
            names = ", ".join(shipped_recipe_names()) or f"none found in {RECIPES_DIR}"
            raise KvantError(f"recipe {source!r} is neither a file nor a shipped recipe ({names})")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KvantError(f"cannot read recipe {path}: {exc}") from None
    try:
        return recipe_from_dict(data)
    except (TypeError, ValueError) as exc:
        raise KvantError(f"recipe {path}: {exc}") from None
