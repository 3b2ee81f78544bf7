"""``train grpo``: TRL GRPOTrainer on top of the SFT model, rewarded by qmd_finetune.reward.

The policy gets its own small LoRA; the SFT weights (a merged model) stay frozen under it.
The dataset's ``query`` column reaches the reward as a keyword argument, so the reward
never has to parse the prompt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qmd_finetune.reward import grpo_reward
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
        max_completion_length=config.max_completion_length,
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
        reward_funcs=grpo_reward,
        args=args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=[loss_callback(log)],
    )
    quiet_printer(trainer)
    start = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - start
    return save_outputs(trainer, tokenizer, config, config.model, fmt, "grpo", seconds, log)
