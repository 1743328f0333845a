"""Training (rules base_model, finetune_domain, finetune_joint): the training loop shared by fine-tuning and
pretraining (loop), and the demo's foundation, pretrained or copied (foundation)."""
