import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import verifiers
from verifiers import RESULT_KEYS, UnknownDataSourceError, known_sources, resolve_source, verify


@pytest.mark.parametrize(
    "source, name",
    [
        ("chartqa", "chartqa"), ("geometry3k", "geometry3k"), ("virl39k", "virl39k"),
        ("HuggingFaceM4/ChartQA", "chartqa"), ("hiyouga/geometry3k", "geometry3k"), ("TIGER-Lab/ViRL39K", "virl39k"),
        ("ChartQA", "chartqa"), (" tiger-lab/virl39k ", "virl39k"),
    ],
)
def test_sources_and_hub_ids_resolve(source, name):
    assert resolve_source(source) == name


def test_unknown_source_is_a_clear_error_naming_the_known_ones(respond):
    with pytest.raises(UnknownDataSourceError) as info:
        verify("openai/gsm8k", respond("4"), "4")
    message = str(info.value)
    assert "openai/gsm8k" in message
    for source in ("chartqa", "geometry3k", "virl39k", "huggingfacem4/chartqa", "hiyouga/geometry3k",
                   "tiger-lab/virl39k"):
        assert source in message
    assert isinstance(info.value, ValueError)
    assert set(known_sources()) >= {"chartqa", "geometry3k", "virl39k"}


@pytest.mark.parametrize("source", ["chartqa", "geometry3k", "virl39k"])
def test_every_result_has_the_same_keys_and_types(respond, source):
    gold = ["5"] if source == "chartqa" else "\\boxed{5}" if source == "virl39k" else "5"
    for response in (respond("5"), respond("6"), "garbage", "", respond("\\boxed{5"), respond("9^9^9^9")):
        result = verify(source, response, gold)
        assert tuple(result) == RESULT_KEYS
        assert type(result["acc"]) is int and result["acc"] in (0, 1)
        assert type(result["format"]) is int and result["format"] in (0, 1)
        assert type(result["score"]) is float
        assert isinstance(result["pred"], str) and isinstance(result["reason"], str) and result["reason"]
        assert result["verifier"] == source


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0.0, max_value=1.0), st.booleans(), st.booleans())
def test_score_is_weighted_acc_plus_format(w, correct, formatted):
    answer = "5" if correct else "6"
    response = f"<think>t</think><answer>{answer}</answer>" if formatted else f"\\boxed{{{answer}}}"
    result = verify("chartqa", response, ["5"], format_weight=w)
    assert (result["acc"], result["format"]) == (int(correct), int(formatted))
    assert result["score"] == pytest.approx((1 - w) * result["acc"] + w * result["format"])


def test_default_weight_is_point_one(respond):
    assert verify("chartqa", respond("6"), ["5"])["score"] == pytest.approx(0.1)
    assert verify("chartqa", respond("5"), ["5"])["score"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_format_weight_out_of_range(respond, bad):
    with pytest.raises(ValueError, match="format_weight"):
        verify("chartqa", respond("5"), ["5"], format_weight=bad)


@pytest.mark.parametrize("gold", [None, "", [], ["", None]])
def test_missing_ground_truth_is_a_data_error(respond, gold):
    with pytest.raises(ValueError, match="ground_truth"):
        verify("geometry3k", respond("5"), gold)


def test_only_chartqa_takes_several_labels(respond):
    with pytest.raises(ValueError, match="one ground truth"):
        verify("geometry3k", respond("5"), ["5", "6"])
    assert verify("geometry3k", respond("5"), ["5"])["acc"] == 1


def test_non_text_response_scores_zero_without_raising():
    result = verify("chartqa", None, ["5"])
    assert (result["acc"], result["format"], result["reason"]) == (0, 0, "response_not_text")


def test_verifier_bug_is_counted_and_logged_not_raised(respond, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(verifiers.VERIFIERS["geometry3k"], "verify_answer", broken)
    with caplog.at_level(logging.ERROR, logger="verifiers"):
        result = verify("geometry3k", respond("5"), "5")
    assert (result["acc"], result["format"], result["reason"]) == (0, 1, "internal_error:RuntimeError")
    assert "geometry3k verifier failed" in caplog.text


def test_long_predictions_are_truncated_in_the_result(respond):
    result = verify("chartqa", respond("x" * 5000), ["5"])
    assert result["reason"] == "answer_too_long" and len(result["pred"]) == 200


def test_an_unparseable_gold_is_its_own_reason_not_a_bad_prediction():
    from verifiers import GOLD_UNPARSEABLE, is_ungraded, verify

    bad_gold = verify("geometry3k", "<think>t</think><answer>x+1</answer>", "\\frac{{{")
    bad_pred = verify("geometry3k", "<think>t</think><answer>\\frac{{{</answer>", "x+1")
    assert bad_gold["reason"] == GOLD_UNPARSEABLE and is_ungraded(bad_gold["reason"])
    assert bad_pred["reason"] == "unparseable" and not is_ungraded(bad_pred["reason"])
    assert verify("geometry3k", "<answer>x+1</answer>", "9^9^9^9")["reason"] == GOLD_UNPARSEABLE  # prescreened gold
