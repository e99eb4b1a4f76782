"""Readers: records from local files, HTTP(S) and S3, streamed, with the bytes read hashed.

A source is read as an ordered list of *parts* (:func:`source_parts`): a local file, an S3
object, an HTTP file, or a paginated HTTP API as a whole (each page's URL comes from the page
before). Parts are what a parallel run shares out among its pods, and each part's bytes are
hashed on their own (:class:`SourceDigest`), so the input hash is the same however the parts
were shared out (:func:`combined_digest`).

Every reader yields ``(record, location)`` pairs and reports what it cannot parse to a
:class:`Quarantine` instead of raising: a malformed line costs that line, never the run. A source
that cannot be reached at all raises :class:`SourceError` (a version silently missing a source
would be worse than no version).

An image or audio folder's files are one record each: ``{"image": <the file's bytes>}`` or
``{"audio": ...}`` (the pipeline decodes it, and takes the class from the part's name:
:func:`folder_class`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import pyarrow.parquet as pq

from strata_workloads.data.config import DataSource, S3Source
from strata_workloads import s3 as s3access
from strata_workloads.s3 import S3Error

CHUNK_BYTES = 1 << 20
# The field a folder's records hold the file's bytes in, by format.
FOLDER_FIELDS = {"imagefolder": "image", "audiofolder": "audio"}
RAW_EXCERPT_CHARS = 1000


class SourceError(RuntimeError):
    """A source cannot be read at all (missing path, unreachable URL, HTTP error)."""


class Quarantine:
    """Malformed records, written as JSON lines and counted by reason."""

    def __init__(self, handle: IO[str]):
        self.handle = handle
        self.count = 0
        self.reasons: dict[str, int] = {}
        self.part: int | None = None  # a shard's lines carry their part, to be merged in input order

    def add(self, source: str, location: str, reason: str, raw: Any) -> None:
        self.count += 1
        kind = reason.split(":", 1)[0]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        excerpt = raw if isinstance(raw, str) else repr(raw)
        line = {"source": source, "location": location, "reason": reason, "raw": excerpt[:RAW_EXCERPT_CHARS]}
        if self.part is not None:
            line["part"] = self.part
        self.handle.write(json.dumps(line) + "\n")


class SourceDigest:
    """sha256 of the bytes one part delivered, in order (pages of an API marked apart by
    ``start_part``), with the bytes and records counted; see :func:`combined_digest`."""

    def __init__(self, source: str):
        self.source = source
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.records = 0

    def start_part(self, name: str) -> None:
        self.digest.update(f"\0part {name}\0".encode())

    def update(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.bytes += len(chunk)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def combined_digest(parts: Iterable[tuple[str, str]]) -> str:
    """A source's (or the whole input's) sha256 from its parts' ``(name, sha256)``, in order."""
    digest = hashlib.sha256()
    for name, part_digest in parts:
        digest.update(f"{name}\0{part_digest}\n".encode())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """A local file's part digest, computed from its bytes alone (the read-free unchanged check)."""
    digest = SourceDigest(str(path))
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _chunks(stream: IO[bytes], digest: SourceDigest) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        digest.update(chunk)
        yield chunk


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        rest += chunk
        *complete, rest = rest.split(b"\n")
        yield from complete
    if rest:
        yield rest


def local_files(path: str) -> list[Path]:
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise SourceError(f"sources: path {path} does not exist")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise SourceError(f"sources: path {path} holds no files")
    return files


def _headers(headers_path: str | None) -> dict[str, str]:
    """Request headers from a mounted Secret: one file per header, named for it."""
    if headers_path is None:
        return {}
    root = Path(headers_path)
    if not root.is_dir():
        raise SourceError(f"sources: http.headersPath {headers_path} is not a directory")
    # A mounted Secret also holds ..data and timestamped directories: only its plain keys count.
    return {path.name: path.read_text().strip() for path in sorted(root.iterdir())
            if not path.name.startswith(".") and path.is_file()}


def _open_url(url: str, headers: dict[str, str] | None = None) -> IO[bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        return urllib.request.urlopen(request, timeout=60)  # noqa: S310 - http(s) only, checked by the config
    except urllib.error.HTTPError as error:
        raise SourceError(f"sources: {url} answered HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise SourceError(f"sources: {url} cannot be reached ({getattr(error, 'reason', error)})") from None


def _decoded_lines(lines: Iterable[bytes], name: str, quarantine: Quarantine) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(lines, start=1):
        try:
            yield number, line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as error:
            quarantine.add(name, f"line {number}", f"encoding: not UTF-8 ({error.reason})", line.decode("utf-8", "replace"))


def _read_jsonl(chunks, name, text_field, quarantine) -> Iterator[tuple[dict, str]]:
    for number, line in _decoded_lines(_lines(chunks), name, quarantine):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            quarantine.add(name, f"line {number}", f"json: {error.msg} at column {error.colno}", line)
            continue
        if not isinstance(record, dict):
            quarantine.add(name, f"line {number}", f"json: a record must be an object, got {type(record).__name__}", line)
            continue
        yield record, f"line {number}"


def _read_text(chunks, name, text_field, quarantine) -> Iterator[tuple[dict, str]]:
    # One record per non-empty line.
    for number, line in _decoded_lines(_lines(chunks), name, quarantine):
        if line.strip():
            yield {text_field: line}, f"line {number}"



def _read_csv(chunks, name, text_field, quarantine) -> Iterator[tuple[dict, str]]:
    lines = (line + "\n" for _, line in _decoded_lines(_lines(chunks), name, quarantine))
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        quarantine.add(name, "line 1", f"csv: bad header ({error})", "")
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            quarantine.add(name, f"line {reader.line_num}", f"csv: {error}", "")
            continue
        if not row:
            continue
        if len(row) != len(header):
            quarantine.add(name, f"line {reader.line_num}", f"csv: {len(row)} fields, header has {len(header)}", ",".join(row))
            continue
        # An empty cell is a missing value, as in most CSV exports.
        yield {key: (value if value != "" else None) for key, value in zip(header, row)}, f"line {reader.line_num}"


def _read_parquet_file(path: str, name: str, quarantine: Quarantine, batch_size: int) -> Iterator[tuple[dict, str]]:
    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        quarantine.add(name, "file", f"parquet: unreadable ({error})", "")
        return
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for record in batch.to_pylist():
            row += 1
            yield record, f"row {row}"


_LINE_READERS: dict[str, Callable[..., Iterator[tuple[dict, str]]]] = {
    "jsonl": _read_jsonl,
    "text": _read_text,
    "csv": _read_csv,
}


def _read_json_document(data: bytes, name: str, records_field: str | None, quarantine: Quarantine) -> tuple[list, Any]:
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        quarantine.add(name, "document", f"json: not a JSON document ({error})", data[:RAW_EXCERPT_CHARS].decode("utf-8", "replace"))
        return [], None
    records = document.get(records_field) if (records_field and isinstance(document, dict)) else document
    if not isinstance(records, list):
        quarantine.add(name, "document", f"json: expected a list of records{f' in {records_field!r}' if records_field else ''}",
                       data[:RAW_EXCERPT_CHARS].decode("utf-8", "replace"))
        return [], document
    return records, document


def _objects(records: list, name: str, where: str, quarantine: Quarantine) -> Iterator[tuple[dict, str]]:
    for index, record in enumerate(records):
        if isinstance(record, dict):
            yield record, f"{where} record {index}"
        else:
            quarantine.add(name, f"{where} record {index}", f"json: a record must be an object, got {type(record).__name__}", record)


class Part:
    """One share of a source's input: its name (in the digest and lineage) and how to read it."""

    def __init__(self, source: DataSource, name: str, reader: Callable[..., Iterator[tuple[dict, str]]],
                 local_path: Path | None = None):
        self.source = source
        self.name = name
        self.local_path = local_path  # a local file: hashable without reading records
        self._reader = reader

    def read(self, text_field: str, quarantine: Quarantine, digest: SourceDigest,
             batch_size: int = 8192) -> Iterator[tuple[dict, str]]:
        """The part's records, streamed; ``digest`` sees every byte read."""
        return self._reader(text_field, quarantine, digest, batch_size)


def source_parts(source: DataSource) -> list[Part]:
    """A source's parts in their fixed order (files and objects by name). Listing reads no data."""
    if source.path is not None:
        single = Path(source.path).is_file()
        return [Part(source, path.name if single else str(path.relative_to(source.path)),
                     lambda text_field, quarantine, digest, batch_size, p=path: _read_stream(
                         source, str(p), lambda: p.open("rb"), text_field, quarantine, digest, batch_size, local_path=p),
                     local_path=path)
                for path in local_files(source.path)]
    if source.s3 is not None:
        filesystem, objects = s3_objects(source.s3)
        bucket_prefix = source.s3.uri[len("s3://"):]
        return [Part(source, key[len(bucket_prefix):].lstrip("/") or key.rsplit("/", 1)[-1],
                     lambda text_field, quarantine, digest, batch_size, k=key: _read_stream(
                         source, f"s3://{k}", lambda: _s3_open(filesystem, k), text_field, quarantine, digest, batch_size))
                for key in objects]
    assert source.http is not None
    http = source.http
    if source.format == "json":
        return [Part(source, "pages" if http.pagination else http.url,
                     lambda text_field, quarantine, digest, batch_size: _read_json_pages(
                         source, quarantine, digest, _headers(http.headers_path)))]
    return [Part(source, http.url, lambda text_field, quarantine, digest, batch_size: _read_stream(
        source, http.url, lambda: _open_url(http.url, _headers(http.headers_path)), text_field, quarantine, digest,
        batch_size))]


def folder_class(part_name: str) -> str | None:
    """An image folder file's class: the first directory under the source's root, if any."""
    directory, _, rest = part_name.partition("/")
    return directory if rest else None


def s3_objects(s3: S3Source) -> tuple[Any, list[str]]:
    """The S3 filesystem and the objects under the source's prefix ("bucket/key"), in key order."""
    from pyarrow import fs

    try:
        filesystem = s3access.filesystem(s3.endpoint, s3.region, s3.credentials_path)
        path = s3access.bucket_path(s3.uri)
    except S3Error as error:
        raise SourceError(f"sources: {s3.uri}: {error}") from None
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return filesystem, [path]
        if info.type == fs.FileType.NotFound:
            raise SourceError(f"sources: {s3.uri} does not exist")
        listing = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    except OSError as error:
        raise SourceError(f"sources: {s3.uri} cannot be listed ({error})") from None
    objects = sorted(item.path for item in listing if item.type == fs.FileType.File
                     and not any(part.startswith(".") for part in item.path[len(path):].split("/")))
    if not objects:
        raise SourceError(f"sources: {s3.uri} holds no objects")
    return filesystem, objects


def _s3_open(filesystem: Any, key: str) -> IO[bytes]:
    try:
        return filesystem.open_input_stream(key)
    except OSError as error:
        raise SourceError(f"sources: s3://{key} cannot be read ({error})") from None


def _read_stream(source, name, opener, text_field, quarantine, digest, batch_size,
                 local_path: Path | None = None) -> Iterator[tuple[dict, str]]:
    with opener() as stream:
        if source.format in FOLDER_FIELDS:
            digest.records += 1
            yield {FOLDER_FIELDS[source.format]: b"".join(_chunks(stream, digest))}, name
        elif source.format in _LINE_READERS:
            for record, location in _LINE_READERS[source.format](_chunks(stream, digest), name, text_field, quarantine):
                digest.records += 1
                yield record, f"{name} {location}"
        elif source.format == "json":
            data = b"".join(_chunks(stream, digest))  # one JSON document: held whole by nature
            records, _ = _read_json_document(data, name, source.http.records_field if source.http else None, quarantine)
            for record, location in _objects(records, name, "document", quarantine):
                digest.records += 1
                yield record, f"{name} {location}"
        else:  # parquet needs random access: a local copy for remote files
            if local_path is not None:
                for _ in _chunks(stream, digest):
                    pass
                for record, location in _read_parquet_file(str(local_path), name, quarantine, batch_size):
                    digest.records += 1
                    yield record, f"{name} {location}"
            else:
                with tempfile.NamedTemporaryFile(suffix=".parquet") as copy:
                    for chunk in _chunks(stream, digest):
                        copy.write(chunk)
                    copy.flush()
                    for record, location in _read_parquet_file(copy.name, name, quarantine, batch_size):
                        digest.records += 1
                        yield record, f"{name} {location}"


def _read_json_pages(source: DataSource, quarantine: Quarantine, digest: SourceDigest,
                     headers: dict[str, str]) -> Iterator[tuple[dict, str]]:
    http = source.http
    assert http is not None
    url = http.url
    pages = http.pagination.max_pages if http.pagination else 1
    for page in range(1, pages + 1):
        digest.start_part(f"page {page}")
        with _open_url(url, headers) as response:
            data = b"".join(_chunks(response, digest))
        records, document = _read_json_document(data, url, http.records_field, quarantine)
        for record, location in _objects(records, url, f"page {page}", quarantine):
            digest.records += 1
            yield record, f"{url} {location}"
        if http.pagination is None or not isinstance(document, dict):
            return
        cursor = document.get(http.pagination.cursor_field)
        if cursor in (None, ""):
            return
        parts = urllib.parse.urlsplit(http.url)
        query = urllib.parse.parse_qsl(parts.query) + [(http.pagination.cursor_param, str(cursor))]
        url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
