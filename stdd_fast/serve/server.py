"""The real Triton Inference Server binary on a model repository, from start to a graceful stop.

Which binary (:func:`find_tritonserver`): ``--tritonserver PATH``; else ``tritonserver`` on PATH
(NVIDIA's container, its backends in ``/opt/tritonserver/backends``); else the one the
``nvidia-pytriton`` wheel bundles, which has the Python backend only. For that one the server gets
what pytriton gives it: the wheel's libraries on ``LD_LIBRARY_PATH`` and a backend folder whose
``python/`` holds the backend with the stub built for this interpreter's Python version. Whichever
it is, :func:`check_numpy_support` reads its version before anything starts and refuses a server
known to fail every request beside the numpy installed here (a Python backend built for numpy 1).

:class:`TritonServer` runs it on the given address and ports (loopback by default), waits for
readiness with a bounded loop, and stops
it with SIGINT (Triton finishes the requests in flight) and, past the exit timeout, SIGKILL of
its process group. The server dies with the process that started it (``PR_SET_PDEATHSIG``). When it
cannot start, :class:`ServerError` says why in one line read from its log: a port taken, a model
that failed to load, a missing library.

Clients cannot change what is served. Triton's model-repository API loads a model from a config and
files sent *in the request* (a ``model.py`` the Python backend imports: code execution) and unloads
models, and a plain ``text/plain`` POST reaches it without a CORS preflight, so any web page the user
opens could send one. The server therefore runs with ``--model-control-mode=none``: it loads the
repository's models at start (the repository must hold exactly the models served) and refuses every
load and unload. The APIs that change the server's state besides (shared-memory registration, trace
and log settings) need a header key no client is given. An operator who wants model control passes
``admin_key`` (``stdd serve --allow-model-control`` with ``STDD_SERVE_ADMIN_KEY``): then explicit
model control, and every one of those APIs needs the header ``stdd-admin-key: <key>``, which a
browser cannot add to a cross-site request without a preflight Triton does not grant.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stdd_fast.checks import check_int
from stdd_fast.deps import require
from stdd_fast.errors import BackendUnavailableError, ConfigError, StddError

DEFAULT_BACKEND_DIR = Path("/opt/tritonserver/backends")  # NVIDIA's container
ADMIN_HEADER = "stdd-admin-key"
ADMIN_KEY_MIN = 16  # characters of an operator's key
# what changes the server's state (not its answers): behind the admin key; model-repository too with model control
_STATE_APIS = ("shared-memory", "trace", "logging")
_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


class ServerError(StddError):
    """The Triton server could not start, or stopped by itself (the reason comes from its log)."""

    exit_code = 1


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens: one address, the HTTP, gRPC and metrics (Prometheus) ports."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host={self.host!r}: name an address to listen on, e.g. 127.0.0.1")
        ports = self.ports()
        for what, port, flag in ports:
            check_int(f"{what} port", port, high=65535, hint=flag)
        if len({p for _, p, _ in ports}) != len(ports):
            raise ConfigError(f"the HTTP, gRPC and metrics ports must differ; got {[p for _, p, _ in ports]}")

    def ports(self) -> list[tuple[str, int, str]]:
        """(what, port, command-line flag) of each port."""
        return [
            ("HTTP", self.http_port, "--http-port"),
            ("gRPC", self.grpc_port, "--grpc-port"),
            ("metrics", self.metrics_port, "--metrics-port"),
        ]

    @property
    def _client_host(self) -> str:
        """The address a local client connects to (a wildcard listen address is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port, as ``tritonclient.grpc`` takes it."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    def check_free(self) -> None:
        """ConfigError naming the first port something else listens on (checked before the server starts)."""
        for what, port, flag in self.ports():
            try:
                family, kind, proto, _, address = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM)[0]
            except socket.gaierror as e:
                raise ConfigError(f"--host {self.host}: not an address this machine can listen on ({e})") from None
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
                try:
                    probe.bind(address)
                except OSError as e:
                    raise ConfigError(
                        f"{what} port {port} on {self.host} is taken ({e.strerror}): stop what listens there or "
                        f"pass {flag} with a free port"
                    ) from None


@dataclass(frozen=True)
class TritonBinary:
    """A ``tritonserver`` executable and where its backends are.

    backend_dir: passed as ``--backend-directory`` (None: the binary's default). For the bundled
    binary: ``library_dir`` goes on LD_LIBRARY_PATH and the server's backend folder is made from
    ``python_backend`` (the backend) and ``python_stub`` (the stub for this Python version).
    """

    path: Path
    backend_dir: Path | None = None
    bundled: bool = False
    library_dir: Path | None = None
    python_backend: Path | None = None
    python_stub: Path | None = None

    def backends(self) -> list[str]:
        """The backends this server can load models with (the folders holding ``libtriton_<name>.so``)."""
        folder = self.python_backend.parent if self.bundled else self.backend_dir or DEFAULT_BACKEND_DIR
        if not folder.is_dir():
            return []
        return sorted(d.name for d in folder.iterdir() if (d / f"libtriton_{d.name}.so").is_file())

    def environment(self) -> dict[str, str]:
        """This process's environment, with the bundled binary's libraries on LD_LIBRARY_PATH."""
        env = dict(os.environ)
        if self.library_dir is not None:
            paths = (env.get("LD_LIBRARY_PATH"), str(self.library_dir))
            env["LD_LIBRARY_PATH"] = ":".join(p for p in paths if p)
        return env

    def version(self, timeout_s: float = 60.0) -> str | None:
        """The version the binary reports (the ``server_version`` row of the table it prints at start), or None.

        Read from a run on a repository that does not exist: Triton prints its table and exits at once.
        """
        with tempfile.TemporaryDirectory(prefix="stdd-triton-version-") as folder:
            command = [str(self.path), f"--model-repository={Path(folder) / 'absent'}", "--allow-http=false",
                       "--allow-grpc=false", "--allow-metrics=false"]  # fmt: skip
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, errors="replace", env=self.environment(),
                    timeout=timeout_s, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired):
                return None
        found = _VERSION_ROW.search(done.stdout + done.stderr)
        return found.group(1) if found else None


_VERSION_ROW = re.compile(r"^\|\s*server_version\s*\|\s*(\S+)\s*\|", re.M)
# The Python-backend stub of Triton releases before 2.53 was built with pybind11 < 2.12, which reads numpy 2
# arrays wrongly: with numpy 2 beside it every request with a BYTES input (every video) fails with "unpack_from
# requires a buffer of at least ... bytes" in deserialize_bytes_tensor (python_backend PR #384, October 2024;
# Triton 2.51 and 2.52 list numpy 2 as a known issue). nvidia-pytriton bundles such a server (0.5.7: 2.45, 0.7: 2.51).
NUMPY2_FROM = (2, 53)


def check_numpy_support(binary: TritonBinary, numpy_version: str | None = None) -> str | None:
    """The binary's version (None: it did not say); BackendUnavailableError when it is known not to work with the
    numpy installed here (``numpy_version``: that numpy's version, default the one this interpreter imports), which
    the model's stub imports from this environment."""
    version = binary.version()
    if numpy_version is None:
        import numpy

        numpy_version = numpy.__version__
    release = tuple(int(p) for p in re.findall(r"\d+", version or "")[:2])
    if len(release) == 2 and release < NUMPY2_FROM and int(numpy_version.split(".")[0]) >= 2:
        raise BackendUnavailableError(
            f"tritonserver {version} ({binary.path}) cannot serve beside numpy {numpy_version}: its Python backend "
            f"was built for numpy 1, so every request would fail; install numpy<2 (pip install 'numpy<2'; from a "
            f"checkout pip install -e '.[serve]' holds it there) or run a tritonserver >= "
            f"{'.'.join(map(str, NUMPY2_FROM))} (--tritonserver)"
        )
    return version


def _binary_at(path: Path, what: str) -> TritonBinary:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BackendUnavailableError(
            f"{what} {path}: no executable tritonserver there; pass the binary's path (NVIDIA's container: "
            "/opt/tritonserver/bin/tritonserver) or leave --tritonserver out to use the one nvidia-pytriton bundles"
        )
    beside = path.resolve().parent.parent / "backends"
    return TritonBinary(path, beside if beside.is_dir() else None)


def find_tritonserver(path: str | Path | None = None) -> TritonBinary:
    """``path``; else ``tritonserver`` on PATH; else the binary of the ``nvidia-pytriton`` wheel."""
    if path is not None:
        return _binary_at(Path(path).expanduser(), "--tritonserver")
    on_path = shutil.which("tritonserver")
    if on_path:
        return _binary_at(Path(on_path), "tritonserver on PATH:")
    pytriton = require("pytriton")
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    stubs = root / "python_backend_stubs"
    stub = stubs / _PYTHON / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(d.name for d in stubs.iterdir()) if stubs.is_dir() else []
        raise BackendUnavailableError(
            f"the tritonserver nvidia-pytriton bundles has Python-backend stubs for Python {have}, not {_PYTHON}: "
            "run stdd serve from one of those, or pass --tritonserver"
        )
    wheel_libs = root.parent.parent / "nvidia_pytriton.libs"  # an editable pytriton keeps them in external_libs
    libs = wheel_libs if wheel_libs.is_dir() else root / "external_libs"
    return TritonBinary(root / "bin" / "tritonserver", None, True, libs, root / "backends" / "python", stub)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux), so no server outlives stdd serve."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_LOG_PREFIX = re.compile(r'^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "?')  # severity, time, thread, source
_REASONS = (  # what a log line says, most telling first
    (re.compile(r"failed to load '([^']+)' version \d+: (.*)"), "model '{0}' failed to load: {1}"),
    (re.compile(r".*(?:already in use|Address in use|failed to bind|Failed to start).*", re.I), "{0}"),
    (re.compile(r".*error while loading shared libraries.*"), "{0} (the stub needs the Python shared library)"),
    (re.compile(r"error: creating server: (.*)"), "{0}"),
)


class TritonServer:
    """One ``tritonserver`` process serving ``models`` of ``repository`` on ``endpoints``.

    workdir: where its log and (bundled binary) backend folder go (default: a new temporary
    folder). exit_timeout_s: how long a stop waits for requests in flight. Use as a context manager,
    or call :meth:`start`, :meth:`wait_ready` and :meth:`stop`.
    """

    def __init__(
        self,
        binary: TritonBinary,
        repository: str | Path,
        endpoints: Endpoints | None = None,
        models: Sequence[str] = ("stdd",),
        workdir: str | Path | None = None,
        exit_timeout_s: int = 10,
        admin_key: str | None = None,
    ) -> None:
        if admin_key is not None and (not isinstance(admin_key, str) or len(admin_key) < ADMIN_KEY_MIN):
            raise ConfigError(
                f"the admin key must be a string of at least {ADMIN_KEY_MIN} characters; got {len(str(admin_key))}: "
                "e.g. STDD_SERVE_ADMIN_KEY=$(python -c 'import secrets; print(secrets.token_hex(16))')"
            )
        if admin_key is not None and not all(c.isalnum() or c in "-_." for c in admin_key):
            raise ConfigError("the admin key may hold letters, digits, '-', '_' and '.' only (it travels in a header)")
        self.model_control = admin_key is not None
        self._admin_key = admin_key or secrets.token_hex(32)  # without model control: a key no one is given
        self.binary, self.repository = binary, Path(repository).resolve()
        self.endpoints = endpoints or Endpoints()
        self.models = tuple(models)
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="stdd-triton-"))
        self.log_path = self.workdir / "tritonserver.log"
        self.exit_timeout_s = exit_timeout_s
        self.process: subprocess.Popen | None = None
        # Python-backend shared memory of this server alone (two servers must not share it); removed at stop
        self.shm_prefix = f"stdd{os.getpid()}x{secrets.token_hex(4)}_"

    def command(self) -> list[str]:
        e = self.endpoints
        cmd = [
            str(self.binary.path),
            f"--model-repository={self.repository}",
            *(f"--{kind}-address={e.host}" for kind in ("http", "grpc", "metrics")),
            f"--http-port={e.http_port}",
            f"--grpc-port={e.grpc_port}",
            f"--metrics-port={e.metrics_port}",
            *(
                ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
                if self.model_control
                else ["--model-control-mode=none"]  # loads the repository at start; no load / unload API
            ),
            f"--http-restricted-api={self._restricted_apis()}",
            f"--grpc-restricted-protocol={self._restricted_apis()}",
            "--disable-auto-complete-config",  # the configs are complete; skips a stub start per model
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        backend_dir = self.workdir / "backends" if self.binary.bundled else self.binary.backend_dir
        if backend_dir is not None:
            cmd.append(f"--backend-directory={backend_dir}")
        return cmd

    def _restricted_apis(self) -> str:
        apis = (*_STATE_APIS, "model-repository") if self.model_control else _STATE_APIS
        return f"{','.join(apis)}:{ADMIN_HEADER}={self._admin_key}"

    def check_repository(self) -> None:
        """ConfigError unless the repository holds exactly the models served (without model control Triton
        loads every model it finds there)."""
        if self.model_control:
            return
        present = {d.name for d in self.repository.iterdir() if d.is_dir()} if self.repository.is_dir() else set()
        foreign, missing = sorted(present - set(self.models)), sorted(set(self.models) - present)
        if missing:
            raise ConfigError(f"the model repository {self.repository} has no model {missing}: write it first")
        if foreign:
            raise ConfigError(
                f"the model repository {self.repository} also holds {foreign}: the server loads every model of its "
                "repository, so it must hold only the models served; remove them or use an empty folder"
            )

    def _environment(self) -> dict[str, str]:
        from stdd_fast.serve.model import SCRATCH_ENV

        env = self.binary.environment()
        env[SCRATCH_ENV] = str(self.workdir / "scratch")
        return env

    def _backend_folder(self) -> None:
        """The bundled binary's backend folder: its Python backend with the stub for this Python (links)."""
        python = self.workdir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        parts = [
            self.binary.python_backend / "libtriton_python.so",
            self.binary.python_backend / "triton_python_backend_utils.py",
            self.binary.python_stub,
        ]
        for source in parts:
            link = python / source.name
            link.unlink(missing_ok=True)
            link.symlink_to(source)

    def start(self) -> None:
        """Launch the server (ConfigError if a port is taken; the models load in the background)."""
        if self.process is not None:
            raise ServerError(f"this TritonServer already runs (pid {self.process.pid})")
        self.endpoints.check_free()
        self.check_repository()
        (self.workdir / "scratch").mkdir(parents=True, exist_ok=True)
        if self.binary.bundled:
            self._backend_folder()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                start_new_session=True,  # its own process group: signals reach it only through stop()
                preexec_fn=_die_with_parent,
            )

    def _get(self, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.endpoints.http_url + path, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def wait_ready(self, timeout_s: float = 120.0, cancelled: Callable[[], bool] = lambda: False) -> dict:
        """Poll readiness (every 0.2 s, at most ``timeout_s``); the server's metadata (name, version).

        ServerError if it exits first or is not ready in time (it is then stopped) or ``cancelled()``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited (code {code}) before it was ready: {self.failure()}")
            if cancelled():
                raise ServerError("stopped before the server was ready")
            if self._get("/v2/health/ready", 1.0)[0] == 200:
                status, body = self._get("/v2")
                return json.loads(body) if status == 200 else {}
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"tritonserver was not ready after {timeout_s:g} s: {self.failure()}")
            time.sleep(0.2)

    def send_signal(self, signum: int) -> None:
        """Pass a signal on to the server (SIGINT / SIGTERM: Triton stops gracefully)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """Stop gracefully (SIGINT), then kill its process group past ``timeout_s``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=self.exit_timeout_s + 10 if timeout_s is None else timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a hung server, stubs left behind
            os.killpg(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):  # left when stubs were killed
            region.unlink(missing_ok=True)
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_messages(self) -> list[str]:
        """The log's messages without Triton's prefix (severity, time, thread, source) and its tables."""
        lines = [_LOG_PREFIX.sub("", line.strip()).strip().rstrip('"').strip() for line in self.log_text().splitlines()]
        return [line for line in lines if line and not line.startswith(("|", "+"))]

    def failure(self) -> str:
        """Why the server did not start or stopped, in one line from its log (with the log's path)."""
        lines = self.log_messages()
        for pattern, template in _REASONS:
            for line in lines:
                found = pattern.search(line)
                if found:
                    groups = [g.split("\\n")[0].strip().strip('"') for g in found.groups()] or [found.group(0)]
                    return f"{template.format(*groups)} (log: {self.log_path})"
        return f"{lines[-1] if lines else 'the log is empty'} (log: {self.log_path})"

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
