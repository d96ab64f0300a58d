"""Data the project generates itself (no downloads) and readers for the files others publish.

ShapesWorld scenes (``shapes``), stick figures with named keypoints (``figures``), the domain packs
for industrial, medical and remote-sensing recipes (``domains``), COCO / LLaVA files in and out
(``coco``), all turned into the trainer's :class:`~.samples.Sample`.
"""
