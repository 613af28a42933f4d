"""Untrusted model output: nothing may raise, hang, execute code or eat memory."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifiers import RESULT_KEYS, verify
from verifiers.bounded import SymbolicPool, _worker_compare, clear_cache, prescreen

TIME_BOUND_S = 2.5  # a hostile answer must be judged in about 1 s; 2.5 s leaves room for a loaded 2-core CI box

MILLION = "7" * 1_000_000
NESTED = "{" * 10_000 + "1" + "}" * 10_000


def _wrap(answer):
    return f"<think>t</think><answer>{answer}</answer>"


ADVERSARIAL = {
    "power_tower": _wrap("9^9^9^9"),
    "power_tower_braced": _wrap("9^{9^{9^{9}}}"),
    "power_tower_boxed": _wrap("\\boxed{9^{9}^{9}^9}"),
    "python_power_tower": _wrap("9**9**9**9"),
    "huge_exponent": _wrap("10^{10000000}"),
    "huge_factorial": _wrap("100000!"),
    "factorial_of_power": _wrap("(10^{5})!"),
    "huge_binomial": _wrap("\\binom{1000000}{500000}"),
    "huge_literal": _wrap("1" * 5000),
    "million_chars_response": MILLION,
    "million_chars_answer": _wrap(MILLION),
    "million_chars_boxed": _wrap("\\boxed{" + MILLION + "}"),
    "nested_braces": _wrap(NESTED),
    "nested_braces_boxed": _wrap("\\boxed{" + NESTED + "}"),
    "nested_braces_unbalanced": _wrap("\\boxed{" + "{" * 10_000),
    "nested_sqrt": _wrap("\\sqrt{" * 200 + "2" + "}" * 200),
    "nested_parens": _wrap("(" * 300 + "1" + ")" * 300),
    "unclosed_boxed": _wrap("\\boxed{5"),
    "unclosed_boxed_no_tags": "so \\boxed{5",
    "nul_bytes": _wrap("5\x00"),
    "nul_only": "\x00" * 1000,
    "control_chars": _wrap("5\x1b[31m"),
    "many_tags": "<answer>" * 200_000 + "</answer>" * 200_000,
    "many_think_tags": "<think></think>" * 100_000,
    "many_boxes": "\\boxed{" * 100_000,
    "python_code": _wrap("__import__('os').system('touch /tmp/care_pwned')"),
    "lambda_code": _wrap("(lambda: 1)()"),
    "division_by_zero": _wrap("\\frac{1}{0}"),
    "huge_scientific_exponent": _wrap("1e999999999"),
    "huge_scientific_times": _wrap("1 \\times 10^{999999999}"),
    "many_boxes_in_answer": _wrap("\\boxed{1}" * 100_000),
    "many_ands": _wrap(" and ".join(["1"] * 50_000)),
    "many_relations": _wrap("x" + " <= x" * 50_000),
    "many_digit_groups": _wrap("1" + ",\\!000" * 50_000),
}


@pytest.mark.parametrize("source, gold", [("virl39k", "\\boxed{5}"), ("geometry3k", "5"), ("chartqa", ["5"])])
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_are_cheap_zero_and_explained(warm_pool, name, source, gold):
    start = time.perf_counter()
    result = verify(source, ADVERSARIAL[name], gold)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"{name}: {elapsed:.2f}s"
    assert tuple(result) == RESULT_KEYS
    assert result["acc"] == 0, result
    assert result["reason"] and not result["reason"].startswith("internal_error"), result
    assert len(result["pred"]) <= 200


@pytest.mark.parametrize(
    "expr, reason",
    [
        ("9^9^9^9", "power_tower"),
        ("9^{9^{9}}", "power_tower"),
        ("{9^9}^9", "power_tower"),
        ("2**3**4", "power_tower"),
        ("10^{100001}", "huge_exponent"),
        ("1001!", "huge_factorial"),
        ("(5)!", "huge_factorial"),
        ("\\binom{5000}{3}", "huge_factorial"),
        ("1" * 61, "huge_number"),
        ("x" * 401, "answer_too_long"),
        ("\\sqrt{" * 13 + "}" * 13, "too_deeply_nested"),
        ("5\x00", "control_characters"),
        ("2^{2010}", None),
        ("x^2+y^2", None),
        ("\\frac{\\sqrt{3}}{2}", None),
        ("5!", None),
        ("\\binom{10}{3}", None),
    ],
)
def test_prescreen(expr, reason):
    assert prescreen(expr) == reason


def test_no_code_execution(warm_pool, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"exec(\"open('{marker}','w')\")",
        f"eval(\"open('{marker}','w')\")",
        "a.__class__",
    ]
    for payload in payloads:
        for source, gold in (("virl39k", "\\boxed{1}"), ("geometry3k", "1"), ("chartqa", ["1"])):
            assert verify(source, _wrap(payload), gold)["acc"] == 0
    assert not marker.exists()


@pytest.mark.parametrize(
    "expr",
    ["x^2+1", "2\\sqrt{3}", "\\frac{40}{3}", "(1,2)", "y=2x+1", "3.46", "17^\\circ", "a.b", "__import__",
     "\\mathrm{exec}(1)", "\\text{os.system}", "1e5", "0x10", "1_000"],
)
def test_symbolic_step_evals_only_number_literals(monkeypatch, expr):
    """On model output, sympy's parse_expr (Python eval) may only ever see a grammar-checked number.

    latex2sympy2 turns NUMBER tokens into ``sympy.Number(text)``, which goes through sympify; any
    other string reaching parse_expr would be model text being evaluated.
    """
    import re

    import math_verify.parser
    import sympy.parsing.sympy_parser

    original = sympy.parsing.sympy_parser.parse_expr
    seen = []

    def spy(text, *args, **kwargs):
        seen.append(text)
        if not re.fullmatch(r"[0-9.]+", str(text)):
            raise AssertionError(f"parse_expr called on {text!r}")
        return original(text, *args, **kwargs)

    monkeypatch.setattr(sympy.parsing.sympy_parser, "parse_expr", spy)
    monkeypatch.setattr(math_verify.parser, "parse_expr", spy)
    math_verify.parser.parse_expr_cached.cache_clear()
    clear_cache()
    reply = _worker_compare(expr, expr)
    assert all(re.fullmatch(r"[0-9.]+", str(t)) for t in seen), seen
    if expr in ("x^2+1", "2\\sqrt{3}", "\\frac{40}{3}", "3.46"):
        assert reply["parsed"] and reply["equal"], reply


def _exits(pid: int, within_s: float = 30.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within a generous bound."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_timeout_ends_the_worker_and_pool_recovers():
    pool = SymbolicPool(size=1)
    try:
        assert pool.compare("2\\sqrt{3}", "\\sqrt{12}", timeout_s=30)["equal"] is True
        first = pool._idle[0][0]
        # No reply can arrive within a microsecond: this is a timeout by construction.
        assert pool.compare("x^2-1", "(x-1)(x+1)", timeout_s=1e-6) == {"error": "timeout"}
        assert _exits(first.pid), "the timed-out worker must end"
        assert pool.compare("x^2-1", "(x-1)(x+1)", timeout_s=30)["equal"] is True
        assert pool._count == 1
    finally:
        pool.close()


def test_cpu_budget_ends_a_hostile_worker_with_reason_timeout():
    """The budget is the worker's own CPU time: a hostile answer is ended by it (SIGPROF), not by waiting."""
    pool = SymbolicPool(size=1)
    try:
        assert pool.compare("1", "1", timeout_s=30)["equal"] is True
        worker = pool._idle[0][0]
        assert pool.compare("x^2+1", "(x+y+z)^{200}", timeout_s=0.3) == {"error": "timeout"}
        assert _exits(worker.pid)
        assert pool.compare("1", "1", timeout_s=30)["equal"] is True
    finally:
        pool.close()


def test_dead_worker_is_replaced():
    import os
    import signal

    pool = SymbolicPool(size=1)
    try:
        assert pool.compare("1", "1", timeout_s=30)["equal"] is True
        worker = pool._idle[0][0]
        os.kill(worker.pid, signal.SIGKILL)
        assert _exits(worker.pid)
        failed = pool.compare("1", "1", timeout_s=30)
        assert failed["error"].startswith("worker_failed"), failed
        assert pool.compare("1", "1", timeout_s=30)["equal"] is True
    finally:
        pool.close()


# Pass the prescreen, then keep sympy busy for many seconds of CPU (each far beyond the budget below).
HOSTILE = ["(x+y+z)^{200}", "(x+y+z+w)^{200}", "\\frac{(x+1)^{999}}{(x-1)^{998}}"]


def test_hostile_answers_do_not_hold_back_correct_ones_beside_them(warm_pool):
    """Each request has its own worker: correct answers that need the symbolic step, submitted after
    eight hostile ones that burn their whole budget, come back right and before any hostile one.
    A shared pool of two workers makes them wait until hostile ones have finished."""
    clear_cache()
    hostile_budget_s, n_hostile, n_correct = 3.0, 8, 4
    finished: list[str] = []

    def run(item):
        kind, response, gold, budget = item
        result = verify("virl39k", response, gold, timeout_s=budget)
        finished.append(kind)  # list.append is atomic: the order in which results came back
        return kind, result

    hostile = [("hostile", _wrap(HOSTILE[i % 3].replace("200", str(200 + i))), "\\boxed{x^2+1}", hostile_budget_s)
               for i in range(n_hostile)]
    correct = [("correct", _wrap(f"\\sqrt{{{3 * (i + 7) ** 2}}}"), f"\\boxed{{{i + 7}\\sqrt{{3}}}}", 30.0)
               for i in range(n_correct)]
    with ThreadPoolExecutor(max_workers=n_hostile + n_correct) as pool:
        futures = [pool.submit(run, item) for item in hostile]
        time.sleep(0.5)  # the hostile ones have their workers and are computing
        futures += [pool.submit(run, item) for item in correct]
        results = [f.result() for f in futures]
    assert [r["acc"] for kind, r in results if kind == "correct"] == [1] * n_correct
    assert [r["reason"] for kind, r in results if kind == "hostile"] == ["timeout"] * n_hostile
    assert finished[:n_correct] == ["correct"] * n_correct, finished


def test_timeout_reason_reaches_the_result(respond, monkeypatch):
    result = verify("virl39k", respond("(x-1)(x+1)"), "\\boxed{x^2-1}", timeout_s=1e-6)
    assert (result["acc"], result["reason"]) == (0, "timeout")


CASES = [
    ("virl39k", "\\boxed{x^2-1}", "(x-1)(x+1)", 1),
    ("virl39k", "\\boxed{2\\sqrt{3}}", "\\sqrt{12}", 1),
    ("virl39k", "\\boxed{\\frac{\\sqrt{2}}{2}}", "\\sqrt{2}/2", 1),
    ("virl39k", "\\boxed{stop}", "pots", 0),
    ("virl39k", "\\boxed{B}", "(B)", 1),
    ("virl39k", "\\boxed{5}", "9^9^9^9", 0),
    ("geometry3k", "\\frac{40}{3}", "13.33", 1),
    ("geometry3k", "2\\sqrt{3}", "3.46", 1),
    ("geometry3k", "4\\pi", "12.57", 1),
    ("geometry3k", "48", "48^\\circ", 1),
    ("chartqa", ["1000"], "1,000", 1),
    ("chartqa", ["Yes"], "no", 0),
] * 3


def test_same_result_from_main_thread_and_thread_pool(warm_pool):
    """math-verify's default signal-based timeouts fail off the main thread; ours must not."""
    clear_cache()
    main = [verify(src, _wrap(pred), gold) for src, gold, pred, _ in CASES]
    clear_cache()  # the threads must compute, not read the main thread's results
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda c: verify(c[0], _wrap(c[2]), c[1]), CASES))
    assert threaded == main
    assert [r["acc"] for r in main] == [acc for *_, acc in CASES]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("0123456789^{}()[]\\!+-*/=.,%$ xyzABC<>/thinkanswerboxedfrac\x00≤≥≠eE")),
               max_size=120),
       st.sampled_from(["chartqa", "geometry3k", "virl39k"]))
def test_fuzz_never_raises(warm_pool, answer, source):
    gold = ["5"] if source == "chartqa" else "\\boxed{5}"
    for response in (answer, _wrap(answer), _wrap(f"\\boxed{{{answer}}}")):
        result = verify(source, response, gold)
        assert tuple(result) == RESULT_KEYS
        assert result["acc"] in (0, 1) and result["format"] in (0, 1)
        assert not result["reason"].startswith("internal_error"), (response, result)


def test_unavailable_backend_is_a_reported_zero_not_a_crash(monkeypatch, caplog):
    import verifiers.bounded as bounded

    class NoStart:
        def __init__(self):
            raise OSError("cannot spawn")

    monkeypatch.setattr(bounded, "_Worker", NoStart)
    pool = SymbolicPool(size=1)
    with caplog.at_level("ERROR", logger="verifiers.bounded"):
        assert pool.compare("x^2", "x*x") == {"error": "symbolic_backend_unavailable"}
    assert "symbolic worker unavailable" in caplog.text
    assert pool._count == 0  # the failed start gave its slot back
