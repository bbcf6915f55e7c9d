"""Object storage over the ``minio`` SDK against any S3 endpoint (MinIO, SeaweedFS, AWS).

Uploads are whole or absent: an S3 PUT, and a multipart upload, becomes visible under its key
atomically, only once it has completed (a multipart upload's parts stay invisible until
CompleteMultipartUpload, and the SDK aborts the upload when a part fails). So this module always
uploads straight to the final key and never writes partial data there; a failed upload leaves the
previous object (or none) in place.

Failures become the project's error table: a store that cannot be reached after a few quick
retries -> ``Unavailable``; a missing bucket or key -> ``NotFound``; a bad key -> ``InvalidArgument``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

import certifi
import structlog
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from genmesh.errors import GenmeshError, Internal, InvalidArgument, NotFound, Unavailable
from storage.buckets import ALL_BUCKETS
from storage.keys import validate_key

log = structlog.get_logger(__name__)

T = TypeVar("T")

SHA256_METADATA = "sha256"  # stored as the x-amz-meta-sha256 header
PART_SIZE = 16 * 1024 * 1024  # larger bodies go up as a multipart upload
_CHUNK = 1024 * 1024
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # S3's limit for SigV4 presigned URLs

_ENDPOINT = re.compile(r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:]+\]:\d{1,5}")
_METADATA_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeoutException"}
)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "ResourceNotFound", "NoSuchObject"})
_CREDENTIAL_CODES = frozenset(
    {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)
_INVALID_CODES = frozenset({"InvalidBucketName", "InvalidObjectName", "KeyTooLongError", "InvalidArgument"})


@dataclass(frozen=True)
class StorageSettings:
    """Where the S3 store is and how to sign for it. ``endpoint`` is ``host:port`` (no scheme)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False
    region: str = "us-east-1"
    presign_expiry_seconds: int = 3600
    # Where callers reach the store, when that differs from where the servers do (compose, k8s):
    # presigned URLs are signed for this host:port. Empty: the same as ``endpoint``.
    public_endpoint: str = ""
    public_secure: bool | None = None  # None: as ``secure``

    def __post_init__(self) -> None:
        if not _ENDPOINT.fullmatch(self.endpoint):
            raise ValueError(f"S3 endpoint must be host:port without a scheme or path (got {self.endpoint!r})")
        if self.public_endpoint and not _ENDPOINT.fullmatch(self.public_endpoint):
            raise ValueError(
                f"S3 public endpoint must be host:port without a scheme or path (got {self.public_endpoint!r})"
            )
        if not self.access_key or not self.secret_key:
            raise ValueError("S3 access key and secret key must not be empty")
        if not 1 <= self.presign_expiry_seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"presign_expiry_seconds must be between 1 and {MAX_PRESIGN_SECONDS}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StorageSettings:
        """Read GENMESH_S3_ENDPOINT, _ACCESS_KEY, _SECRET_KEY (required), _SECURE, _REGION,
        _PRESIGN_EXPIRY_SECONDS (optional)."""

        def required(name: str) -> str:
            value = environ.get(name, "").strip()
            if not value:
                raise ValueError(f"environment variable {name} is required for object storage and is not set")
            return value

        secure_text = environ.get("GENMESH_S3_SECURE", "false").strip().lower()
        if secure_text not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ValueError(f"GENMESH_S3_SECURE must be true or false (got {secure_text!r})")
        expiry_text = environ.get("GENMESH_S3_PRESIGN_EXPIRY_SECONDS", "3600").strip() or "3600"
        if not expiry_text.isdigit():
            raise ValueError(f"GENMESH_S3_PRESIGN_EXPIRY_SECONDS must be a whole number (got {expiry_text!r})")
        return cls(
            endpoint=required("GENMESH_S3_ENDPOINT"),
            access_key=required("GENMESH_S3_ACCESS_KEY"),
            secret_key=required("GENMESH_S3_SECRET_KEY"),
            secure=secure_text in ("1", "true", "yes", "on"),
            region=environ.get("GENMESH_S3_REGION", "").strip() or "us-east-1",
            presign_expiry_seconds=int(expiry_text),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures. The defaults give up on a dead store in well under 5 s:
    3 attempts, sleeping 0.1 s then 0.2 s, each connect attempt bounded by ``connect_timeout_s``."""

    attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 1.0
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        return min(self.initial_backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


@dataclass(frozen=True)
class ObjectLocation:
    """Where an input object is (a request's ``ObjectRef``), validated by ``storage.keys``."""

    bucket: str
    key: str


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    url: str  # presigned GET, valid for StorageSettings.presign_expiry_seconds
    content_type: str
    size_bytes: int
    sha256: str  # hex; "" for an object stored without our metadata


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    size_bytes: int
    is_prefix: bool = False  # a "folder" (only when listing with recursive=False)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        return exc.code in _TRANSIENT_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):  # e.g. an HTML 502 from a proxy
        return (getattr(exc, "_code", 0) or 0) >= 500
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        return not isinstance(exc.reason, urllib3.exceptions.SSLError)
    if isinstance(exc, urllib3.exceptions.SSLError):
        return False
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def _summary(exc: BaseException) -> str:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _http_client(policy: RetryPolicy) -> urllib3.PoolManager:
    # Short timeouts and (almost) no urllib3 retries: ObjectStore retries itself, so a dead store
    # fails fast instead of sitting in the SDK's default 5 retries with 5-minute timeouts.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=policy.connect_timeout_s, read=policy.read_timeout_s),
        maxsize=10,
        retries=urllib3.Retry(
            total=1, connect=1, read=0, redirect=0, status=0, other=0, backoff_factor=0, raise_on_redirect=False
        ),
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    result = {}
    for name, value in (metadata or {}).items():
        if not _METADATA_KEY.fullmatch(name) or name.lower() == SHA256_METADATA:
            raise InvalidArgument(f"metadata key {name!r} is not allowed", field="metadata")
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise InvalidArgument(f"metadata value of {name!r} must be printable ASCII", field="metadata")
        result[name] = value
    return result


def _file_digest(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ObjectStore:
    """One S3 endpoint. Thread-safe (the SDK client and its connection pool are)."""

    def __init__(self, settings: StorageSettings, *, retry: RetryPolicy | None = None) -> None:
        self.settings = settings
        self._retry = retry or RetryPolicy()
        self._client = Minio(
            settings.endpoint,
            access_key=settings.access_key,
            secret_key=settings.secret_key,
            secure=settings.secure,
            region=settings.region,  # known region: the SDK never asks the store for bucket locations
            http_client=_http_client(self._retry),
        )
        # Presigning is local computation (the region is known), so a client for the public
        # endpoint never talks to it; it only puts the right host in the signed URL.
        self._signer = self._client
        if settings.public_endpoint:
            self._signer = Minio(
                settings.public_endpoint,
                access_key=settings.access_key,
                secret_key=settings.secret_key,
                secure=settings.secure if settings.public_secure is None else settings.public_secure,
                region=settings.region,
            )

    # -- buckets ---------------------------------------------------------------------------------

    def ensure_buckets(self, buckets: tuple[str, ...] = ALL_BUCKETS) -> list[str]:
        """Create the missing buckets; return the ones this call created. Safe when two processes race."""
        created = []
        for bucket in buckets:
            if self._call("bucket_exists", lambda b=bucket: self._client.bucket_exists(b), bucket=bucket):
                continue
            if self._call("make_bucket", lambda b=bucket: self._make_bucket(b), bucket=bucket):
                log.info("bucket_created", bucket=bucket, endpoint=self.settings.endpoint)
                created.append(bucket)
        return created

    def _make_bucket(self, bucket: str) -> bool:
        try:
            self._client.make_bucket(bucket)
        except S3Error as exc:
            # Another process (or our own earlier, timed-out attempt) created it first: that is success.
            if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return False
            raise
        return True

    # -- objects ---------------------------------------------------------------------------------

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        sha256 = hashlib.sha256(data).hexdigest()
        return self._put(bucket, key, lambda: io.BytesIO(data), len(data), content_type, sha256, metadata)

    def put_file(
        self,
        bucket: str,
        key: str,
        path: str | os.PathLike[str],
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Stream a file from disk. It is read twice: once for its sha256 (sent as metadata with the
        upload's headers, so it must be known first), once to upload. Memory stays at one part."""
        path = Path(path)
        sha256, size = _file_digest(path)
        return self._put(bucket, key, lambda: open(path, "rb"), size, content_type, sha256, metadata)

    def _put(
        self,
        bucket: str,
        key: str,
        open_body: Callable[[], BinaryIO],
        size: int,
        content_type: str,
        sha256: str,
        metadata: Mapping[str, str] | None,
    ) -> StoredObject:
        validate_key(key)
        if not content_type or not content_type.isascii():
            raise InvalidArgument("content_type must be a non-empty ASCII media type", field="content_type")
        headers = {**_check_metadata(metadata), SHA256_METADATA: sha256}

        def upload() -> None:
            # Straight to the final key: a single PUT or a multipart upload is atomic (module docstring).
            with open_body() as body:
                self._client.put_object(
                    bucket, key, body, size, content_type=content_type, metadata=headers, part_size=PART_SIZE
                )

        self._call("put_object", upload, bucket=bucket, key=key)
        log.info("object_stored", bucket=bucket, key=key, size_bytes=size, sha256=sha256)
        return StoredObject(bucket, key, self.presign_get(bucket, key), content_type, size, sha256)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        validate_key(key)

        def download() -> bytes:
            response = self._client.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("get_object", download, bucket=bucket, key=key)

    def get_input(self, location: ObjectLocation, field: str) -> bytes:
        """A request's input object (e.g. ``init_image_ref``); a missing one is ``NotFound`` naming ``field``."""
        try:
            return self.get_bytes(location.bucket, location.key)
        except NotFound:
            raise NotFound(f"{field}: no object {location.key!r} in bucket {location.bucket!r}", field=field) from None

    def download_file(self, bucket: str, key: str, path: str | os.PathLike[str]) -> Path:
        """Download to ``path`` whole or not at all (a temporary file beside it, renamed at the end)."""
        validate_key(key)
        path = Path(path)
        partial = path.with_name(f".{path.name}.part")

        def download() -> None:
            response = self._client.get_object(bucket, key)
            try:
                with open(partial, "wb") as f:
                    for chunk in response.stream(_CHUNK):
                        f.write(chunk)
            finally:
                response.close()
                response.release_conn()

        try:
            self._call("get_object", download, bucket=bucket, key=key)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def stat(self, bucket: str, key: str) -> StoredObject:
        validate_key(key)
        info = self._call("stat_object", lambda: self._client.stat_object(bucket, key), bucket=bucket, key=key)
        sha256 = (info.metadata or {}).get(f"x-amz-meta-{SHA256_METADATA}", "")
        content_type = info.content_type or "application/octet-stream"
        return StoredObject(bucket, key, self.presign_get(bucket, key), content_type, info.size or 0, sha256)

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.stat(bucket, key)
        except NotFound:
            return False
        return True

    def list(
        self,
        bucket: str,
        prefix: str = "",
        recursive: bool = True,
        start_after: str | None = None,
        page_keys: int | None = None,
    ) -> Iterator[ObjectEntry]:
        """Keys under ``prefix`` in key order, only those after ``start_after`` when given (the store
        skips to it: a listing that seeks costs what it returns, not what it skips). A transient
        failure mid-listing resumes after the last key. Keys come in pages of ``page_keys`` (default
        1000, S3's most) as they are consumed: a caller that needs 50 keys asks for pages of 50,
        since the SDK's parsing of a page costs about 0.3 ms per key."""
        if prefix:
            validate_key(prefix, "prefix")
        last_key: str | None = start_after
        attempt = 0
        while True:
            if page_keys is None:
                entries = self._client.list_objects(
                    bucket, prefix=prefix or None, recursive=recursive, start_after=last_key
                )
            else:  # the public list_objects always asks for 1000 keys (minio 7.2); its helper takes max_keys
                entries = self._client._list_objects(
                    bucket,
                    delimiter=None if recursive else "/",
                    encoding_type="url",
                    max_keys=page_keys,
                    prefix=prefix or None,
                    start_after=last_key,
                )
            try:
                for obj in entries:
                    name = obj.object_name or ""
                    if last_key is not None and name <= last_key:
                        continue
                    last_key = name
                    attempt = 0
                    yield ObjectEntry(name, obj.size or 0, bool(obj.is_dir))
                return
            except Exception as exc:
                attempt += 1
                self._retry_or_raise(exc, attempt, "list_objects", bucket, prefix or None)

    def delete(self, bucket: str, key: str) -> None:
        """Remove an object; removing a missing key is not an error (S3 semantics)."""
        validate_key(key)
        self._call("remove_object", lambda: self._client.remove_object(bucket, key), bucket=bucket, key=key)
        log.info("object_deleted", bucket=bucket, key=key)

    def presign_get(self, bucket: str, key: str) -> str:
        """A GET URL valid for ``presign_expiry_seconds``. Signed locally: no request to the store."""
        validate_key(key)
        expires = timedelta(seconds=self.settings.presign_expiry_seconds)
        return self._call(
            "presign_get", lambda: self._signer.presigned_get_object(bucket, key, expires=expires), bucket=bucket
        )

    # -- retries and error mapping ----------------------------------------------------------------

    def _call(self, op: str, fn: Callable[[], T], *, bucket: str, key: str | None = None) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as exc:
                self._retry_or_raise(exc, attempt, op, bucket, key)

    def _retry_or_raise(self, exc: Exception, attempt: int, op: str, bucket: str, key: str | None) -> None:
        """Sleep before the next attempt, or raise ``exc`` translated to the error table."""
        if _is_transient(exc) and attempt < self._retry.attempts:
            delay = self._retry.backoff(attempt)
            log.warning(
                "storage_retry", op=op, bucket=bucket, key=key, attempt=attempt, delay_s=delay, error=_summary(exc)
            )
            time.sleep(delay)
            return
        error = self._translate(exc, op, bucket, key)
        if error is None:
            raise exc
        raise error from exc

    def _translate(self, exc: Exception, op: str, bucket: str, key: str | None) -> GenmeshError | None:
        endpoint = self.settings.endpoint
        where = f"{bucket}/{key}" if key else bucket
        if isinstance(exc, GenmeshError):
            return exc
        if _is_transient(exc):
            return Unavailable(f"object storage at {endpoint} is unreachable: {_summary(exc)}")
        if isinstance(exc, S3Error):
            if exc.code in _MISSING_CODES:
                if exc.code == "NoSuchBucket" or not key:
                    return NotFound(f"bucket {bucket!r} does not exist in object storage")
                return NotFound(f"object {where!r} does not exist in object storage")
            if exc.code in _CREDENTIAL_CODES:
                return Unavailable(
                    f"object storage at {endpoint} rejected the credentials ({exc.code}) on {op} {where}: "
                    "check GENMESH_S3_ACCESS_KEY and GENMESH_S3_SECRET_KEY"
                )
            if exc.code in _INVALID_CODES:
                return InvalidArgument(f"object storage refused {where!r}: {exc.code}: {exc.message}", field="key")
            return Internal(f"object storage at {endpoint} failed {op} {where}: {exc.code}: {exc.message}")
        if isinstance(exc, InvalidResponseError | ServerError | urllib3.exceptions.HTTPError):
            return Unavailable(f"object storage at {endpoint} failed {op} {where}: {_summary(exc)}")
        if isinstance(exc, ValueError) and "bucket name" in str(exc):  # the SDK's own name checks
            return InvalidArgument(f"invalid bucket {bucket!r}: {exc}", field="bucket")
        return None
