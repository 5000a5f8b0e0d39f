"""Local paths and ``s3://bucket/prefix`` URIs behind one small API.

Every function takes the path as the user wrote it plus the run's `StorageConfig`; nothing is
read from environment variables of our own (credentials come from the usual AWS chain of
whichever process runs the code: driver or Ray worker).

Why pyarrow's native `S3FileSystem` rather than s3fs wrapped in `PyFileSystem(FSSpecHandler)`:
Ray Data's Parquet reader takes a pyarrow filesystem as is, the native one does its I/O in C++
without the GIL (footers, ranged reads, parallel column chunks), and it pickles as a handful of
options, so it travels to Ray workers cheaply and reconnects there. Both reached moto's S3 API
equally well; the fsspec wrapper only adds a Python layer on every read.

Atomic writes: on a local disk `write_bytes` writes a hidden temporary file in the target
directory and renames it into place. On S3 an object only becomes visible when its upload
completes, but pyarrow's output stream *completes* the upload when it is closed, including when
an exception unwinds a ``with`` block or the stream is garbage collected (measured against moto:
the partial object appears). So callers hand over complete bytes and the upload is a single
``write`` followed by ``close``: the object is either absent or whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import posixpath
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from hoi.config import Config, StorageConfig

S3_PREFIX = "s3://"


def is_s3(path: str) -> bool:
    return path.startswith(S3_PREFIX)


def absolute(path: str) -> str:
    """An s3:// URI as it is, a local path made absolute (Ray workers and actors run in other
    working directories than the driver)."""
    return path if is_s3(path) else os.path.abspath(path)


def absolute_paths(cfg: Config) -> Config:
    """cfg with every local path a Ray worker or actor opens made absolute (the encoders, the
    shards, the run storage, prepare's output): they run in other working directories than
    the driver."""
    def fix(path: str | None) -> str | None:
        return None if path is None else absolute(path)

    enc, t = cfg.encoders, cfg.train
    return dataclasses.replace(
        cfg,
        encoders=dataclasses.replace(enc, vae=fix(enc.vae), tokenizer=fix(enc.tokenizer),
                                     text_encoder=fix(enc.text_encoder)),
        train=dataclasses.replace(t, shards=fix(t.shards), init_from=fix(t.init_from),
                                  storage_path=fix(t.storage_path)),
        prepare=dataclasses.replace(cfg.prepare, output=fix(cfg.prepare.output)))


def join(base: str, *parts: str) -> str:
    """Join path components with '/', for local paths and s3:// URIs alike."""
    return posixpath.join(base.rstrip("/") or "/", *(p.strip("/") for p in parts))


def resolve(path: str, storage: StorageConfig) -> tuple[pafs.FileSystem, str]:
    """A path as written -> (filesystem, path inside it).

    's3://bucket/a/b' -> (S3FileSystem, 'bucket/a/b'); 'data/x' -> (LocalFileSystem, '/abs/data/x').
    Local paths become absolute here because Ray workers run in another working directory.
    """
    fs, (inner,) = resolve_all([path], storage)
    return fs, inner


def resolve_all(paths: Sequence[str], storage: StorageConfig) -> tuple[pafs.FileSystem, list[str]]:
    """`resolve` for many paths on one filesystem, which is built once (an S3 client is not free)."""
    if not paths:
        raise ValueError("no paths given")
    on_s3 = {is_s3(p) for p in paths}
    if len(on_s3) > 1:
        raise ValueError(f"paths mix s3:// and local locations: {paths[0]!r}, ...")
    inners = [_inner_path(p) for p in paths]
    if not on_s3.pop():
        return pafs.LocalFileSystem(), inners
    return _s3_filesystem(storage, inners[0].split("/", 1)[0]), inners


def _inner_path(path: str) -> str:
    if is_s3(path):
        inner = path[len(S3_PREFIX):].strip("/")
        if not inner:
            raise ValueError(f"{path!r}: an S3 path needs a bucket, like s3://bucket/prefix")
        return inner
    if "://" in path:
        raise ValueError(f"{path!r}: only local paths and s3:// URIs are supported")
    return os.path.abspath(path)


def _s3_filesystem(storage: StorageConfig, bucket: str) -> pafs.S3FileSystem:
    url = urlparse(_endpoint(storage.endpoint_url))
    region = storage.region or bucket_region(bucket, storage.endpoint_url)
    if storage.endpoint_url is None:
        return pafs.S3FileSystem(region=region)
    # Path-style addressing (pyarrow's default with an endpoint override) is what moto, MinIO
    # and other S3-compatible servers expect.
    return pafs.S3FileSystem(region=region, endpoint_override=url.netloc, scheme=url.scheme)


def _endpoint(endpoint_url: str | None) -> str:
    if endpoint_url is None:
        return "https://s3.amazonaws.com"
    url = urlparse(endpoint_url)
    if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
        raise ValueError(f"storage.endpoint_url must look like http(s)://host:port, "
                         f"got {endpoint_url!r}")
    return f"{url.scheme}://{url.netloc}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # S3 answers a region mismatch with a 301
        return None


@functools.lru_cache(maxsize=64)
def bucket_region(bucket: str, endpoint_url: str | None = None) -> str:
    """The region `bucket` lives in: S3 names it in the x-amz-bucket-region header of any
    answer to a HEAD of the bucket, even an unsigned or redirected one (the S3 client does
    not follow a bucket to its region by itself). Falls back to the AWS configuration's
    region (what boto would use), then us-east-1, when the endpoint does not say."""
    request = urllib.request.Request(f"{_endpoint(endpoint_url)}/{bucket}", method="HEAD")
    try:
        headers = urllib.request.build_opener(_NoRedirect).open(request, timeout=10).headers
    except urllib.error.HTTPError as e:  # 301, 403: the header is there all the same
        headers = e.headers
    except OSError:
        headers = {}
    region = headers.get("x-amz-bucket-region")
    if region:
        return region
    return (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            or _configured_region() or "us-east-1")


def _configured_region() -> str | None:
    """The region of the AWS configuration file's profile (AWS_PROFILE or default)."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.environ.get("AWS_CONFIG_FILE", os.path.expanduser("~/.aws/config")))
    profile = os.environ.get("AWS_PROFILE", "default")
    section = profile if profile == "default" else f"profile {profile}"
    return config.get(section, "region", fallback=None)


def to_uri(fs: pafs.FileSystem, inner: str) -> str:
    """Inverse of `resolve`: a path inside `fs` as the user would write it."""
    return S3_PREFIX + inner if isinstance(fs, pafs.S3FileSystem) else inner


def exists(path: str, storage: StorageConfig) -> bool:
    """A file, a directory or (on S3) a prefix holding at least one object."""
    fs, inner = resolve(path, storage)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def list_files(prefix: str, storage: StorageConfig) -> list[str]:
    """Every file under a directory or S3 prefix, recursively, as sorted paths relative to it
    ('train/shard-00000.parquet'); `join(prefix, name)` gives each one's full path.

    Raises FileNotFoundError when nothing exists there."""
    fs, inner = resolve(prefix, storage)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no directory or S3 prefix at {prefix!r}") from e
    return sorted(i.path[len(inner):].lstrip("/") for i in infos if i.type == pafs.FileType.File)


def makedirs(path: str, storage: StorageConfig) -> None:
    """mkdir -p locally; nothing on S3, where prefixes need no creating (and directory
    marker objects would only show up as stray keys)."""
    if not is_s3(path):
        os.makedirs(resolve(path, storage)[1], exist_ok=True)


def read_bytes(path: str, storage: StorageConfig) -> bytes:
    fs, inner = resolve(path, storage)
    with fs.open_input_stream(inner) as f:
        return f.read()


def write_bytes(path: str, data: bytes | pa.Buffer, storage: StorageConfig) -> None:
    """Write a whole file atomically: readers see the old file, no file, or all of `data`."""
    fs, inner = resolve(path, storage)
    if isinstance(fs, pafs.LocalFileSystem):
        _write_local_atomic(inner, data)
        return
    # One write of complete bytes, then close: see the module docstring for why nothing may
    # run between opening the stream and closing it.
    stream = fs.open_output_stream(inner)
    stream.write(data)
    stream.close()


def _write_local_atomic(path: str, data: bytes | pa.Buffer) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    write_local_with(path, write)


def write_local_with(path: str, write: Callable[[str], None]) -> None:
    """Atomic like `write_bytes`, for a writer that takes a file name (safetensors' save_file
    streams tensors to disk without a second copy in memory): `write(tmp)` in the target
    directory, then rename. `path` is a local path."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Hidden and suffixed, so that listings by name pattern never take it for the real file.
    tmp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def local_dir(path: str, storage: StorageConfig) -> Iterator[str]:
    """A local directory with the contents of `path`: `path` itself when local, else a
    temporary copy of the S3 prefix, deleted on exit. For libraries that only read local
    directories (`from_pretrained`, safetensors memory maps). Files are streamed to disk:
    a 12 GB checkpoint never sits in memory.

    Raises FileNotFoundError when nothing is there."""
    if not is_s3(path):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no directory at {path!r}")
        yield path
        return
    names = list_files(path, storage)
    if not names:
        raise FileNotFoundError(f"nothing under {path!r}")
    with tempfile.TemporaryDirectory(prefix="svimo-") as tmp:
        for name in names:
            _download(join(path, name), os.path.join(tmp, name), storage)
        yield tmp


@contextlib.contextmanager
def local_file(path: str, storage: StorageConfig) -> Iterator[str]:
    """A local file with the contents of `path`: itself when local, else a temporary copy
    streamed from S3, deleted on exit. FileNotFoundError when nothing is there."""
    if not is_s3(path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no file at {path!r}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="svimo-") as tmp:
        local = os.path.join(tmp, posixpath.basename(path))
        _download(path, local, storage)
        yield local


def _download(path: str, local: str, storage: StorageConfig) -> None:
    """Stream the object `path` to the local file `local` (pyarrow copies in chunks)."""
    fs, inner = resolve(path, storage)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        raise FileNotFoundError(f"no file at {path!r}")
    os.makedirs(os.path.dirname(local), exist_ok=True)
    pafs.copy_files(inner, local, source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())


def read_text(path: str, storage: StorageConfig) -> str:
    return read_bytes(path, storage).decode("utf-8")


def write_text(path: str, text: str, storage: StorageConfig) -> None:
    """Atomic, like `write_bytes` (manifests are rewritten while other jobs may read them)."""
    write_bytes(path, text.encode("utf-8"), storage)
