"""Save an FSDP actor checkpoint with verl's real engine on CPU/gloo; record the trainer's weights.

    python tests/evaluation/merge_probe.py OUT_DIR

Builds CareActorRolloutRefWorker (role actor) on the tiny Qwen2 model through verl's FSDP2 engine,
moves every weight away from its initial value (so a merger that read the initial model would
fail), saves ``OUT_DIR/global_step_1/actor`` through the engine's checkpoint manager, and writes the
full state dict the engine holds to ``OUT_DIR/trainer_state.pt``. Own process: verl reads the
platform at import time and a process group is per process.
"""

import os
import socket
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import verl_cpu as cpu  # noqa: E402

cpu.install()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out = sys.argv[1]
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from recipe.care.main_care import compose_config
    from smoke.tiny_models import tiny_qwen2_dir
    from recipe.care.think_embedding_tap import CareActorRolloutRefWorker

    config = compose_config([
        f"actor_rollout_ref.model.path={tiny_qwen2_dir()}",
        *cpu.CPU_CONFIG_OVERRIDES,
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
        "data.train_batch_size=1",
        "trainer.n_gpus_per_node=1",
    ])
    worker = CareActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()
    module = worker.actor.engine.module if hasattr(worker, "actor") else worker.think_embedding_tap.engine.module
    torch.manual_seed(0)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn_like(param))
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    torch.save({k: v.detach().clone() for k, v in state.items()}, os.path.join(out, "trainer_state.pt"))
    actor = os.path.join(out, "global_step_1", "actor")
    worker.save_checkpoint(actor, global_step=1)
    with open(os.path.join(out, "latest_checkpointed_iteration.txt"), "w") as fh:
        fh.write("1")
    print("RESULT " + actor)


if __name__ == "__main__":
    main()
