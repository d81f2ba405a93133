"""The model at run time: export, the inference runtime, the live pipeline, sensor health and
online fine-tuning."""
