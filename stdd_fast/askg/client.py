"""A client of any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp, Ollama, hosted), over httpx.

Production behaviour, bounded everywhere: each request has a timeout (connect, each read, and the
whole response: a server dripping its headers a byte at a time is cut off when the time is up) and a
size limit on the body as decoded (a compressed answer that expands without end is refused once
past it, never decompressed whole); 429, 408, 5xx, timeouts and connection errors are retried with
exponential backoff and jitter, honouring ``Retry-After``; other 4xx answers are final. One client
is shared by the generator's threads (httpx's client is thread-safe); each request has its own
connection, so its deadline can close it.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import random
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence

from stdd_fast.askg.schema import AnswerError
from stdd_fast.checks import check_int, check_number
from stdd_fast.deps import available, require
from stdd_fast.errors import ConfigError, StddError

MAX_RESPONSE_BYTES = 4 * 2**20  # a body larger than this once decoded is not a chat completion
MAX_TIMEOUT = 24 * 3600.0  # seconds; more is no deadline at all (and past what sockets accept)
RETRIED_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# answers that will be the same for every class: the generator stops asking after one
FATAL_STATUS = frozenset({401, 403, 404})


class ChatError(StddError):
    """The endpoint did not answer (after the retries). ``fatal``: every other request would fail the same way."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Deadline:
    """The whole-request deadline httpx lacks (its timeouts are per read): when the time is up, the
    request's socket is shut down, which ends any read under way at once."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict) -> None:
        """httpcore's trace hook: learns the socket when the connection is made."""
        if event == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._socket = sock
                if self.expired:
                    self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _accepted_encodings() -> dict[str, Callable[[], Callable[[bytes, int], bytes]]]:
    """Content-Encodings this client decodes, each a factory of ``decode(chunk, most) -> at most most bytes``."""

    def zlib_decoder() -> Callable[[bytes, int], bytes]:
        d = zlib.decompressobj(32 + zlib.MAX_WBITS)  # a zlib or gzip stream
        return lambda chunk, most: d.decompress(chunk, most)

    def brotli_decoder() -> Callable[[bytes, int], bytes]:
        import brotli

        d = brotli.Decompressor()

        def decode(chunk: bytes, most: int) -> bytes:
            try:
                return d.process(chunk, output_buffer_limit=most)
            except brotli.error as e:
                raise ValueError(str(e)) from None

        return decode

    decoders = {"identity": lambda: lambda chunk, most: chunk, "gzip": zlib_decoder, "deflate": zlib_decoder}
    if available("brotli"):
        decoders["br"] = brotli_decoder
    return decoders


class ChatClient:
    """Chat completions from ``endpoint`` (the base URL, e.g. ``http://127.0.0.1:8080/v1``) with ``model``.

    api_key: sent as a bearer token (None: no header, for local servers). timeout: seconds a
    request may take in all (and each phase of it). retries: extra attempts per request after a
    429 / 408 / 5xx, a timeout or a connection error; the wait doubles from ``backoff`` seconds up
    to ``max_backoff`` (a ``Retry-After`` header sets it, up to ``max_backoff``). ``requests``
    counts the HTTP requests sent. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ) -> None:
        base = str(endpoint).strip().rstrip("/").removesuffix("/chat/completions")
        if not base.startswith(("http://", "https://")):
            raise ConfigError(f"endpoint={endpoint!r}: give the base URL of the API, e.g. http://127.0.0.1:8080/v1")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model={model!r}: name the model the endpoint serves (e.g. the one it lists at /models)")
        for name, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            check_number(name, value, unit="seconds", high=MAX_TIMEOUT)
        check_int("retries", retries, low=0)
        httpx = require("httpx")
        self.endpoint, self.model = base, model.strip()
        self.timeout, self.retries, self.backoff, self.max_backoff = float(timeout), retries, backoff, max_backoff
        self._decoders = _accepted_encodings()
        headers = {"Accept-Encoding": ", ".join(k for k in self._decoders if k != "identity")}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._httpx = httpx
        # no kept-alive connections: each request opens its own, whose socket its deadline can shut
        limits = httpx.Limits(max_keepalive_connections=0)
        self._http = httpx.Client(timeout=httpx.Timeout(self.timeout), headers=headers, limits=limits)
        self._count = 0
        self._count_lock = threading.Lock()

    @property
    def requests(self) -> int:
        return self._count

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"ChatClient({self.endpoint!r}, model={self.model!r}, timeout={self.timeout:g}, retries={self.retries})"

    def complete(
        self,
        messages: Sequence[dict],
        *,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        stop: threading.Event | None = None,
    ) -> str | None:
        """The first choice's message content (None or "" when the model said nothing); ChatError if none came.

        ``stop``: set it to end the retries early (the wait between attempts returns at once).
        """
        body = {"model": self.model, "messages": list(messages), "temperature": temperature, "max_tokens": max_tokens}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt and stop is not None and stop.is_set():
                break
            status, data, wait, problem, unreachable = self._attempt(body)
            if status == 200:
                return self._content(data)
            if status and status not in RETRIED_STATUS:
                raise ChatError(f"{self.endpoint}: {problem}", fatal=status in FATAL_STATUS)
            if attempt == self.retries:
                raise ChatError(f"{self.endpoint}: {problem} ({attempt + 1} attempts)", fatal=unreachable)
            delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
            delay = min(self.max_backoff, wait) if wait is not None else delay
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
        raise ChatError(f"{self.endpoint}: stopped before an answer came ({problem or 'not asked'})")

    def _attempt(self, body: dict) -> tuple[int, object, float | None, str, bool]:
        """One request: (status or 0, parsed JSON, Retry-After seconds, what went wrong, connection refused)."""
        httpx = self._httpx
        with self._count_lock:
            self._count += 1
        deadline = _Deadline(self.timeout)
        late = f"no answer within {self.timeout:g} s (--timeout)"
        try:
            url = f"{self.endpoint}/chat/completions"
            with self._http.stream("POST", url, json=body, extensions={"trace": deadline.trace}) as response:
                raw, problem = self._body(response)
                if problem:
                    return 0, None, None, late if deadline.expired else problem, False
                wait = _retry_after(response.headers.get("retry-after"))
                status = response.status_code
        except httpx.TimeoutException:
            return 0, None, None, f"no answer within {self.timeout:g} s (--timeout)", False
        except httpx.ConnectError as e:
            return 0, None, None, f"cannot connect ({e}); is the server running?", True
        except httpx.TransportError as e:  # the connection dropped mid-answer, a protocol error, the deadline
            said = late if deadline.expired else f"the connection failed ({type(e).__name__}: {e})"
            return 0, None, None, said, False
        finally:
            deadline.cancel()
        if status != 200:
            said = " ".join(raw.decode("utf-8", "replace").split())[:200] or "(no body)"
            return status, None, wait, f"HTTP {status}: {said}", False
        try:
            return 200, json.loads(raw), None, "", False
        except (ValueError, RecursionError):
            return 0, None, None, "HTTP 200 but the body is not JSON", False

    def _body(self, response) -> tuple[bytes, str]:
        """The body decoded, at most MAX_RESPONSE_BYTES of it: (bytes, "") or (b"", what was wrong)."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower() or "identity"
        if encoding not in self._decoders:
            return b"", f"the response is encoded as {encoding!r}, which was not asked for"
        decode, chunks, size = self._decoders[encoding](), [], 0
        try:
            for chunk in response.iter_raw():
                room = MAX_RESPONSE_BYTES - size
                piece = decode(chunk, room + 1)  # one byte past the room tells that the body is too big
                size += len(piece)
                if size > MAX_RESPONSE_BYTES:
                    return b"", f"the response is over {MAX_RESPONSE_BYTES // 2**20} MiB once decoded ({encoding})"
                chunks.append(piece)
        except (zlib.error, ValueError) as e:
            return b"", f"the response's {encoding} body cannot be decoded ({type(e).__name__})"
        return b"".join(chunks), ""

    def _content(self, data: object) -> str | None:
        try:
            content = data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise AnswerError(f"the response is not a chat completion ({str(data)[:120]!r})") from None
        if content is not None and not isinstance(content, str):
            raise AnswerError(f"the message content is a {type(content).__name__}, not text")
        return content
