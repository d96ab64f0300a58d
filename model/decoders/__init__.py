"""Task decoders behind the super link.

:func:`build_decoders` is the one place a config's decoder sub-configs become modules, under the
released checkpoint's attribute names (``gdino``, ``unipose``, ``sd``, ``ip2p``). Each decoder
issue adds its builder here; a sub-config without a builder yet builds nothing, and checkpoints
and ``convert --check`` then report that decoder's keys as unmapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import DecoderOutput, LinkStates, TaskDecoder

if TYPE_CHECKING:
    from ..config import VisionLLMv2Config

__all__ = ["DecoderOutput", "LinkStates", "TaskDecoder", "build_decoders"]


def build_decoders(config: VisionLLMv2Config) -> dict[str, TaskDecoder]:
    """The decoders this config asks for that this version of the package can build."""
    decoders: dict[str, TaskDecoder] = {}
    if config.detection is not None:
        from .detection import DetectionDecoder

        decoders["gdino"] = DetectionDecoder(config.detection, config.llm.hidden_size)
    if config.pose is not None:
        from .pose import PoseDecoder

        decoders["unipose"] = PoseDecoder(config.pose, config.llm.hidden_size)
    if config.generation is not None:
        from .diffusion import GenerationDecoder

        decoders["sd"] = GenerationDecoder(config.generation, config.llm.hidden_size)
    if config.editing is not None:
        from .diffusion import EditingDecoder

        decoders["ip2p"] = EditingDecoder(config.editing, config.llm.hidden_size)
    return decoders
