"""RGR repairs and vLLM's prefix cache, measured on vLLM's own engine (its CPU build on a CPU machine).

A repair's prompt is its failure's prompt, image and think prefix plus the cue
(``recipe.care.rgr.build_repair_request``). The replica that decoded the failure holds that prefix in
its prefix cache; another replica does not. ``care.rgr.routing: sticky`` sends the repair under its
failure's request id, so verl's router keeps it on the failure's replica (tests/recipe/care/
test_repair_scheduling.py checks the routing with verl's real router). This script measures what that
is worth on the engine: the share of each repair's prompt tokens vLLM served from its cache
(``RequestOutput.num_cached_tokens``) on the failure's engine ("sticky"), against the same engine after
``reset_prefix_cache`` (what a replica that never saw the failure holds: "other replica").

    python benchmarks/bench_rgr_prefix_cache.py [--prompts 8] [--quick]

The tiny random Qwen2.5-VL of smoke/tiny_models.py with drawn images; the failure's think prefix
is the first half of its sampled response (a random model writes no tags). Needs vLLM (on CPU:
``bash scripts/install_cpu_stack.sh``); the engine starts in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESPONSE_LENGTH = 256
FAILURE_TOKENS = 96
# vLLM caches whole KV blocks only. Its CPU build defaults to 128-token blocks (a GPU's to 16), which
# would hold none of these short prompts: 32 is the smallest size the CPU backend prefers.
BLOCK_SIZE = 32


def draw_bars(n_bars: int, seed: int):
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (112, 84), "white")
    draw = ImageDraw.Draw(image)
    width = 100 // n_bars
    for i in range(n_bars):
        height = rng.randint(15, 69)
        draw.rectangle([8 + i * width, 78 - height, 6 + (i + 1) * width, 78], fill=(31, 119, 180))
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="4 prompts")
    args = parser.parse_args()
    n = 4 if args.quick else args.prompts
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    # vLLM logs to stdout, its shutdown notices after the figures: keep stdout to this script's lines
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    from recipe.care.care_config import RGRConfig
    from recipe.care.rgr import GroupMember, RepairTokens, build_repair_request
    from smoke.tiny_models import tiny_qwen25_vl_dir

    path = str(tiny_qwen25_vl_dir())
    processor = AutoProcessor.from_pretrained(path)
    prompts, images = [], []
    for i in range(n):
        image = draw_bars(2 + i % 5, seed=i)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": (
            f"Question {i}: how many bars are in the chart? Think in <think></think>, answer in <answer></answer>.")}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        prompts.append(processor(text=[text], images=[image], return_tensors="pt")["input_ids"][0].tolist())
        images.append(image)

    started = time.perf_counter()
    llm = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=1024, enable_prefix_caching=True,
              limit_mm_per_prompt={"image": 1}, seed=0, block_size=BLOCK_SIZE)
    print(f"engine: vLLM {__import__('vllm').__version__}, {BLOCK_SIZE}-token KV blocks, started in "
          f"{time.perf_counter() - started:.0f} s")

    def generate(token_prompts, max_tokens):
        requests = [{"prompt_token_ids": ids, "multi_modal_data": {"image": image}}
                    for ids, image in zip(token_prompts, images)]
        params = [SamplingParams(max_tokens=m, temperature=1.0, seed=i) for i, m in enumerate(max_tokens)]
        return llm.generate(requests, params, use_tqdm=False)

    failures = generate(prompts, [FAILURE_TOKENS] * n)
    tokens = RepairTokens.build(processor.tokenizer, RGRConfig())
    repairs = []
    for ids, image, out in zip(prompts, images, failures):
        response = list(out.outputs[0].token_ids)
        member = GroupMember(prompt_ids=ids, response_ids=response, response_mask=[1] * len(response),
                             response_logprobs=None, acc=0.0, multi_modal_data={"image": [image]})
        repairs.append(build_repair_request(member, 0, max(1, len(response) // 2), tokens, RESPONSE_LENGTH))

    def cached_share(outputs):
        return [out.num_cached_tokens / len(out.prompt_token_ids) for out in outputs]

    sticky = cached_share(generate([r.prompt_ids for r in repairs], [max(1, r.max_tokens) for r in repairs]))
    llm.reset_prefix_cache()
    other = cached_share(generate([r.prompt_ids for r in repairs], [max(1, r.max_tokens) for r in repairs]))
    lengths = [len(r.prompt_ids) for r in repairs]
    print(f"repairs: {n}, repair prompt tokens: mean {statistics.mean(lengths):.0f} "
          f"(prompt + image {statistics.mean(len(p) for p in prompts):.0f}, think prefix, cue {len(tokens.cue_ids)})")
    print(f"cached share of the repair prompt, other replica: mean {statistics.mean(other):.3f}, "
          f"min {min(other):.3f}, max {max(other):.3f}")
    print(f"cached share of the repair prompt, sticky (the failure's replica): mean {statistics.mean(sticky):.3f}, "
          f"min {min(sticky):.3f}, max {max(sticky):.3f}")
    print(f"repair prefix-cache hit rate (sticky): {statistics.mean(sticky):.3f}")


if __name__ == "__main__":
    main()
