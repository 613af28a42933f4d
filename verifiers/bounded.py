"""Bounded, eval-free symbolic comparison of untrusted answers.

Model output is untrusted. Three layers keep a verification cheap and safe:

1. :func:`prescreen` rejects, in linear time and before any parser sees the text, what is too long,
   too deeply nested, contains control characters, or describes a number no one needs to build
   (power towers such as ``9^9^9^9``, huge exponents, factorials and binomials of big literals).
2. Parsing goes through math-verify's LaTeX path only (a grammar parser, latex2sympy2_extended).
   Its plain-expression path (``ExprExtractionConfig``) and mathruler's ``grade_answer`` call
   ``sympy.parse_expr``, i.e. Python ``eval``, on the text, so neither is used on model output.
3. Everything that touches sympy runs in worker processes with a wall-time limit per request,
   one worker per request in flight (:class:`SymbolicPool`): a request never queues behind
   another, so a hostile answer costs its own budget and no one else's. A worker that overruns
   is killed; the caller gets ``reason="timeout"`` and acc 0.

Why processes and not ``signal.alarm`` (math-verify's default) or threads: verl calls reward
functions from worker threads, where ``signal`` raises, and a Python thread running sympy cannot be
interrupted at all. A killed process also returns its memory; each worker runs under an address
space limit, so an expression that tries to allocate gigabytes dies with ``MemoryError`` instead of
taking the node down. Workers are forked from a fork server of our own (:func:`fork_server`, a
single-threaded process started with fork+exec that has imported sympy and math-verify once; never a
bare ``fork`` of the threaded parent), so starting one takes milliseconds. They exit on their own
when the parent's socket closes, so they never outlive it. Requests and replies are JSON lines
(plain floats and booleans), never pickles.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# What may reach a parser. Real answers of the three sources are far below these (the longest
# Geometry3K / ViRL39K gold answers are well under 200 characters).
MAX_EXPR_CHARS = 400
MAX_NESTING = 12  # depth of (), [] and {} together; \frac{\sqrt{\frac{a}{b}}}{c} is 4
MAX_EXPONENT = 10_000  # 2^{2010} appears in DeepScaleR answers; 10^{10^6} does not
MAX_FACTORIAL_ARG = 1_000
MAX_DIGITS = 60  # digits in one integer literal inside an expression

DEFAULT_TIMEOUT_S = float(os.environ.get("CARE_VERIFIER_TIMEOUT_S", "1.0"))
DEFAULT_WORKERS = int(os.environ.get("CARE_VERIFIER_WORKERS", str(max(1, min(2, os.cpu_count() or 1)))))  # kept idle
MAX_WORKERS = int(os.environ.get("CARE_VERIFIER_MAX_WORKERS", "32"))  # requests in flight at once
IDLE_RETIRE_S = 60.0
ORPHAN_GRACE_S = 2.0
WALL_FACTOR = 4.0  # wall-time cap of a request, in CPU budgets: a budget's CPU may arrive slowly
SPILL_WAIT_S = 0.1  # longest wait for a busy worker before starting another
DEMOTE_AFTER_S = 0.1  # CPU after which a request yields to cheaper ones (real answers: ~5-100 ms)
DEMOTED_NICE = 19  # added to a worker's niceness after DEMOTE_AFTER_S of CPU
WORKER_MEMORY_BYTES = int(os.environ.get("CARE_VERIFIER_WORKER_MEMORY_MB", "2048")) * 2**20
WORKER_START_TIMEOUT_S = 60.0

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DIGIT_RUN = re.compile(rf"\d{{{MAX_DIGITS + 1},}}")
_FACTORIAL = re.compile(r"(\d+|[)}\]])\s*!")
_BINOM = re.compile(r"\\(?:binom|dbinom|tbinom|choose)\b|\bC\s*\(")
_INT = re.compile(r"\d+")
_EXPONENT_TOKEN = re.compile(r"-?\d+(?:\.\d+)?|\\[A-Za-z]+|[A-Za-z]")


def has_control_chars(text: str) -> bool:
    """NUL and other C0 controls (tab, newline and carriage return are ordinary whitespace)."""
    return _CONTROL_CHARS.search(text) is not None


def nesting_depth(text: str) -> int:
    depth = best = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            best = max(best, depth)
        elif ch in ")}]":
            depth = max(depth - 1, 0)
    return best


def _exponent_spans(text: str):
    """Yield ``(exponent_text, index_after_exponent)`` for every ``^`` (``**`` counts as ``^``)."""
    i, n = 0, len(text)
    while True:
        i = text.find("^", i)
        if i < 0:
            return
        j = i + 1
        while j < n and text[j] == " ":
            j += 1
        if j < n and text[j] in "{(":
            close = {"{": "}", "(": ")"}[text[j]]
            depth, k = 0, j
            while k < n:
                if text[k] == text[j]:
                    depth += 1
                elif text[k] == close:
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            yield text[j + 1 : k], k + 1
            i = k + 1
        else:
            m = _EXPONENT_TOKEN.match(text, j)
            end = m.end() if m else j
            yield text[j:end], end
            i = max(end, i + 1)


def prescreen(expr: str) -> str | None:
    """Return a reason string if ``expr`` must not reach a parser, else ``None``. Linear time."""
    if len(expr) > MAX_EXPR_CHARS:
        return "answer_too_long"
    if has_control_chars(expr):
        return "control_characters"
    if nesting_depth(expr) > MAX_NESTING:
        return "too_deeply_nested"
    if _DIGIT_RUN.search(expr):
        return "huge_number"
    text = expr.replace("**", "^")
    for exponent, after in _exponent_spans(text):
        rest = text[after:].lstrip(" }")  # a^{b}^c and (a^b)^c both tower
        if "^" in exponent or rest.startswith("^"):
            return "power_tower"
        for literal in _INT.findall(exponent):
            if int(literal) > MAX_EXPONENT:
                return "huge_exponent"
    for m in _FACTORIAL.finditer(text):
        if not m.group(1).isdigit() or int(m.group(1)) > MAX_FACTORIAL_ARG:
            return "huge_factorial"
    if _BINOM.search(text) and any(int(x) > MAX_FACTORIAL_ARG for x in _INT.findall(text)):
        return "huge_factorial"
    return None


# ---------------------------------------------------------------------------------------------
# Worker side (runs in the child process).


@functools.lru_cache(maxsize=4096)
def _parse_latex(text: str) -> tuple:
    """math-verify's LaTeX grammar only (see the module docstring); cached: the 8 rollouts of a
    prompt share one gold, and sympy objects are immutable."""
    from math_verify import LatexExtractionConfig, parse

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    return tuple(parse(f"${text}$", config, fallback_mode="no_fallback", parsing_timeout=None))


def _worker_compare(gold: str, pred: str) -> dict:
    """Parse both with math-verify's LaTeX grammar, compare, and evaluate numeric values.

    ``values`` lets the parent apply its rounding tolerance (3.46 vs 2\\sqrt{3}), which math-verify
    has no notion of: it rounds both sides to a fixed number of decimals instead.
    """
    from math_verify import verify

    def value(parsed) -> float | None:
        import sympy

        if not parsed or not isinstance(parsed[0], sympy.Expr) or parsed[0].free_symbols:
            return None
        try:
            number = complex(parsed[0].evalf(30))
        except (TypeError, ValueError, OverflowError):
            return None
        if number.imag != 0 or number.real != number.real or abs(number.real) == float("inf"):
            return None
        return number.real

    def has_float(parsed) -> bool:
        import sympy

        return any(isinstance(e, sympy.Basic) and e.has(sympy.Float) for e in parsed)

    g, p = _parse_latex(gold), _parse_latex(pred)
    if not g or not p:
        # ``gold_parsed`` tells a data error (the gold) from a bad prediction.
        return {"parsed": False, "gold_parsed": bool(g), "equal": False, "gold_value": None, "pred_value": None,
                "inexact": False}
    equal = bool(verify(list(g), list(p), timeout_seconds=None))
    # ``inexact``: math-verify decided with its 6-decimal float rounding; the parent re-decides numbers.
    return {"parsed": True, "equal": equal, "gold_value": value(g), "pred_value": value(p),
            "inexact": has_float(g) or has_float(p)}


def _warm_up() -> None:
    """What every worker would otherwise pay on its first request (math-verify's LaTeX grammar,
    sympy's first evaluations: ~0.1 s of CPU), paid once in the fork server."""
    for gold, pred in (("2\\sqrt{3}", "\\sqrt{12}"), ("\\frac{1}{2}", "0.5"), ("x^2-1", "(x-1)(x+1)"),
                       ("(1, 2)", "(1,2)"), ("x \\leq 2", "2 \\geq x")):
        _worker_compare(gold, pred)


def _demote(signum, frame) -> None:  # pragma: no cover - runs in a forked worker
    """A request that has used ``DEMOTE_AFTER_S`` of CPU yields the CPU to cheaper ones."""
    global _DEMOTED
    if not _DEMOTED:
        _DEMOTED = True
        try:
            os.nice(DEMOTED_NICE)
        except OSError:
            pass


_DEMOTED = False


def _serve_worker(sock) -> None:  # pragma: no cover - runs in a forked worker
    """Worker loop: one JSON request per line on ``sock``, one JSON reply per line.

    Each request gets ``timeout_s`` seconds of *CPU time* (``ITIMER_PROF``, whose signal's default
    action terminates the process even inside C code): what its own work costs, however busy the
    machine is. After ``DEMOTE_AFTER_S`` of CPU the worker lowers its own priority (best effort,
    from a signal handler), so cheap requests beside it keep the CPU; a demoted worker is retired
    after its reply (priority cannot be raised back). An ``ITIMER_REAL`` alarm, longer than the
    parent's wall cap, only bounds a worker whose parent died mid-request.
    """
    import resource
    import signal

    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ValueError, OSError):
        pass
    for number in (signal.SIGPROF, signal.SIGALRM):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGVTALRM, _demote)
    stream = sock.makefile("rwb")
    stream.write(b'{"ready": true}\n')
    stream.flush()
    for line in stream:
        try:
            request = json.loads(line)
            budget = max(float(request.get("timeout_s", DEFAULT_TIMEOUT_S)), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, budget * WALL_FACTOR + ORPHAN_GRACE_S)
            signal.setitimer(signal.ITIMER_VIRTUAL, DEMOTE_AFTER_S)
            signal.setitimer(signal.ITIMER_PROF, budget)
            reply = _worker_compare(request["gold"], request["pred"])
        except MemoryError:
            reply = {"error": "memory"}
        except Exception as exc:  # a parser bug must not kill the worker
            reply = {"error": f"{type(exc).__name__}"}
        finally:
            for timer in (signal.ITIMER_PROF, signal.ITIMER_VIRTUAL, signal.ITIMER_REAL):
                signal.setitimer(timer, 0)
        if _DEMOTED:
            reply["retire"] = True
        stream.write(json.dumps(reply).encode() + b"\n")
        stream.flush()


def _reap(live: set[int], exited: dict[int, int]) -> None:
    """Collect finished workers; their statuses are kept until asked for (bounded)."""
    for pid in list(live):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            live.discard(pid)
            exited[pid] = status
    while len(exited) > 1024:
        exited.pop(next(iter(exited)))


def fork_server(fd: int) -> None:  # pragma: no cover - runs in the fork server process
    """Fork server: imports sympy and math-verify once, then forks one worker per ``spawn``.

    Commands arrive on the SOCK_SEQPACKET socket ``fd``: ``spawn`` with one attached socket (the
    worker's end of its pipe; answered with the worker's pid) and ``status PID`` (the wait status of
    a worker that has exited). Nobody signals a worker from outside: it ends itself (its timers, or
    EOF on its socket), so no recycled pid can be hit. Single-threaded, so ``fork`` is safe here.
    It exits when the parent's end closes.
    """
    import socket

    logging.disable(logging.WARNING)  # math-verify warns on every call with timeouts disabled
    try:
        _warm_up()
    except Exception:  # only a speed-up: workers then warm up on their first request
        pass
    control = socket.socket(fileno=fd)
    control.send(b"ready")
    live: set[int] = set()
    exited: dict[int, int] = {}
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 64, 1)
        except OSError:
            return
        if not message:
            return
        _reap(live, exited)
        command = message.decode().split()
        if command[0] == "spawn" and fds:
            pid = os.fork()
            if pid == 0:
                control.close()
                code = 0
                try:
                    _serve_worker(socket.socket(fileno=fds[0]))
                except BaseException:
                    code = 1
                os._exit(code)
            os.close(fds[0])
            live.add(pid)
            control.send(str(pid).encode())
        elif command[0] == "status" and len(command) == 2:
            pid = int(command[1])
            if pid in live:  # asked only once the worker's socket is closed: it is exiting
                _, status = os.waitpid(pid, 0)
                live.discard(pid)
            else:
                status = exited.pop(pid, 0)
            control.send(str(status).encode())
        else:
            for extra in fds:
                os.close(extra)
            control.send(b"error")


# ---------------------------------------------------------------------------------------------
# Parent side.


class _ForkServer:
    """The parent's handle on :func:`fork_server` (one per process, started on first use).

    Why not multiprocessing's ``forkserver``: its children re-run the parent's ``__main__`` script
    (spawn semantics), which a training script without a main guard does not survive.
    """

    def __init__(self) -> None:
        import socket

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(__file__).resolve().parent.parent)
        code = (f"import sys; sys.path.insert(0, {root!r}); from verifiers.bounded import fork_server; "
                f"fork_server({theirs.fileno()})")
        try:
            # fork+exec (never a bare fork of a threaded parent); inherits env: Ray runtime envs may
            # rely on PYTHONPATH.
            self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=[theirs.fileno()], close_fds=True)
        finally:
            theirs.close()
        self.sock = ours
        self.sock.settimeout(WORKER_START_TIMEOUT_S)
        self._lock = threading.Lock()
        try:
            if self.sock.recv(64) != b"ready":
                raise RuntimeError("verifier fork server did not start")
        except Exception:
            self.close()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _command(self, message: bytes, fds: list[int] = ()) -> bytes:
        import socket

        with self._lock:
            socket.send_fds(self.sock, [message], list(fds))
            reply = self.sock.recv(64)
        if not reply:
            raise EOFError("verifier fork server exited")
        return reply

    def spawn(self):
        """``(pid, socket)`` of a new worker."""
        import socket

        ours, theirs = socket.socketpair()
        try:
            pid = int(self._command(b"spawn", [theirs.fileno()]))
        except Exception:
            ours.close()
            raise
        finally:
            theirs.close()
        return pid, ours

    def exit_status(self, pid: int) -> int:
        """The wait status of a worker whose socket reported EOF."""
        return int(self._command(f"status {pid}".encode()))

    def close(self) -> None:
        try:
            self.sock.close()  # the server exits on EOF; its idle workers on their own EOF
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


_FORK_SERVER_LOCK = threading.Lock()
_FORK_SERVER: _ForkServer | None = None
_FORK_SERVER_PID = 0


def _fork_server() -> _ForkServer:
    global _FORK_SERVER, _FORK_SERVER_PID
    with _FORK_SERVER_LOCK:
        if _FORK_SERVER is None or _FORK_SERVER_PID != os.getpid() or not _FORK_SERVER.alive():
            if _FORK_SERVER is not None and _FORK_SERVER_PID == os.getpid():
                _FORK_SERVER.close()
            _FORK_SERVER, _FORK_SERVER_PID = _ForkServer(), os.getpid()
        return _FORK_SERVER


def _close_fork_server() -> None:
    with _FORK_SERVER_LOCK:
        if _FORK_SERVER is not None and _FORK_SERVER_PID == os.getpid():
            _FORK_SERVER.close()


class _Worker:
    """One forked worker and its socket; requests and replies are JSON lines, never pickles."""

    def __init__(self) -> None:
        self._server = _fork_server()
        self.pid, self.sock = self._server.spawn()
        self._buffer = b""
        self.ready = False

    def _read_line(self, deadline: float) -> bytes | None:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if not readable:
                return None
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("verifier worker exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def wait_ready(self) -> None:
        line = self._read_line(time.monotonic() + WORKER_START_TIMEOUT_S)
        if line is None or not json.loads(line).get("ready"):
            raise RuntimeError("verifier worker did not start")
        self.ready = True

    def request(self, payload: dict, timeout_s: float) -> dict | None:
        """The reply, or ``None`` past the wall cap (the caller must then discard this worker).

        The worker enforces the CPU budget itself and dies of ``SIGPROF`` (an ``EOFError`` here);
        the wall cap only covers a machine so loaded that the budget's CPU never comes.
        """
        self.sock.sendall((json.dumps({**payload, "timeout_s": timeout_s}) + "\n").encode())
        line = self._read_line(time.monotonic() + timeout_s * WALL_FACTOR)
        return None if line is None else json.loads(line)

    def discard(self) -> None:
        """Drop the worker: it exits on EOF when idle, or by its own timers when busy."""
        try:
            self.sock.close()
        except Exception:
            pass

    def ran_out_of_cpu(self) -> bool:
        """After EOF during a request: did the CPU budget (``SIGPROF``) end the worker?"""
        import signal

        try:
            status = self._server.exit_status(self.pid)
        except Exception:
            return False
        return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGPROF


class SymbolicPool:
    """Comparison workers shared by all threads of this process, one per request in flight.

    A request never waits long behind another request: it takes an idle worker, or starts (forks)
    a new one while fewer than ``size`` exist, or waits at most ``SPILL_WAIT_S`` (0.1 s: real
    comparisons take milliseconds, so in a batch of them a worker frees up sooner than a fork
    pays off) and then starts a new one. A hostile answer thus spends its own time budget in its
    own process while cheap answers run beside it; the one that overruns ends (its CPU budget),
    nothing else does. Only above ``max_workers``
    requests in flight (``CARE_VERIFIER_MAX_WORKERS``, default 32: verl's default reward thread
    pool has at most 32 threads) does a request wait for a free worker; its budget still starts
    when a worker has it. Up to ``size`` idle workers are kept warm; more are retired after
    ``IDLE_RETIRE_S`` idle, so memory follows the concurrency of the last seconds.
    """

    def __init__(self, size: int = DEFAULT_WORKERS, max_workers: int = MAX_WORKERS) -> None:
        self.size = max(1, size)
        self.max_workers = max(self.size, max_workers)
        self._idle: list[tuple[_Worker, float]] = []  # (worker, idle since), most recent last
        self._count = 0
        self._cond = threading.Condition()
        self._pid = os.getpid()

    def _acquire(self) -> _Worker:
        with self._cond:
            if self._pid != os.getpid():  # forked child: the parent's workers are not ours
                self._idle, self._count, self._pid = [], 0, os.getpid()
            spill_at = time.monotonic() + SPILL_WAIT_S
            while not self._idle and self._count >= self.size:
                remaining = spill_at - time.monotonic()
                if remaining <= 0 and self._count < self.max_workers:
                    break  # the busy workers are not finishing soon: start another
                self._cond.wait(remaining if remaining > 0 else None)
            if self._idle:
                return self._idle.pop()[0]
            self._count += 1
        worker = None
        try:
            worker = _Worker()
            worker.wait_ready()
            return worker
        except Exception:
            if worker is not None:
                worker.discard()
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        now = time.monotonic()
        retired = [] if healthy else [worker]
        with self._cond:
            if healthy:
                self._idle.append((worker, now))
            while len(self._idle) > self.size and now - self._idle[0][1] > IDLE_RETIRE_S:
                retired.append(self._idle.pop(0)[0])
            self._count -= len(retired)
            self._cond.notify()
        for old in retired:
            old.discard()

    def compare(self, gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
        """``{"parsed", "equal", "gold_value", "pred_value", "inexact"}`` or ``{"error": reason}``.

        ``timeout_s`` is CPU time of the request's own worker (see :func:`_serve_worker`), capped
        at ``WALL_FACTOR`` times that in wall time.
        """
        try:
            worker = self._acquire()
        except Exception as exc:
            logger.error("care verifiers: symbolic worker unavailable (%s); answer scored 0", exc)
            return {"error": "symbolic_backend_unavailable"}
        try:
            reply = worker.request({"gold": gold, "pred": pred}, timeout_s)
        except (OSError, EOFError, ValueError) as exc:
            out_of_budget = isinstance(exc, EOFError) and worker.ran_out_of_cpu()
            self._release(worker, healthy=False)
            return {"error": "timeout"} if out_of_budget else {"error": f"worker_failed:{type(exc).__name__}"}
        # A worker that hit its memory cap or lowered its priority is replaced.
        healthy = reply is not None and reply.get("error") != "memory" and not reply.pop("retire", False)
        self._release(worker, healthy)
        return {"error": "timeout"} if reply is None else reply

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker, _ in idle:
            worker.discard()


_POOL = SymbolicPool()
atexit.register(_close_fork_server)
atexit.register(_POOL.close)


class _NotCacheable(Exception):
    def __init__(self, reply: dict) -> None:
        super().__init__(reply.get("error"))
        self.reply = reply


@functools.lru_cache(maxsize=8192)
def _cached_compare(gold: str, pred: str, timeout_s: float) -> tuple:
    # Rollouts of one prompt repeat answers; only definite results are cached (lru_cache does not
    # cache exceptions), so a timeout under load is retried next time rather than remembered.
    reply = _POOL.compare(gold, pred, timeout_s)
    if "error" in reply:
        raise _NotCacheable(reply)
    return tuple(sorted(reply.items()))


def symbolic_compare(gold: str, pred: str, timeout_s: float | None = None) -> dict:
    """Compare two prescreened expressions in the shared worker pool (see :class:`SymbolicPool`)."""
    try:
        return dict(_cached_compare(gold, pred, DEFAULT_TIMEOUT_S if timeout_s is None else float(timeout_s)))
    except _NotCacheable as exc:
        return dict(exc.reply)


def clear_cache() -> None:
    """Forget cached comparisons of this process (benchmarks and tests measure cold calls)."""
    _cached_compare.cache_clear()
    _parse_latex.cache_clear()
