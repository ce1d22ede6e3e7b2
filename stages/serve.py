"""``mote serve``: one long-running process that holds a collection and answers searches over
HTTP, with a page to search from in a browser.

The embeddings are read once and kept on the device (``ResidentRows``: fp16 on a GPU), the
text and image towers loaded once, the bank statistics made (or read) once; a request is then
a matmul and a top-k (``pipeline/search/service.py``). The HTTP side is Starlette on uvicorn
(``pipeline/search/http_app.py``; ``pip install 'mote[serve]'``). It binds 127.0.0.1 unless
``--host`` says otherwise, is read-only, and reaches files only through the collection's table.
Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from mote.cache_schema.embeddings import EmbeddingsFile
from mote.pipeline.device import resolve_device
from mote.pipeline.errors import ConfigError
from mote.pipeline.progress import NullProgress, Progress
from mote.pipeline.runs.file_run import query_clip, run_for_file
from mote.pipeline.search.banks import file_store
from mote.pipeline.search.engine import logit_scale, make_scorers, open_index
from mote.pipeline.search.index import check_index_option
from mote.pipeline.search.score_names import SCORES, check_score
from mote.pipeline.search.service import Limits, Loaded, SearchService
from mote.pipeline.threads import command_threads, use_threads
from mote.pipeline.video.nvdec import check_decoder_usable
from mote.stages.configs.serve_config import ServeConfig

CHECK_QUERY = "a person doing something"  # --check's one query
MISSING = "mote serve needs Starlette and uvicorn: pip install 'mote[serve]'"


def load(cfg: ServeConfig, progress: Progress) -> SearchService:
    """The collection in memory: rows on the device, the towers, every score's scorer."""
    check_score(cfg.score)
    device = resolve_device(cfg.device)
    file = EmbeddingsFile.open(cfg.embeddings, storage_options=cfg.storage_options)
    file.read_table()  # an unfinished file is refused here, naming how to finish it
    progress.message(f"loading {file.n_rows} videos of {cfg.embeddings} onto {device}")
    run = run_for_file(file, cfg.run, device)
    use_threads(device, width=file.dim)
    clip = query_clip(file, cfg.run, device)
    scorers, _ = make_scorers(set(SCORES), set(SCORES), file, logit_scale(run, clip), clip,
                              device, cfg.storage_options)  # fmt: skip
    store = file_store(file, cfg.storage_options)
    if store is None:
        progress.message(
            f"the store of {file.path} is gone ({file.attrs['store']['path']}): hits carry no "
            "moment and the page shows each video's first frame"
        )
    index = None
    check_index_option(cfg.index)
    if cfg.index is not None:
        if not isinstance(file.path, Path):
            raise ConfigError(f"--index with --embeddings {file.path}: the index is saved beside "
                              "the file, which must then be a local folder")  # fmt: skip
        index = open_index(file, cfg.index, progress)[0]
    loaded = Loaded(file, clip, run, scorers, cfg.score, store, cfg.root, device, cfg.decoder,
                    cfg.storage_options, index)  # fmt: skip
    return SearchService(loaded, Limits(max_k=cfg.max_k))


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening, so the address printed is the one served (port 0: the
    one the system picked); connections made before the server runs wait in its backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror or error}); "
            "pick another --port (0 picks a free one)"
        ) from None
    sock.listen(2048)
    return sock


@command_threads()
def run(
    cfg: ServeConfig,
    progress: Progress | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> dict:
    """Serve until Ctrl-C or SIGTERM; return what was served."""
    try:
        import uvicorn

        from mote.pipeline.search.http_app import make_app
    except ImportError:
        raise ConfigError(MISSING) from None
    progress = progress or NullProgress()
    started = time.perf_counter()
    check_decoder_usable(cfg.decoder)  # queries and thumbnails decode: refused before the port
    sock = listening_socket(cfg.host, cfg.port)  # a taken port fails before minutes of loading
    try:
        service = load(cfg, progress)
    except BaseException:
        sock.close()
        raise
    app = make_app(service, int(cfg.max_body_mb * 1024 * 1024))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    if cfg.check:
        sock.close()
        asked = service.search({"query": CHECK_QUERY, "k": 3})
        progress.message(f"checked: would serve {service.loaded.file.n_rows} videos at {url}")
        return {**service.health(), "url": url, "check_query": CHECK_QUERY,
                "check_hits": len(asked["hits"]), "check_ms": asked["took_ms"]}  # fmt: skip
    ready = f"serving {service.loaded.file.n_rows} videos at {url} (Ctrl-C stops)"
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        (on_ready or progress.message)(ready)
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM before uvicorn took the signals, or raised again
        pass  # on its way out: either way a stop, not a failure
    finally:
        sock.close()
    return {
        "url": url,
        "videos": service.loaded.file.n_rows,
        "requests": app.state.metrics.total(),
        "seconds": round(time.perf_counter() - started, 3),
    }
