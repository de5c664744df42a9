"""`slidesam train`: LoRA fine-tuning of a three-slice model with the hybrid 3D/2D loss.

dataset.py  image/label pairs -> three-slice training windows (checked before training starts)
prompts.py  simulated prompts: jittered boxes, include and exclude clicks
losses.py   20 x focal + Dice over the supervised slices, plus MSE on the IoU head
trainer.py  the optimisation loop (peft LoRA, AMP, resumable, deterministic, DDP optional)
cli.py      the `train` sub-command
"""
