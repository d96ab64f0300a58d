"""Data the project generates itself (no downloads): ShapesWorld scenes."""
