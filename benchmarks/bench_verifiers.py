"""Throughput and latency of ``verifiers.verify`` on a realistic CARE reward batch.

    python benchmarks/bench_verifiers.py [--n 4096] [--threads 8] [--seed 0]
    python benchmarks/bench_verifiers.py --hostile 16 [--correct 16]

The mix follows the training mix (ViRL39K ~80 %, ChartQA ~15 %, Geometry3K ~5 %) and the answer
styles of each source; responses carry a ~1.5 k-character think span. About 70 % are correct,
25 % wrong, 3 % unformatted, 2 % pathological (power towers, a million characters, 10 k nested
braces, an unclosed box, NUL bytes).

Both passes start with empty answer caches and freshly started (idle) symbolic workers.
"Per core" is measured with one calling thread: the caller blocks while a symbolic worker process
computes, so one core is busy at a time. The batch figure runs the same requests through a thread
pool, as verl's reward loop does (one symbolic worker per request in flight).

``--hostile N`` measures isolation instead: N hostile answers (pass the prescreen, then keep sympy
busy until the time budget kills them) and ``--correct`` correct answers that need the symbolic
step, all submitted at once from one thread per answer, hostile ones first. It prints the wait
(submit to result) of the correct answers alone (the baseline, same run) and beside the hostile
ones, as ratios to that baseline, and the hostile answers' wait as a ratio to their time budget.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import verifiers.math_equal  # noqa: E402
from verifiers import verify  # noqa: E402
from verifiers import bounded  # noqa: E402
from verifiers.bounded import DEFAULT_WORKERS, symbolic_compare  # noqa: E402

SYMBOLIC_CALLS = [0]


def counted_symbolic_compare(*args, **kwargs):
    SYMBOLIC_CALLS[0] += 1
    return symbolic_compare(*args, **kwargs)


verifiers.math_equal.symbolic_compare = counted_symbolic_compare

THINK = ("First I read the figure carefully and write down the given quantities. " * 20).strip()


def respond(answer: str, rng: random.Random, formatted: bool = True) -> str:
    if not formatted:
        return f"{THINK} So the final answer is \\boxed{{{answer}}}."
    inner = f"\\boxed{{{answer}}}" if rng.random() < 0.3 else answer
    return f"<think>{THINK}</think>\n<answer>{inner}</answer>"


def chartqa_item(rng: random.Random, correct: bool):
    kind = rng.random()
    if kind < 0.6:
        value = round(rng.uniform(1, 5000), rng.choice([0, 1, 2]))
        gold = f"{value:g}"
        if correct:
            pred = rng.choice([gold, f"{value:,}", f"{value * 1.02:.2f}", f"{gold}%"])
        else:
            pred = f"{value * 1.3:.1f}"
    elif kind < 0.8:
        gold = rng.choice(["Yes", "No"])
        pred = gold.lower() if correct else ("No" if gold == "Yes" else "Yes")
    else:
        gold = rng.choice(["Democrats", "South Korea", "Blue", "2015", "Agree"])
        pred = gold if correct else "Other"
    return "chartqa", [gold], pred


def geometry_item(rng: random.Random, correct: bool):
    a, b = rng.randint(2, 15), rng.choice([2, 3, 5, 6, 7])
    kind = rng.random()
    if kind < 0.4:
        gold = str(rng.randint(5, 170))
        pred = rng.choice([gold, f"{gold}^\\circ", f"x = {gold}"]) if correct else str(int(gold) + 3)
    elif kind < 0.75:
        gold = f"{a}\\sqrt{{{b}}}"
        wrong = f"{a + 1}\\sqrt{{{b}}}"
        pred = rng.choice([gold, f"\\sqrt{{{a * a * b}}}", f"{a * b ** 0.5:.2f}"]) if correct else wrong
    else:
        c = rng.choice([3, 7, 9, 11])
        gold = f"\\frac{{{a * 4}}}{{{c}}}"
        pred = rng.choice([gold, f"{a * 4}/{c}", f"{a * 4 / c:.2f}"]) if correct else f"\\frac{{{a * 4 + 1}}}{{{c}}}"
    return "geometry3k", gold, pred


def virl_item(rng: random.Random, correct: bool):
    kind = rng.random()
    if kind < 0.45:
        letter = rng.choice("ABCD")
        gold = f"\\boxed{{{letter}}}"
        pred = rng.choice([letter, f"({letter})", f"{letter}. 12 cm"]) if correct else rng.choice(
            [c for c in "ABCD" if c != letter])
    elif kind < 0.8:
        value = rng.randint(1, 500)
        gold = f"\\boxed{{{value}}}"
        pred = rng.choice([str(value), f"{value}^\\circ", f"{value}.0"]) if correct else str(value + 2)
    elif kind < 0.93:
        p, q = rng.randint(1, 9), rng.randint(1, 9)
        gold = f"\\boxed{{x^2+{p}x+{q}}}"
        pred = rng.choice([f"x^2+{p}x+{q}", f"{q}+{p}x+x^2"]) if correct else f"x^2+{p + 1}x+{q}"
    else:
        word = rng.choice(["stop", "increasing", "parallel", "red"])
        gold = f"\\boxed{{{word}}}"
        pred = word if correct else word[::-1]
    return "virl39k", gold, pred


PATHOLOGICAL = [
    "9^9^9^9",
    "7" * 1_000_000,
    "{" * 10_000 + "}" * 10_000,
    "\\boxed{5",
    "5\x00\x00",
    "100000!",
]


def fresh_workers() -> None:
    """Cold caches, warm processes: worker start-up (~0.5 s) is paid once per process, not per batch."""
    bounded._POOL.close()
    bounded.clear_cache()
    with ThreadPoolExecutor(DEFAULT_WORKERS) as pool:  # overlapping requests start every worker
        list(pool.map(lambda i: bounded._POOL.compare(str(i), str(i), 60), range(DEFAULT_WORKERS)))


def make_mix(n: int, seed: int):
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        u = rng.random()
        make = virl_item if u < 0.8 else chartqa_item if u < 0.95 else geometry_item
        r = rng.random()
        if r < 0.02:
            source, gold, _ = make(rng, True)
            items.append((source, gold, f"<think>t</think><answer>{rng.choice(PATHOLOGICAL)}</answer>"))
            continue
        source, gold, pred = make(rng, r < 0.72)
        items.append((source, gold, respond(pred, rng, formatted=r < 0.97)))
    return items


# Pass the prescreen (no tower, exponents <= 10^4, short) but make sympy expand or simplify for seconds.
HOSTILE_ANSWERS = ["(x+y+z)^{{{}}}", "(x+y+z+w)^{{{}}}", "\\frac{{(x+1)^{{{}}}}}{{(x-1)^{{998}}}}"]


def hostile_item(i: int):
    template = HOSTILE_ANSWERS[i % len(HOSTILE_ANSWERS)]
    return "virl39k", "\\boxed{x^2+1}", f"<think>t</think><answer>{template.format(*[200 + i] * 2)}</answer>"


def correct_symbolic_item(i: int):
    # Distinct per i, so no answer cache hides the symbolic step.
    a = 2 + i
    return "virl39k", f"\\boxed{{{a}\\sqrt{{3}}}}", f"<think>t</think><answer>\\sqrt{{{3 * a * a}}}</answer>"


def timed_waits(items, timeout_s: float):
    """Submit every item at once (one thread each, in order); (seconds to result, acc) per item."""
    start = time.perf_counter()

    def run(item):
        result = verify(item[0], item[2], item[1], timeout_s=timeout_s)
        return time.perf_counter() - start, result["acc"]

    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(run, items))


def _p50_max(waits):
    return statistics.median(waits), max(waits)


def hostile_mode(n_hostile: int, n_correct: int, timeout_s: float) -> None:
    fresh_workers()
    alone = timed_waits([correct_symbolic_item(i) for i in range(n_correct)], timeout_s)
    bounded.clear_cache()
    mixed = timed_waits([hostile_item(i) for i in range(n_hostile)]
                        + [correct_symbolic_item(i) for i in range(n_correct)], timeout_s)
    hostile, beside = mixed[:n_hostile], mixed[n_hostile:]
    assert all(acc == 1 for _, acc in alone), "a correct answer failed without hostile neighbours"
    wrong = sum(acc != 1 for _, acc in beside)
    a50, amax = _p50_max([w for w, _ in alone])
    b50, bmax = _p50_max([w for w, _ in beside])
    h50, hmax = _p50_max([w for w, _ in hostile])
    print(f"{n_hostile} hostile + {n_correct} correct symbolic answers, {timeout_s:g} s budget each, "
          f"{os.cpu_count()} cores, {DEFAULT_WORKERS} idle symbolic workers kept")
    print(f"correct alone (baseline): p50 {a50 * 1e3:.0f} ms, max {amax * 1e3:.0f} ms")
    print(f"correct beside hostile: p50 {b50 * 1e3:.0f} ms, max {bmax * 1e3:.0f} ms "
          f"(x{b50 / a50:.1f} / x{bmax / amax:.1f} the baseline); scored wrong: {wrong} of {n_correct}")
    print(f"hostile: p50 {h50:.2f} s, max {hmax:.2f} s (x{h50 / timeout_s:.1f} / x{hmax / timeout_s:.1f} the budget); "
          f"scored right: {sum(acc for _, acc in hostile)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="verifications (512 prompts x 8 rollouts)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hostile", type=int, default=0, help="isolation mode: this many hostile answers")
    parser.add_argument("--correct", type=int, default=16, help="isolation mode: correct answers beside them")
    parser.add_argument("--timeout", type=float, default=bounded.DEFAULT_TIMEOUT_S, help="isolation mode: budget")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: 256 verifications on 4 threads, then 2 hostile beside 4 correct")
    args = parser.parse_args()
    if args.quick:
        args.n, args.threads = 256, 4
    if args.hostile:
        hostile_mode(args.hostile, args.correct, args.timeout)
        return

    items = make_mix(args.n, args.seed)
    fresh_workers()
    latencies, results = [], []
    start = time.perf_counter()
    for source, gold, response in items:
        t0 = time.perf_counter()
        results.append(verify(source, response, gold))
        latencies.append(time.perf_counter() - t0)
    sequential = time.perf_counter() - start

    fresh_workers()  # the batch pass starts cold too
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        threaded = list(pool.map(lambda item: verify(item[0], item[2], item[1]), items))
    batch = time.perf_counter() - start

    assert [r["acc"] for r in threaded] == [r["acc"] for r in results], "thread pool changed a result"
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    reasons = {}
    for r in results:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    symbolic = SYMBOLIC_CALLS[0] // 2  # both passes
    print(f"mix: {len(items)} responses, acc={statistics.mean(r['acc'] for r in results):.3f}, "
          f"format={statistics.mean(r['format'] for r in results):.3f}, "
          f"symbolic comparisons requested (cached or not): {symbolic}")
    print("reasons: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    print(f"latency p50: {q[49] * 1e3:.3f} ms, p99: {q[98] * 1e3:.3f} ms, max: {latencies[-1] * 1e3:.1f} ms")
    print(f"one thread: {len(items)} verifications in {sequential:.2f} s")
    print(f"thread pool ({args.threads} threads, {DEFAULT_WORKERS} idle symbolic workers kept, {os.cpu_count()} cores): "
          f"{len(items)} verifications in {batch:.2f} s")
    print(f"verifications/s per core: {len(items) / sequential:.0f}")
    if args.quick:
        hostile_mode(2, 4, args.timeout)


if __name__ == "__main__":
    main()
