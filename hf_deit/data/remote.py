"""Data files named by path, glob or URL (`--train_files` / `--validation_files`): listed, checked and, for map-style
data, fetched by hf_deit, with bounded retries, before datasets reads them.

Why hf_deit does this rather than hand the URLs to `load_dataset(data_files=...)` (read in the source of datasets
5.2, fsspec 2026.9 and huggingface_hub 2.4, and seen against a local HTTP server):
- datasets resolves each entry with fsspec's `glob`. fsspec's HTTPFileSystem retries nothing, and its `exists`
  reads any failure (a 503, a reset connection) as "absent", so one transient error at start-up ends the run with
  datasets' "Unable to find '<url>'": no status, no retry.
- huggingface_hub's `http_backoff` retries 5xx with backoff, but its HTTP client refuses every request, to any
  host (127.0.0.1 included), under HF_HUB_OFFLINE=1; fsspec's clients do not look at that variable.
- datasets' map-style download (`cached_path`) refuses every URL under HF_HUB_OFFLINE / HF_DATASETS_OFFLINE and
  retries nothing. Streaming reads go through fsspec, work offline, and are retried by datasets itself
  (`STREAMING_OPEN_MAX_RETRIES` / `STREAMING_READ_MAX_RETRIES`, 20 tries 5 s apart, aiohttp errors included); but a
  file it opens mid-run whose size lookup gets a 503 is "not found" to fsspec, which datasets does not retry: a
  stream's http(s) files are read through `retrying_http_client`, whose requests are retried as below.
So hf_deit lists the files (fsspec `glob` / `info`, retried with exponential backoff on connection errors and the
HTTP statuses huggingface_hub retries), hands datasets the resolved `DataFilesList`, which it takes as is (no second
resolution), and for map-style data downloads the files into the datasets cache first. HF_HUB_OFFLINE is about the
Hub: a URL named on the command line is fetched. s3:// and gs:// need s3fs / gcsfs (their own retries apply too).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Retried: connection errors and these statuses (huggingface_hub's `http_backoff` default set), RETRY_TRIES tries in
# all, waiting RETRY_BASE_WAIT_S, then twice as long each time up to RETRY_MAX_WAIT_S (1+2+4+8 s: 15 s at most).
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
RETRY_TRIES = 5
RETRY_BASE_WAIT_S = 1.0
RETRY_MAX_WAIT_S = 8.0
# The formats datasets streams from files, by extension (images as bytes in parquet / arrow, or webdataset tars).
BUILDERS = {".parquet": "parquet", ".tar": "webdataset", ".arrow": "arrow"}


def is_url(path: str) -> bool:
    """A path with a protocol other than the local one (http://, https://, s3://, gs://, hf://, ...)."""
    protocol, sep, _ = path.partition("://")
    return bool(sep) and protocol not in ("file", "local") and "/" not in protocol


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error and the ones it was raised from or during (fsspec and datasets wrap the HTTP client's)."""
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


def _status(error: BaseException) -> int | None:
    """The HTTP status behind an error (aiohttp's `status`, httpx's `response.status_code`), along its causes."""
    for link in _chain(error):
        status = getattr(link, "status", None) or getattr(getattr(link, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _is_transient(error: BaseException) -> bool:
    status = _status(error)
    if status is not None:
        return status in RETRY_STATUSES
    connection_errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, asyncio.TimeoutError)
    try:
        import aiohttp

        connection_errors += (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
    except ImportError:
        pass
    return any(isinstance(link, connection_errors) for link in _chain(error))


def _cause(error: BaseException) -> str:
    status = _status(error)
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = f"{type(root).__name__}: {root}" if str(root) else type(root).__name__
    return f"HTTP {status} ({text})" if status is not None else text


def with_retries(action: Callable[[], T], target: str) -> T:
    """`action()`, tried again after transient failures (see RETRY_STATUSES) with exponential backoff. A permanent
    failure, or the last transient one, raises FileNotFoundError (HTTP 404 / absent) or ConnectionError naming
    `target` and the real cause."""
    wait, start = RETRY_BASE_WAIT_S, time.monotonic()
    for attempt in range(1, RETRY_TRIES + 1):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 (classified just below; anything unknown is re-raised as is)
            transient = _is_transient(error)
            if transient and attempt < RETRY_TRIES:
                logger.warning("%s: %s; retrying in %.0f s [%d/%d]", target, _cause(error), wait, attempt, RETRY_TRIES)
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_WAIT_S)
                continue
            if transient:
                raise ConnectionError(
                    f"could not read {target}: {_cause(error)}, {RETRY_TRIES} tries over "
                    f"{time.monotonic() - start:.0f} s. Check that the server is up and the URL right, then run again."
                ) from error
            if isinstance(error, FileNotFoundError) or _status(error) in (403, 404, 410):
                raise FileNotFoundError(f"{target}: not found ({_cause(error)}). Check the path or URL.") from error
            raise
    raise AssertionError("unreachable")


async def _retry_transient(request: Any, handler: Any) -> Any:
    """aiohttp client middleware: a request that fails to connect or is answered with a transient status
    (RETRY_STATUSES) is sent again, with `with_retries`' backoff; the last answer or error is passed on."""
    import aiohttp

    wait = RETRY_BASE_WAIT_S
    for attempt in range(1, RETRY_TRIES + 1):
        try:
            response = await handler(request)
        except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as error:
            if attempt == RETRY_TRIES:
                raise
            cause = _cause(error)
        else:
            if response.status not in RETRY_STATUSES or attempt == RETRY_TRIES:
                return response
            cause = f"HTTP {response.status}"
            response.release()
        logger.warning("%s: %s; retrying in %.0f s [%d/%d]", request.url, cause, wait, attempt, RETRY_TRIES)
        await asyncio.sleep(wait)
        wait = min(wait * 2, RETRY_MAX_WAIT_S)
    raise AssertionError("unreachable")


async def retrying_http_client(**client_kwargs: Any) -> Any:
    """fsspec HTTPFileSystem's `get_client`: an aiohttp session whose requests are retried (`_retry_transient`).
    datasets opens a stream's files while it reads (fsspec: a HEAD for the size, then ranged GETs); its own retries
    cover connection errors only, and fsspec reads a 503 on that HEAD as "not found", which would end a run hours
    in. Module-level, so that it pickles by name into DataLoader workers."""
    import aiohttp

    return aiohttp.ClientSession(middlewares=(_retry_transient,), **client_kwargs)


def stream_storage_options(files: list[str]) -> dict[str, dict[str, Any]]:
    """datasets' `storage_options` for reading `files`: http(s) through `retrying_http_client`."""
    if not any(path.startswith(("http://", "https://")) for path in files):
        return {}
    return {protocol: {"get_client": retrying_http_client} for protocol in ("http", "https")}


def _filesystem(path: str) -> tuple[Any, str]:
    from fsspec.core import url_to_fs

    return url_to_fs(os.path.abspath(os.path.expanduser(path)) if not is_url(path) else path)


def _full_path(fs: Any, path: str, original: str) -> str:
    """A path fsspec listed, with its protocol put back (fsspec strips it for most file systems)."""
    if not is_url(original) or "://" in path:
        return path
    return f"{original.partition('://')[0]}://{path}"


def _resolve_one(pattern: str) -> list[tuple[str, dict]]:
    fs, path = _filesystem(pattern)
    if "*" in path or "[" in path:
        found = with_retries(lambda: fs.glob(path, detail=True), pattern)
        files = [(_full_path(fs, name, pattern), info) for name, info in sorted(found.items())
                 if info.get("type") == "file" and not os.path.basename(name).startswith((".", "_"))]
        # An http folder page gives names only: each file is looked up as well (its size, and a first request that
        # may fail here, with retries, rather than when datasets opens it, where a 503 reads as "not found").
        files = [(name, info if info.get("size") is not None else with_retries(lambda n=name: fs.info(n), name))
                 for name, info in files]
        if not files:
            raise FileNotFoundError(f"no file matches {pattern}" + (
                " (an http(s) glob needs a server that lists the folder; else name each file)" if pattern.startswith(
                    "http") else ""))
        return files
    info = with_retries(lambda: fs.info(path), pattern)
    if info.get("type") == "directory":
        raise IsADirectoryError(f"{pattern} is a folder: name its files, or a glob such as {pattern.rstrip('/')}/*.parquet")
    return [(_full_path(fs, path, pattern), info)]


def resolve_files(patterns: list[str]) -> list[tuple[str, dict]]:
    """(path or URL, fsspec info) of every file the patterns name: paths, local globs, URLs, globs on file systems
    that list (s3://, gs://, an http server's folder page). Looked up side by side, each with retries."""
    with ThreadPoolExecutor(max_workers=min(16, len(patterns) or 1)) as pool:
        found = [item for items in pool.map(_resolve_one, patterns) for item in items]
    return list({path: (path, info) for path, info in found}.values())  # named twice: once


def origin_metadata(info: dict) -> tuple[str, ...]:
    """What identifies a file's version (ETag on object stores and most servers, else mtime / Last-Modified / size),
    as datasets keeps it in `DataFilesList.origin_metadata` for its cache key."""
    for key in ("ETag", "etag", "mtime", "Last-Modified", "LastModified", "size"):
        if info.get(key) is not None:
            return (str(info[key]),)
    return ()


def builder_for(files: list[str]) -> str:
    """The datasets builder for files of one format, from their extensions."""
    kinds = {BUILDERS.get(os.path.splitext(path.split("?")[0])[1].lower()) for path in files}
    if None in kinds or len(kinds) != 1:
        raise ValueError(
            f"data files must all be {', '.join(BUILDERS)} files (one format), got {sorted(files)[:4]}: "
            "`hf-deit shard` writes parquet or webdataset shards from an image folder."
        )
    return kinds.pop()


def _download(url: str, size: int | None, target: str) -> str:
    """One download attempt to `target`; a short body (the connection cut) is a transient error."""
    fs, path = _filesystem(url)
    partial = f"{target}.incomplete.{os.getpid()}"
    fs.get_file(path, partial)
    got = os.path.getsize(partial)
    if size is not None and got != size:
        os.remove(partial)
        raise ConnectionError(f"body cut short: {got} of {size} bytes")
    os.replace(partial, target)
    return target


def fetch_files(files: list[tuple[str, dict]], cache_dir: str | None) -> list[tuple[str, dict]]:
    """Local copies of the remote files (map-style data is read whole anyway), kept in the datasets cache under a
    name made from the URL and its version, so that a second run reads them from disk. Local files are left as is."""
    from datasets import config

    folder = os.path.join(cache_dir or str(config.HF_DATASETS_CACHE), "downloads", "hf_deit")
    os.makedirs(folder, exist_ok=True)

    def fetch(item: tuple[str, dict]) -> tuple[str, dict]:
        url, info = item
        if not is_url(url):
            return item
        key = hashlib.sha256(f"{url}\n{origin_metadata(info)}".encode()).hexdigest()[:16]
        target = os.path.join(folder, f"{key}-{os.path.basename(url.split('?')[0])}")
        if not (os.path.exists(target) and (info.get("size") is None or os.path.getsize(target) == info["size"])):
            with_retries(lambda: _download(url, info.get("size"), target), url)
        return target, {"mtime": os.path.getmtime(target)}

    with ThreadPoolExecutor(max_workers=min(8, len(files) or 1)) as pool:
        return list(pool.map(fetch, files))


def count_parquet_rows(files: list[str]) -> int:
    """Rows of parquet files from their footers (a few KB each, ranged reads for URLs), with retries."""
    import pyarrow.parquet as pq

    def rows(path: str) -> int:
        def read() -> int:
            fs, fs_path = _filesystem(path)
            with fs.open(fs_path, "rb") as f:
                return pq.ParquetFile(f).metadata.num_rows

        return with_retries(read, path)

    with ThreadPoolExecutor(max_workers=min(16, len(files) or 1)) as pool:
        return sum(pool.map(rows, files))


__all__ = ["builder_for", "count_parquet_rows", "fetch_files", "is_url", "origin_metadata", "resolve_files",
           "retrying_http_client", "stream_storage_options", "with_retries"]
