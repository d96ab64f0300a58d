"""VisionLLM v2 SDK: one multimodal LLM routed to task decoders through a super link.

Sub-packages: ``visionllm2.model`` (the network), ``visionllm2.sdk`` (sessions and typed
results), ``visionllm2.recipes`` (workflows and the command line), ``visionllm2.agents``
(LangChain tools).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("visionllm2")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
