"""The CLIP wrapper: resolve a model and its weights through open_clip, then encode frames and text.

Weights and preprocessing travel together (as in open_clip's pretrained table); what the weights
are is recorded as ``weights_id`` so a feature store can tell two checkpoints apart. Asking for a
tag that is not on disk fails within seconds: the local caches are checked first, and a network
download is only tried after a short reachability probe.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import difflib
import hashlib
import json
import logging
import os
import shutil
import socket
import ssl
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from mote.pipeline.clip import text as text_mod
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError, WeightsUnavailable
from mote.pipeline.video.transforms import PreprocessSpec, normalize

TINY_NAME = "mote-tiny"
# A test-size CLIP (contract "Common options"): 64-d embeddings, 2 layers per tower, 64 px input.
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
LOCAL_DIR_PREFIX = "local-dir:"
RANDOM_TAG = "none"
PROBE_TIMEOUT_S = 3.0
OPENAI_CLIP_CACHE = Path("~/.cache/clip")  # where open_clip stores URL downloads by default
_HOW_TO_FIX = (
    "pass a local weights file with `--pretrained /path/to/open_clip_model.safetensors`, "
    "or a folder holding open_clip_config.json and its weights with `--model local-dir:/path`"
)
_JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
_config_dir: Path | None = None


@dataclass
class _Resolved:
    """An architecture open_clip can build, plus what the weights source adds to it."""

    arch: str  # name in open_clip's registry, or a local-dir: spec
    cfg: dict[str, Any]
    preprocess: dict[str, Any] = field(default_factory=dict)
    quick_gelu: bool = False


class ClipEncoder:
    """A built CLIP with the facts a feature store records about it.

    ``model`` is the whole open_clip model in fp32; ``visual`` is its image tower, kept trainable
    for end-to-end fine-tuning. On CUDA, ``encode_frames`` runs an fp16 snapshot of ``visual``
    taken at its first call (1.4x the throughput of autocast on an H200, same embeddings to
    cosine 0.999999); after training ``visual``, call ``refresh_inference_copy()``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        model_name: str,
        pretrained: str,
        weights_id: str,
        dim: int,
        arch: str,
        device: torch.device,
    ) -> None:
        self.model = model
        self.visual = model.visual
        self.model_name = model_name
        self.pretrained = pretrained
        self.weights_id = weights_id
        self.dim = dim
        self.preprocess = PreprocessSpec.from_model(model)
        self.device = device
        self.dtype = torch.float16 if device.type == "cuda" else torch.float32
        self._arch = arch
        self._tokenizer: Any = None
        self._visual_copy: torch.nn.Module | None = None

    def __repr__(self) -> str:
        return (
            f"ClipEncoder(model_name={self.model_name!r}, weights_id={self.weights_id!r}, "
            f"dim={self.dim}, size={self.preprocess.size}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for this architecture, made on first use."""
        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self._arch)
        return self._tokenizer

    def encode_frames(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, S, S, 3) -> float32 (B, D) on ``device``: unnormalised projected embeddings."""
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(np.ascontiguousarray(x))
        size = self.preprocess.size
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"encode_frames expects uint8 (B, {size}, {size}, 3) for {self.model_name}, "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        x = x.to(self.device, non_blocking=True)
        visual = self._inference_visual()
        with torch.inference_mode():
            pixels = normalize(x, self.preprocess, self.dtype)  # (B, 3, S, S)
            features = visual(pixels)  # (B, D), = encode_image(normalize=False)
        return features.float()

    def refresh_inference_copy(self) -> None:
        """Drop the fp16 snapshot so the next ``encode_frames`` sees the current ``visual``."""
        self._visual_copy = None

    def _inference_visual(self) -> torch.nn.Module:
        if self.dtype == torch.float32:
            return self.visual
        if self._visual_copy is None:
            frozen = copy.deepcopy(self.visual).to(self.dtype).eval()
            self._visual_copy = frozen.requires_grad_(False)
        return self._visual_copy

    def class_text_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """float32 (C, D) on CPU: the 28-template ensemble of spec section 6."""
        return text_mod.class_text_embeddings(self.model, self.tokenizer, names, self.device)


def build_clip(model: str, pretrained: str, device: str = "auto", seed: int = 0) -> ClipEncoder:
    """Build ``model`` with ``pretrained`` weights (a tag, a local file or ``none``) on a device."""
    torch_device = resolve_device(device)
    resolved = _resolve_model(model)
    if pretrained.strip().lower() == RANDOM_TAG:
        net = _create(resolved, seed)
        source, weights_id = RANDOM_TAG, f"random:seed={seed}"
    else:
        if resolved.arch.startswith(LOCAL_DIR_PREFIX):  # the folder's weights; a tag is ignored
            weights_path = _local_dir_weights(model, resolved.arch)
            weights_id = file_weights_id(weights_path)
        else:
            weights_path, weights_id = _weights_for(model, resolved, pretrained)
        if _is_torchscript(weights_path):
            resolved.quick_gelu = True  # only OpenAI's own CLIP ships as TorchScript
        net = _create(resolved, seed)
        _load_into(net, weights_path, model)
        source = pretrained if weights_id == pretrained else str(weights_path)
    net.eval().to(torch_device)
    return ClipEncoder(
        net,
        model_name=model,
        pretrained=source,
        weights_id=weights_id,
        dim=int(resolved.cfg["embed_dim"]),
        arch=resolved.arch,
        device=torch_device,
    )


def register_tiny() -> str:
    """Register ``mote-tiny`` with open_clip once per process; return its name."""
    return _register(TINY_NAME, TINY_CONFIG)


def file_weights_id(path: str | os.PathLike[str]) -> str:
    """``sha256:<first 16 hex digits>`` of a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()[:16]}"


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file: .safetensors, a torch state_dict (plain or under ``state_dict``),
    or OpenAI's TorchScript archive. A ``module.`` prefix (data-parallel) is stripped."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            import safetensors.torch

            state: Any = safetensors.torch.load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            with warnings.catch_warnings():  # torch>=2.10 deprecates TorchScript; we only read it
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means the same to the user
        raise WeightsUnavailable(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(
            f"weights file {path} holds no state_dict of tensors (got {type(state).__name__})"
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in _JIT_EXTRA_KEYS}


# ---------------------------------------------------------------------------------------------
# Model names


def _resolve_model(model: str) -> _Resolved:
    """Map the --model value to an open_clip architecture and its config."""
    if model == TINY_NAME:
        return _Resolved(register_tiny(), _model_config(TINY_NAME))
    if model.startswith(LOCAL_DIR_PREFIX):
        return _resolve_local_dir(model)
    if model.lower().endswith(".json") or os.path.isfile(model):
        return _resolve_config_file(model)
    if model.startswith("hf-hub:"):
        raise ConfigError(
            f"--model {model}: hub models are not fetched by mote; download the repo and use "
            "--model local-dir:/path/to/that/folder"
        )
    arch = model.replace("/", "-")  # open_clip accepts "ViT-B/16" for "ViT-B-16"
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see open_clip.list_models()"
        raise ConfigError(
            f"--model {model!r} is not an open_clip model, a .json config file or "
            f"local-dir:PATH; {hint} (or use the built-in {TINY_NAME!r})"
        )
    return _Resolved(arch, cfg)


def _resolve_local_dir(model: str) -> _Resolved:
    folder = Path(model[len(LOCAL_DIR_PREFIX) :]).expanduser()
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise ConfigError(
            f"--model {model}: {config} not found; a local-dir folder needs open_clip_config.json "
            "(as written by open_clip's push_to_hf_hub) next to its weights"
        )
    return _Resolved(f"{LOCAL_DIR_PREFIX}{folder}", _model_config(f"{LOCAL_DIR_PREFIX}{folder}"))


def _resolve_config_file(model: str) -> _Resolved:
    """A JSON architecture (open_clip's model_configs format, or open_clip_config.json's)."""
    path = Path(model).expanduser()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"--model {model}: config file not found") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--model {model}: cannot read JSON config ({exc})") from exc
    cfg = raw.get("model_cfg", raw) if isinstance(raw, dict) else None
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= cfg.keys():
        raise ConfigError(
            f"--model {model}: not an open_clip model config (needs embed_dim, vision_cfg, "
            "text_cfg, like open_clip/model_configs/ViT-B-16.json)"
        )
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    arch = _register(f"mote-file-{path.stem}-{digest}", cfg)
    return _Resolved(arch, _model_config(arch), dict(raw.get("preprocess_cfg", {})))


def _model_config(arch: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(arch)
    if cfg is None:  # registered a moment ago, so this is a bug, not a user error
        raise RuntimeError(f"open_clip has no config for {arch!r} after registration")
    return cfg


def _register(name: str, cfg: dict[str, Any]) -> str:
    """Register ``cfg`` as ``name`` (open_clip reads configs only from JSON files); idempotent."""
    global _config_dir
    if name in open_clip.list_models():
        return name
    if _config_dir is None:
        _config_dir = Path(tempfile.mkdtemp(prefix="mote-open-clip-configs-"))
        atexit.register(shutil.rmtree, _config_dir, True)
    _config_dir.mkdir(parents=True, exist_ok=True)  # a forked child may outlive its parent's
    path = _config_dir / f"{name}.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    open_clip.add_model_config(path)
    return name


# ---------------------------------------------------------------------------------------------
# Weights


def _weights_for(model: str, resolved: _Resolved, pretrained: str) -> tuple[Path, str]:
    """Resolve --pretrained (a tag first, as open_clip does, then a file) to a local file and
    its weights_id; may download."""
    tag_cfg = _tag_config(resolved.arch, pretrained)
    if not tag_cfg:
        as_path = Path(pretrained).expanduser()
        if as_path.is_file():
            return as_path, file_weights_id(as_path)
        raise WeightsUnavailable(_unknown_weights_message(model, resolved.arch, pretrained))
    resolved.quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    resolved.preprocess = _preprocess_of(tag_cfg)
    cached = _cached_file(tag_cfg)
    if cached is None:
        cached = _download(model, pretrained, tag_cfg)
    return cached, pretrained


def _tag_config(arch: str, tag: str) -> dict[str, Any]:
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg and arch.endswith("-quickgelu"):
        cfg = open_clip.get_pretrained_cfg(arch.removesuffix("-quickgelu"), tag)
    return dict(cfg)


def _preprocess_of(tag_cfg: dict[str, Any]) -> dict[str, Any]:
    keys = ("mean", "std", "interpolation", "resize_mode", "fill_color")
    return {k: tag_cfg[k] for k in keys if k in tag_cfg}


def _unknown_weights_message(model: str, arch: str, pretrained: str) -> str:
    looks_like_path = any(sep in pretrained for sep in "/\\") or Path(pretrained).suffix in {
        ".safetensors",
        ".pt",
        ".pth",
        ".bin",
    }
    if looks_like_path:
        return f"--pretrained {pretrained}: file not found (model {model}); {_HOW_TO_FIX}"
    tags = open_clip.list_pretrained_tags_by_model(arch)
    known = f"known tags for {arch}: {', '.join(tags)}" if tags else f"{arch} has no known tags"
    return (
        f"--pretrained {pretrained!r} is neither a pretrained tag of {model} nor a file "
        f"({known}); {_HOW_TO_FIX}, or use `--pretrained none` for random weights"
    )


def _cached_file(tag_cfg: dict[str, Any]) -> Path | None:
    """The tag's weights if already on disk: open_clip's 'file', the HF cache, ~/.cache/clip."""
    if tag_cfg.get("file") and Path(tag_cfg["file"]).is_file():
        return Path(tag_cfg["file"])
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        for name in _hub_filenames(filename):
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
    url = tag_cfg.get("url", "")
    if url:
        local = OPENAI_CLIP_CACHE.expanduser() / os.path.basename(urlparse(url).path)
        if local.is_file():
            return local
    return None


def _hub_filenames(filename: str) -> list[str]:
    """Files open_clip would fetch for a hub entry, safetensors first."""
    if not filename:
        return [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename.endswith((".bin", ".pth")):
        return [filename.rsplit(".", 1)[0] + ".safetensors", filename]
    return [filename]


def _download(model: str, tag: str, tag_cfg: dict[str, Any]) -> Path:
    """Download through open_clip, but only when the host answers within a few seconds."""
    what = f"weights {tag!r} for model {model}"
    if _hub_offline():
        raise WeightsUnavailable(
            f"{what} are not in the local cache and HF_HUB_OFFLINE is set; {_HOW_TO_FIX}"
        )
    host = _download_host(tag_cfg)
    reason = _unreachable(host)
    if reason:
        raise WeightsUnavailable(
            f"{what} are not in the local cache and {host} cannot be reached ({reason}); "
            f"{_HOW_TO_FIX}"
        )
    try:
        target = open_clip.download_pretrained(tag_cfg)
    except Exception as exc:  # noqa: BLE001 - every download failure has the same fix
        raise WeightsUnavailable(f"downloading {what} failed ({exc}); {_HOW_TO_FIX}") from exc
    if not target or not Path(target).is_file():
        raise WeightsUnavailable(f"open_clip returned no file for {what}; {_HOW_TO_FIX}")
    return Path(target)


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    import huggingface_hub.constants as hub_constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(hub_constants.HF_HUB_OFFLINE)


def _download_host(tag_cfg: dict[str, Any]) -> str:
    if tag_cfg.get("hf_hub"):
        import huggingface_hub.constants as hub_constants

        return urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(tag_cfg.get("url", "")).hostname or ""


def _unreachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> str:
    """'' if ``host`` completes a verified TLS handshake within ``timeout`` (or, behind an HTTPS
    proxy, the proxy accepts a TCP connection), else the reason.

    A TLS handshake, not just a TCP connect: some sandboxes accept every connection and only
    fail at TLS, where huggingface_hub would then retry for about 45 s. DNS lookups cannot be
    given a timeout, so the probe runs in a daemon thread that is abandoned if it hangs.
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 80
    outcome: dict[str, str] = {}

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                if not proxy:
                    with _tls_context().wrap_socket(sock, server_hostname=host):
                        pass
            outcome["ok"] = ""
        except (OSError, ValueError) as exc:
            outcome["error"] = str(exc) or type(exc).__name__

    worker = threading.Thread(target=attempt, daemon=True, name="mote-net-probe")
    worker.start()
    worker.join(timeout + 1.0)
    if "ok" in outcome:
        return ""
    return outcome.get("error", f"no answer within {timeout + 1.0:.0f} s")


def _tls_context() -> ssl.SSLContext:
    """Verify certificates against the bundle the HTTP clients would use."""
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return ssl.create_default_context(cafile=cafile)


def _local_dir_weights(model: str, arch: str) -> Path:
    """The weights file open_clip will load from a local-dir folder."""
    folder = Path(arch[len(LOCAL_DIR_PREFIX) :])
    finder = getattr(open_clip.factory, "_find_checkpoint_in_dir", None)
    found = finder(folder) if finder is not None else None
    if found is None:
        raise WeightsUnavailable(
            f"--model {model}: no weights file (*.safetensors, *.bin, *.pth) in {folder}; "
            "put open_clip_model.safetensors there or use `--pretrained none` for random weights"
        )
    return Path(found)


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (OpenAI's original CLIP .pt files)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _create(resolved: _Resolved, seed: int) -> torch.nn.Module:
    """Build the architecture on CPU in fp32 with weights drawn from ``seed`` (isolated RNG)."""
    with torch.random.fork_rng(devices=[]), _quiet_open_clip():
        torch.manual_seed(seed)
        if resolved.arch.startswith(LOCAL_DIR_PREFIX):
            return open_clip.create_model(resolved.arch, device="cpu", load_weights=False)
        return open_clip.create_model(
            resolved.arch,
            pretrained=None,
            precision="fp32",
            device="cpu",
            force_quick_gelu=resolved.quick_gelu,
            force_preprocess_cfg=resolved.preprocess or None,
            pretrained_image=False,
            pretrained_text=False,
        )


def _load_into(net: torch.nn.Module, path: Path, model: str) -> None:
    """Copy every tensor of ``path`` into ``net``; any missing, extra or misshapen key fails."""
    state = load_state_dict(path)
    expected = net.state_dict().keys()
    buffers = {name for name, _ in net.named_buffers()}  # TorchScript saves non-persistent ones
    state = {k: v for k, v in state.items() if k in expected or k not in buffers}
    scale = state.get("logit_scale")
    if scale is not None and scale.ndim != net.logit_scale.ndim:
        state["logit_scale"] = scale.reshape(net.logit_scale.shape)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise ConfigError(
            f"weights file {path} does not fit model {model}: {detail}; pass the --model the "
            "weights were trained with (OpenAI weights need a -quickgelu name)"
        ) from exc


class _DropOpenClipNotices(logging.Filter):
    """Drop open_clip's INFO/WARNING chatter such as 'Model initialized randomly'."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or "open_clip" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Mute open_clip's root-logger notices while mote builds a model it fills in itself.

    A temporary NullHandler stops ``logging.warning`` from installing a root handler as a side
    effect (it calls ``basicConfig`` when the root logger has none).
    """
    root = logging.getLogger()
    notice_filter, null = _DropOpenClipNotices(), logging.NullHandler()
    root.addFilter(notice_filter)
    root.addHandler(null)
    try:
        yield
    finally:
        root.removeHandler(null)
        root.removeFilter(notice_filter)
