"""The offline Qwen3-VL tokenizer and processor (smoke/tiny_models.py) and CARE's spans on it."""

import pytest
import torch

from recipe.care.spans import compute_response_spans
from smoke.tiny_models import QWEN3_END_THINK_ID, QWEN3_THINK_ID, qwen3_tokenizer_dir, tiny_qwen25_vl_dir


@pytest.fixture(scope="module")
def tokenizer():
    from smoke.tiny_models import load_qwen25_tokenizer

    return load_qwen25_tokenizer()


@pytest.fixture(scope="module")
def qwen3_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_tokenizer_dir()))


def test_qwen3_vocabulary_extends_qwen25_with_single_token_think(qwen3_tokenizer, tokenizer):
    tok = qwen3_tokenizer
    assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [QWEN3_THINK_ID, QWEN3_END_THINK_ID]
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|image_pad|>", "<|vision_start|>"]) == [151645, 151655, 151652]
    text = "Count the bars: 3 tall, 2 short. 中文 ok"
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]  # the same BPE as Qwen2.5
    assert len(tokenizer("<think>", add_special_tokens=False)["input_ids"]) > 1  # several tokens in Qwen2.5
    assert tok.decode([QWEN3_THINK_ID]) == "<think>"


def test_qwen3_vl_chat_template_has_no_default_system_prompt(qwen3_tokenizer):
    content = [{"type": "image"}, {"type": "text", "text": "How many bars?"}]
    text = qwen3_tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                               tokenize=False)
    assert text == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many bars?<|im_end|>\n<|im_start|>assistant\n"
    with_system = qwen3_tokenizer.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                                      add_generation_prompt=False, tokenize=False)
    assert with_system == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"


def test_spans_on_single_token_think(qwen3_tokenizer, tokenizer):
    response = "<think>two bars and one more</think><answer>3</answer>"
    for tok in (qwen3_tokenizer, tokenizer):
        ids = torch.tensor([tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]])
        spans = compute_response_spans(tok, ids, torch.ones_like(ids))
        think_text = tok.decode(ids[0][spans.think_mask[0]])
        answer_text = tok.decode(ids[0][spans.answer_mask[0]])
        assert think_text.strip() == "two bars and one more" and answer_text == "3", (type(tok).__name__, think_text)
    q3 = qwen3_tokenizer(response, add_special_tokens=False)["input_ids"]
    assert q3[0] == QWEN3_THINK_ID and QWEN3_END_THINK_ID in q3


def test_tiny_qwen3_vl_processor_and_model():
    from transformers import AutoConfig, AutoProcessor

    from smoke.tiny_models import tiny_qwen3_vl_dir

    path = tiny_qwen3_vl_dir()
    assert AutoConfig.from_pretrained(str(path)).model_type == "qwen3_vl"
    processor = AutoProcessor.from_pretrained(str(path))
    assert type(processor).__name__ == "Qwen3VLProcessor" and processor.image_processor.patch_size == 16
    assert path != tiny_qwen25_vl_dir()
