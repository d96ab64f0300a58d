"""visionllm2.recipes."""
