"""dpcore: differentially private LoRA fine-tuning for radiology report classification."""

__version__ = "0.1.0"
