"""``train sft``: TRL SFTTrainer + a PEFT LoRA, loss on the completion only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
from qmd_finetune.training.config import SFTRunConfig

SFT_COLUMNS = ["prompt", "completion", "chat_template_kwargs"]


def run_sft(config: SFTRunConfig, resume: bool = False, log: Log = print) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    root = dataset_dir(config.dataset)
    runtime = choose_runtime(config.device, config.precision)
    if config.torch_num_threads:
        torch.set_num_threads(config.torch_num_threads)
    fmt = prompt_format_for(root, config.model)
    base_path = starting_model(config.model)
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    resume_from = resume_checkpoint(checkpoints, resume)

    train = load_split(root, "train", SFT_COLUMNS, config.max_train_samples, config.seed)
    val = load_split(root, "val", SFT_COLUMNS, None, config.seed) if config.eval_steps else None
    log(f"sft: {config.model} on {len(train)} rows from {root} ({runtime.device}, bf16={runtime.bf16})")

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)

    args = SFTConfig(
        output_dir=str(checkpoints),
        max_steps=config.max_steps,
        num_train_epochs=config.num_train_epochs,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        completion_only_loss=True,
        packing=config.packing,
        padding_free=config.packing,
        use_cpu=runtime.use_cpu,
        bf16=runtime.bf16,
        fp16=runtime.fp16,
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if val is not None else "no",
        eval_steps=config.eval_steps,
        seed=config.seed,
        report_to=[] if config.report_to == "none" else [config.report_to],
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=lora_config(config) if config.finetune == "lora" else None,
        callbacks=[loss_callback(log)],
    )
    quiet_printer(trainer)
    start = time.monotonic()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - start
    return save_outputs(trainer, tokenizer, config, config.model, fmt, "sft", seconds, log)
