"""Training: prepare, sft, grpo, eval, export (TRL + PEFT)."""
