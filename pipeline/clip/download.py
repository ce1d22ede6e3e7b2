"""Weights of a pretrained tag: found in the local caches, or downloaded only if the host answers.

Asking for a tag that is not on disk fails within seconds: the caches open_clip would use are
checked first, and a download through open_clip is only tried after a short reachability probe
(huggingface_hub alone retries for about 45 s before giving up).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from mote.pipeline.errors import WeightsUnavailable

PROBE_TIMEOUT_S = 3.0
OPENAI_CLIP_CACHE = Path("~/.cache/clip")  # where open_clip stores URL downloads by default
HOW_TO_FIX = (
    "pass a local weights file with `--pretrained /path/to/weights.safetensors`, "
    "or a folder holding open_clip_config.json and its weights with `--model local-dir:/path`"
)


def cached_file(tag_cfg: dict[str, Any]) -> Path | None:
    """The tag's weights if already on disk: open_clip's 'file', the HF cache, ~/.cache/clip.

    A file in ~/.cache/clip whose URL carries a SHA256 prefix must match it, as open_clip demands.
    """
    if tag_cfg.get("file") and Path(tag_cfg["file"]).is_file():
        return Path(tag_cfg["file"])
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME  # a trailing slash means open_clip's default file
        for name in [*_safe_alternatives(filename), filename]:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
    url = tag_cfg.get("url", "")
    if url:
        local = OPENAI_CLIP_CACHE.expanduser() / os.path.basename(urlparse(url).path)
        if local.is_file():
            check_sha256(local, url)
            return local
    return None


def _safe_alternatives(filename: str) -> list[str]:
    """The .safetensors files open_clip tries before a hub entry's .bin/.pth (private there)."""
    alternatives = getattr(open_clip.pretrained, "_get_safe_alternatives", None)
    if alternatives is not None:
        return list(alternatives(filename))
    if filename == HF_WEIGHTS_NAME:
        return [HF_SAFE_WEIGHTS_NAME]
    return [filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []


def expected_sha256(url: str) -> str:
    """The SHA256 prefix a release URL names, by open_clip's rule (download_pretrained_from_url):
    OpenAI's folder name, or the last '-' part of an mlfoundations file name; '' if none."""
    if "openaipublic" in url:
        return url.split("/")[-2]
    if "mlfoundations" in url:
        return os.path.splitext(os.path.basename(urlparse(url).path))[0].split("-")[-1]
    return ""


def check_sha256(path: Path, url: str) -> None:
    """Refuse a cached download whose content does not match the SHA256 its URL names."""
    expected = expected_sha256(url)
    if not expected:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    found = digest.hexdigest()
    if not found.startswith(expected):
        raise WeightsUnavailable(
            f"cached weights {path} fail their SHA256 check (expected {expected[:16]}..., found "
            f"{found[:16]}...): delete the file to download it again, or {HOW_TO_FIX}"
        )


def download(model: str, tag: str, tag_cfg: dict[str, Any]) -> Path:
    """Download through open_clip (which checks URL files' SHA256), but only when the host
    answers within a few seconds."""
    what = f"weights {tag!r} for model {model}"
    if hub_offline():
        raise WeightsUnavailable(
            f"{what} are not in the local cache and HF_HUB_OFFLINE is set; {HOW_TO_FIX}"
        )
    host = _download_host(tag_cfg)
    reason = unreachable(host)
    if reason:
        raise WeightsUnavailable(
            f"{what} are not in the local cache and {host} cannot be reached ({reason}); "
            f"{HOW_TO_FIX}"
        )
    try:
        target = open_clip.download_pretrained(tag_cfg)
    except Exception as exc:  # noqa: BLE001 - every download failure has the same fix
        raise WeightsUnavailable(f"downloading {what} failed ({exc}); {HOW_TO_FIX}") from exc
    if not target or not Path(target).is_file():
        raise WeightsUnavailable(f"open_clip returned no file for {what}; {HOW_TO_FIX}")
    return Path(target)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it only once, at import)."""
    import huggingface_hub.constants as hub_constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return env in {"1", "ON", "YES", "TRUE"} or bool(hub_constants.HF_HUB_OFFLINE)


def _download_host(tag_cfg: dict[str, Any]) -> str:
    if tag_cfg.get("hf_hub"):
        import huggingface_hub.constants as hub_constants

        return urlparse(hub_constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(tag_cfg.get("url", "")).hostname or ""


def unreachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> str:
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
