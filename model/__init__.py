"""visionllm2.model."""
