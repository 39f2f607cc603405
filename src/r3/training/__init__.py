"""Training: supervised fine-tuning for priming (`sft`) and the reflection RL trainers."""
