import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifiers import verify
from verifiers.chartqa import relaxed_match


@pytest.mark.parametrize(
    "pred, labels, acc",
    [
        # numbers: exact, within 5 %, outside 5 %
        ("45", ["45"], 1),
        ("45.0", ["45"], 1),
        ("47", ["45"], 1),  # 4.4 % off
        ("48", ["45"], 0),  # 6.7 % off
        ("0.71", ["0.7"], 1),
        ("-3.2", ["-3.2"], 1),
        ("\u22123.2", ["-3.2"], 1),  # unicode minus
        ("0", ["0"], 1),
        ("0.01", ["0"], 0),  # target 0: exact only
        # percentages, treated the same on both sides
        ("45%", ["45"], 1),
        ("45", ["45%"], 1),
        ("45\\%", ["45"], 1),
        ("0.45", ["45%"], 0),
        # thousands separators, currency, trailing period, units
        ("1,000", ["1000"], 1),
        ("1000", ["1,000"], 1),
        ("12,345.6", ["12345.6"], 1),
        ("$12.5", ["12.5"], 1),
        ("\\$12.5", ["12.5"], 1),
        ("12.5.", ["12.5"], 1),
        ("14 years", ["14"], 1),
        ("\\text{14}", ["14"], 1),
        # years: strict by default
        ("2015", ["2010"], 0),
        ("2010", ["2010"], 1),
        # yes/no and text labels: case-insensitive exact
        ("Yes", ["yes"], 1),
        ("yes.", ["Yes"], 1),
        ("No", ["Yes"], 0),
        ("Democrats", ["democrats"], 1),
        ("Democrat", ["Democrats"], 0),
        ("  South  Korea ", ["South Korea"], 1),
        ("Korea", ["South Korea"], 0),
        # list labels: any element
        ("navy", ["Blue", "Navy"], 1),
        ("green", ["Blue", "Navy"], 0),
    ],
)
def test_chartqa_table(respond, pred, labels, acc):
    result = verify("chartqa", respond(pred), labels)
    assert result["acc"] == acc, result
    assert result["verifier"] == "chartqa"


def test_plain_rule_quirks_are_fixed_and_switchable(respond):
    # The benchmark's plain rule: 1,000 vs 1000 fails, 45% vs 45 fails, a year within 5 % passes.
    assert verify("chartqa", respond("2015"), ["2010"], strict_years=False)["acc"] == 1
    assert verify("chartqa", respond("2015"), ["2010"])["acc"] == 0
    assert verify("chartqa", respond("1,000"), ["1000"])["acc"] == 1
    assert verify("chartqa", respond("45%"), ["45"])["acc"] == 1
    # Only integer predictions against year-like targets are held exact; the rest stays relaxed.
    assert verify("chartqa", respond("1990.5"), ["2000"])["acc"] == 1
    assert verify("chartqa", respond("10500"), ["10000"])["acc"] == 1


def test_year_rule_only_for_year_like_targets(respond):
    assert verify("chartqa", respond("1999"), ["2000"])["acc"] == 0
    assert verify("chartqa", respond("2999"), ["3000"])["acc"] == 1  # 3000 is not a plausible year


def test_tolerance_is_configurable(respond):
    assert verify("chartqa", respond("48"), ["45"], relaxed_tolerance=0.1)["acc"] == 1
    assert verify("chartqa", respond("47"), ["45"], relaxed_tolerance=0.0)["acc"] == 0


def test_label_as_numpy_array_from_parquet(respond):
    # verl hands non-tensor columns over as numpy object arrays.
    assert verify("chartqa", respond("navy"), np.array(["Blue", "Navy"], dtype=object))["acc"] == 1
    assert verify("HuggingFaceM4/ChartQA", respond("7"), "7")["acc"] == 1


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.01, max_value=1e6, allow_nan=False), st.floats(min_value=-0.2, max_value=0.2))
def test_relaxed_accuracy_is_the_five_percent_band(target, rel):
    # "%.2f" targets have a decimal point, so the year rule never applies here.
    pred = target * (1 + rel)
    t, p = f"{target:.2f}", f"{pred:.6f}"
    ok, _ = relaxed_match(p, t)
    exact_rel = abs(float(p) - float(t)) / float(t)
    if abs(exact_rel - 0.05) > 1e-6:  # away from the float boundary
        assert ok == (exact_rel <= 0.05)
