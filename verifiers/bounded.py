"""Bounded, eval-free symbolic comparison of untrusted answers.

Model output is untrusted. Three layers keep a verification cheap and safe:

1. :func:`prescreen` rejects, in linear time and before any parser sees the text, what is too long,
   too deeply nested, contains control characters, or describes a number no one needs to build
   (power towers such as ``9^9^9^9``, huge exponents, factorials and binomials of big literals).
2. Parsing goes through math-verify's LaTeX path only (a grammar parser, latex2sympy2_extended).
   Its plain-expression path (``ExprExtractionConfig``) and mathruler's ``grade_answer`` call
   ``sympy.parse_expr``, i.e. Python ``eval``, on the text, so neither is used on model output.
3. Everything that touches sympy runs in a small pool of persistent worker processes with a
   wall-time limit per request. A worker that overruns is killed and replaced; the caller gets
   ``reason="timeout"`` and acc 0.

Why processes and not ``signal.alarm`` (math-verify's default) or threads: verl calls reward
functions from worker threads, where ``signal`` raises, and a Python thread running sympy cannot be
interrupted at all. A killed process also returns its memory; each worker runs under an address
space limit, so an expression that tries to allocate gigabytes dies with ``MemoryError`` instead of
taking the node down. Workers are started lazily (``subprocess``: fork+exec, never a bare ``fork`` of a
threaded parent) and exit on their own when the parent's pipe closes, so they never outlive it.
Requests are JSON lines; the worker answers with plain floats and booleans, never pickles.
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
DEFAULT_WORKERS = int(os.environ.get("CARE_VERIFIER_WORKERS", str(max(1, min(2, os.cpu_count() or 1)))))
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
        return {"parsed": False, "equal": False, "gold_value": None, "pred_value": None, "inexact": False}
    equal = bool(verify(list(g), list(p), timeout_seconds=None))
    # ``inexact``: math-verify decided with its 6-decimal float rounding; the parent re-decides numbers.
    return {"parsed": True, "equal": equal, "gold_value": value(g), "pred_value": value(p),
            "inexact": has_float(g) or has_float(p)}


def serve() -> None:  # pragma: no cover - runs in the child; exercised through SymbolicPool
    """Worker loop: one JSON request per stdin line, one JSON reply per stdout line."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    logging.disable(logging.WARNING)  # math-verify warns on every call with timeouts disabled
    import math_verify  # noqa: F401  (pay the import before saying ready)

    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            reply = _worker_compare(request["gold"], request["pred"])
        except MemoryError:
            reply = {"error": "memory"}
        except Exception as exc:  # a parser bug must not kill the worker
            reply = {"error": f"{type(exc).__name__}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------
# Parent side.


class _Worker:
    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        code = f"import sys; sys.path.insert(0, {root!r}); from verifiers.bounded import serve; serve()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],  # inherits env: Ray runtime envs may rely on PYTHONPATH
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._buffer = b""
        self.ready = False

    def _read_line(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
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
        """The reply, or ``None`` on timeout (the caller must then kill this worker)."""
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())
        self.proc.stdin.flush()
        line = self._read_line(time.monotonic() + timeout_s)
        return None if line is None else json.loads(line)

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # already gone
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except Exception:
                pass


class SymbolicPool:
    """A fixed number of persistent comparison workers shared by all threads of this process."""

    def __init__(self, size: int = DEFAULT_WORKERS) -> None:
        self.size = max(1, size)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._pid = os.getpid()

    def _acquire(self) -> _Worker:
        with self._cond:
            if self._pid != os.getpid():  # forked child: the parent's workers are not ours
                self._idle, self._count, self._pid = [], 0, os.getpid()
            while not self._idle and self._count >= self.size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        worker = None
        try:
            worker = _Worker()
            worker.wait_ready()
            return worker
        except Exception:
            if worker is not None:
                worker.kill()
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            if healthy:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def compare(self, gold: str, pred: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
        """``{"parsed", "equal", "gold_value", "pred_value"}`` or ``{"error": reason}``.

        ``timeout_s`` counts from the moment a worker has the request, so waiting behind other
        threads for a free worker never turns a correct answer into a timeout.
        """
        try:
            worker = self._acquire()
        except Exception as exc:
            logger.error("care verifiers: symbolic worker unavailable (%s); answer scored 0", exc)
            return {"error": "symbolic_backend_unavailable"}
        healthy = False
        try:
            reply = worker.request({"gold": gold, "pred": pred}, timeout_s)
            if reply is None:
                return {"error": "timeout"}
            healthy = reply.get("error") != "memory"  # a worker that hit its memory cap is replaced
            return reply
        except (OSError, EOFError, ValueError) as exc:
            return {"error": f"worker_failed:{type(exc).__name__}"}
        finally:
            self._release(worker, healthy)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()


_POOL = SymbolicPool()
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
