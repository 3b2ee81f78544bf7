"""``train grpo``: TRL GRPOTrainer on top of the SFT model, rewarded by qmd_finetune.reward.

The policy gets its own small LoRA; the SFT weights (a merged model) stay frozen under it.
The dataset's ``query`` column reaches the reward as a keyword argument, so the reward
never has to parse the prompt.

GRPO learns only from reward differences inside a group of completions. A group whose
completions all score the same, or completions cut off at ``max_completion_length`` (a cut
answer scores the same as its siblings), give no gradient: the run then spends hours
at reward_std 0 and grad_norm 0. So ``max_completion_length`` is fitted to the training
targets unless set, and the first ``health_check_steps`` are checked; a run with no signal
stops with a message that says why.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmd_finetune.reward import grpo_reward_for
from qmd_finetune.training.common import (
    Log,
    choose_runtime,
    dataset_dir,
    load_split,
    lora_config,
    loss_callback,
    prompt_format_for,
    quiet_printer,
    resume_checkpoint,
    save_outputs,
    starting_model,
)
from qmd_finetune.training.config import GRPORunConfig
from qmd_finetune.training.prompts import read_format

GRPO_COLUMNS = ["prompt", "query", "chat_template_kwargs"]
LENGTH_PERCENTILE = 99
LENGTH_HEADROOM = 1.25


class GRPOHealthError(ValueError):
    """The first steps showed that GRPO cannot learn with these settings."""


def target_token_lengths(root: Path, tokenizer: Any) -> list[int]:
    """Token counts of the assistant targets in ``train.jsonl`` (what a good completion is)."""
    lengths = []
    with open(root / "train.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                content = json.loads(line)["completion"][-1]["content"]
                lengths.append(len(tokenizer(content, add_special_tokens=False)["input_ids"]))
    return lengths


def fitted_completion_length(lengths: list[int]) -> int:
    """The 99th percentile of the targets' token counts plus 25% headroom, rounded up to 8."""
    if not lengths:
        raise ValueError("no training targets to fit max_completion_length to")
    ordered = sorted(lengths)
    rank = min(len(ordered) - 1, math.ceil(LENGTH_PERCENTILE / 100 * len(ordered)) - 1)
    return int(math.ceil(ordered[rank] * LENGTH_HEADROOM / 8) * 8)


@dataclass
class HealthCheck:
    """Reads TRL's logged GRPO metrics over the first steps and says whether there is signal."""

    steps: int
    max_clipped_ratio: float
    max_completion_length: int
    zero_std: list[float] = field(default_factory=list)
    clipped: list[float] = field(default_factory=list)
    failure: str | None = None

    def observe(self, step: int, logs: dict[str, Any]) -> bool:
        """Record one log; True when training must stop (``failure`` says why)."""
        if not self.steps or self.failure or "frac_reward_zero_std" not in logs:
            return False
        self.zero_std.append(float(logs["frac_reward_zero_std"]))
        self.clipped.append(float(logs.get("completions/clipped_ratio", 0.0)))
        if step < self.steps:
            return False
        clipped = sum(self.clipped) / len(self.clipped)
        if clipped > self.max_clipped_ratio:
            self.failure = (
                f"GRPO stopped after {step} steps: {clipped:.0%} of completions were cut at "
                f"max_completion_length={self.max_completion_length} tokens, so they cannot be "
                "told apart by the reward; raise max_completion_length (or leave it unset to fit "
                "it to the data) or train the SFT model longer so it ends its answers"
            )
        elif min(self.zero_std) >= 1.0:
            self.failure = (
                f"GRPO stopped after {step} steps: in every group all completions got the same "
                "reward (reward_std 0), so there is no learning signal; raise temperature or "
                "num_generations, or start from a model whose answers differ"
            )
        else:
            self.steps = 0
        return self.failure is not None


def health_callback(check: HealthCheck, log: Log) -> Any:
    from transformers import TrainerCallback

    class Health(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if logs and check.observe(state.global_step, logs):
                log(check.failure or "")
                control.should_training_stop = True

    return Health()


def run_grpo(config: GRPORunConfig, resume: bool = False, log: Log = print) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    root = dataset_dir(config.dataset)
    runtime = choose_runtime(config.device, config.precision)
    if config.torch_num_threads:
        torch.set_num_threads(config.torch_num_threads)
    base_path = starting_model(config.model)
    fmt = read_format(base_path) or prompt_format_for(root, config.model)
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    resume_from = resume_checkpoint(checkpoints, resume)

    train = load_split(root, "train", GRPO_COLUMNS, config.max_train_samples, config.seed)
    log(f"grpo: {config.model} on {len(train)} prompts from {root} ({runtime.device}, bf16={runtime.bf16})")

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    lengths = target_token_lengths(root, tokenizer)
    fitted = fitted_completion_length(lengths)
    max_completion_length = config.max_completion_length or fitted
    if config.max_completion_length is None:
        log(f"grpo: max_completion_length {fitted} (p{LENGTH_PERCENTILE} of {len(lengths)} targets + 25%)")
    elif config.max_completion_length < fitted / LENGTH_HEADROOM:
        log(
            f"grpo: warning: max_completion_length {config.max_completion_length} is below the "
            f"p{LENGTH_PERCENTILE} target length ({math.ceil(fitted / LENGTH_HEADROOM)} tokens); "
            "good answers will be cut"
        )
    check = HealthCheck(config.health_check_steps, config.max_clipped_ratio, max_completion_length)

    args = GRPOConfig(
        output_dir=str(checkpoints),
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        generation_batch_size=config.generation_batch_size,
        max_completion_length=max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        use_cpu=runtime.use_cpu,
        bf16=runtime.bf16,
        fp16=runtime.fp16,
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        report_to=[] if config.report_to == "none" else [config.report_to],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=grpo_reward_for(config.rubric),
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[loss_callback(log), health_callback(check, log)],
    )
    quiet_printer(trainer)
    start = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - start
    if check.failure:
        raise GRPOHealthError(check.failure)
    return save_outputs(trainer, tokenizer, config, config.model, fmt, "grpo", seconds, log)
