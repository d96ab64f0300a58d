"""LangChain tools bound to a :class:`~visionllm2.sdk.Session`, one per capability.

    toolkit = VisionToolkit(session, allowed_dirs=["data", "out"])
    tools = toolkit.get_tools()      # detect, ground, segment, pose, generate, edit, chat, load_image, save_result,
                                     # and the recipe tools (detect_segment_edit, inspect_parts, …)
    message = tools[0].invoke({"name": "detect", "args": {"classes": ["red circle"]}, "id": "1", "type": "tool_call"})
    message.content                  # "turn0.boxes: 3 boxes on image1 (128×128): red circle ×3 (scores …)"
    message.artifact                 # the Boxes themselves

Every tool answers ``response_format="content_and_artifact"``: a short text for the LLM (counts,
labels, the ids to use next) and the typed result (``Boxes``, ``Masks``, ``Poses``, ``Images``,
the ``Turn`` of a chat) as the artifact. Images and results travel by id (see
:mod:`visionllm2.agents.schemas`). Bad arguments and failed turns come back as a ``ToolMessage``
with ``status="error"`` and the SDK's expected-vs-got text; the session is left as it was.
Only tools the model can serve are offered (no ``generate`` without a ``[GEN]`` decoder); file
tools only when directories are allowed. The recipes of :mod:`visionllm2.recipes` come as tools
too (:mod:`.recipe_tools`); their results get ``"recipe<N>.<kind>"`` ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from PIL import Image
from pydantic import ValidationError

from visionllm2.model import tokens as T
from visionllm2.model.errors import describe
from visionllm2.sdk import Box, Boxes, Images, Masks, Point, Poses, Result, Turn
from visionllm2.sdk.errors import InvalidInputError, InvalidPromptError, VisionLLMError

from . import schemas as S
from .paths import PathPolicy
from .registry import Registry, kind_of, result_id
from .summary import summarise

_DIFFUSION_KEYS = ("num_inference_steps", "guidance_scale", "image_guidance_scale", "height", "width")


@dataclass(frozen=True)
class LoadedImage:
    """Artifact of ``load_image``: the session's id for the picture, where it came from, its size."""

    image_id: str
    path: Path
    size: tuple[int, int]


@dataclass(frozen=True)
class SavedFile:
    """Artifact of ``save_result``: the file written and the id it holds."""

    path: Path
    source: str


@dataclass(frozen=True)
class _Spec:
    name: str
    schema: type[S.ToolArgs]
    run: Callable[[Any], tuple[str, Any]]
    description: str
    outputs: tuple[str, ...]
    route: str | None = None  # the decoder route the tool needs; None: any model serves it
    files: bool = False       # reads or writes files: offered only when directories are allowed


class VisionToolkit:
    """The vision tools for one session.

    Args:
        session: the :class:`~visionllm2.sdk.Session` the tools act on.
        allowed_dirs: directories ``load_image`` may read and ``save_result`` may write (see
            :class:`~visionllm2.agents.paths.PathPolicy`); none means no file tools.
        extra_tools: more LangChain tools offered beside these (e.g. recipe tools). Their
            ``metadata["outputs"]``, if set, lists the output kinds a plan may reference.
        diffusion: default options of ``generate`` / ``edit`` (``num_inference_steps``,
            ``guidance_scale``, ``image_guidance_scale``, ``height``, ``width``).
        max_prompts: most objects ``segment`` takes from result ids in one call (the best-scoring).
        recipes: offer the recipe tools (``detect_segment_edit``, ``in_context_segment``,
            ``inspect_parts``, ``measure_structures``, ``map_objects``) the model can serve.
        any_class: let the domain recipe tools take any class word, not only their domain's
            vocabulary (what the shipped model was trained on); for a model that knows other words.
    """

    def __init__(self, session: Any, allowed_dirs: Sequence[str | os.PathLike[str]] = (),
                 extra_tools: Sequence[BaseTool] = (), diffusion: dict[str, Any] | None = None,
                 max_prompts: int = 8, recipes: bool = True, any_class: bool = False) -> None:
        unknown = sorted(set(diffusion or {}) - set(_DIFFUSION_KEYS))
        if unknown:
            raise InvalidInputError(f"diffusion: expected options among {list(_DIFFUSION_KEYS)}, got {unknown}")
        if not (isinstance(max_prompts, int) and max_prompts >= 1):
            raise InvalidInputError(f"max_prompts: expected an int >= 1, got {max_prompts!r}")
        self.session = session
        self.paths = PathPolicy(allowed_dirs)
        self.registry = Registry(session)
        self.diffusion = dict(diffusion or {})
        self.max_prompts = max_prompts
        self._image_of: dict[str, str] = {}  # images result id → the session image made from it
        self._recipe_outputs: dict[int, tuple[Any, dict[str, str]]] = {}  # id(recipe artifact) → it, its outputs
        self.any_class = bool(any_class)
        self.routes = set(session.model.decoder_of_route)
        specs = self._specs()
        if recipes:
            from .recipe_tools import RecipeTools  # the recipes (shapely, supervision) load only when wanted

            specs += RecipeTools(self).specs()
        self._tools = [self._tool(spec) for spec in specs
                       if (spec.route is None or spec.route in self.routes)
                       and (not spec.files or self.paths.roots)]
        names = [t.name for t in self._tools]
        for tool in extra_tools:
            if not isinstance(tool, BaseTool):
                raise InvalidInputError(f"extra_tools: expected LangChain BaseTool instances, got {describe(tool)}")
            if tool.name in names:
                raise InvalidInputError(f"extra_tools: expected tool names other than {names}, got {tool.name!r} twice")
            names.append(tool.name)
            self._tools.append(tool)

    # ------------------------------------------------------------------ public
    def get_tools(self) -> list[BaseTool]:
        """The tools: the vision tools this model can serve, then the extra tools."""
        return list(self._tools)

    def tool(self, name: str) -> BaseTool:
        """The tool called ``name``."""
        for tool in self._tools:
            if tool.name == name:
                return tool
        raise InvalidInputError(f"tool: expected one of {[t.name for t in self._tools]}, got {name!r}")

    def result(self, ref: str) -> Result:
        """The result a result id (``"turn0.boxes"``, ``"turn0.boxes[1]"``) names."""
        return self.registry.result(ref)

    def outputs_of(self, artifact: Any) -> dict[str, str]:
        """What a tool's artifact offers later steps: output kind → id (or text, for a chat's answer)."""
        if isinstance(artifact, LoadedImage):
            return {"image": artifact.image_id}
        if isinstance(artifact, SavedFile):
            return {"path": str(artifact.path)}
        if id(artifact) in self._recipe_outputs and self._recipe_outputs[id(artifact)][0] is artifact:
            return dict(self._recipe_outputs[id(artifact)][1])
        turn = artifact if isinstance(artifact, Turn) else None
        if isinstance(artifact, Result) and artifact.turn is not None and artifact.turn < len(self.session.turns):
            turn = self.session.turns[artifact.turn]
        if turn is None:
            return {}
        outputs = {result.kind: result_id(result) for result in reversed(turn.results)}
        return {**outputs, "text": turn.text} if isinstance(artifact, Turn) else outputs

    def describe_images(self) -> str:
        """One line per session image, for a system prompt."""
        current = self.session.current_image
        return "; ".join(f"{i} ({r.picture.size[0]}×{r.picture.size[1]}{', current' if i == current else ''})"
                         for i, r in self.session.images.items()) or "none loaded yet"

    # ------------------------------------------------------------------ tool construction
    def _tool(self, spec: _Spec) -> StructuredTool:
        def run(**kwargs: Any) -> tuple[str, Any]:
            args = spec.schema.model_validate(kwargs)
            try:
                return spec.run(args)
            except VisionLLMError as error:
                raise ToolException(f"{type(error).__name__}: {error}") from error

        return StructuredTool(
            name=spec.name, description=spec.description, args_schema=spec.schema, func=run,
            response_format="content_and_artifact", handle_tool_error=True,
            handle_validation_error=lambda error: validation_message(spec.name, spec.schema, error),
            metadata={"outputs": list(spec.outputs), "route": spec.route},
        )

    def _specs(self) -> list[_Spec]:
        return [
            _Spec("detect", S.DetectArgs, self._detect, (
                "Find every instance of the named classes in an image. Returns boxes (result id turn<N>.boxes) "
                "with labels and scores."), ("boxes",), T.DET),
            _Spec("ground", S.GroundArgs, self._ground, (
                "Find the one object a referring expression describes. Returns one box (turn<N>.boxes)."),
                ("boxes",), T.GRD),
            _Spec("segment", S.SegmentArgs, self._segment, (
                "Pixel masks: of every instance of classes, or of the objects given as prompts (result ids of earlier "
                "boxes, e.g. 'turn0.boxes', or pixel points/boxes). Returns masks (turn<N>.masks)."),
                ("masks", "boxes"), T.SEG),
            _Spec("pose", S.PoseArgs, self._pose, (
                "Keypoints of people (COCO's 17) or of other classes with named keypoints. Returns poses "
                "(turn<N>.poses)."), ("poses",), T.POSE),
            _Spec("generate", S.GenerateArgs, self._generate, (
                "Create a new image from a caption. Returns an image result (turn<N>.images) usable as image_id."),
                ("images",), T.GEN),
            _Spec("edit", S.EditArgs, self._edit, (
                "Change an image by an instruction, optionally only inside earlier masks or boxes (region_id). "
                "Returns the edited image (turn<N>.images) usable as image_id."), ("images",), T.EDIT),
            _Spec("chat", S.ChatArgs, self._chat, (
                "Ask the vision model a free question about an image, or to describe it. Returns its answer."),
                ("text",)),
            _Spec("load_image", S.LoadImageArgs, self._load_image, (
                "Load an image file from the allowed directories. Returns its image id ('image<N>')."), ("image",),
                files=True),
            _Spec("save_result", S.SaveResultArgs, self._save_result, (
                "Save a result or image to a file in the allowed directories: .png/.jpg draws it, .json keeps it "
                "losslessly."), ("path",), files=True),
        ]

    # ------------------------------------------------------------------ ids → session inputs
    def _image(self, image_id: str | None, default: str | None = None) -> tuple[Any, list[str]]:
        """What a session verb takes for ``image``, and the ids it came from."""
        image_id = image_id or default
        if image_id is None:
            current = self.session.current_image
            if current is None:
                raise InvalidInputError("image_id: expected an image, got none: load one with load_image first")
            return current, [current]
        if image_id in self.session.images:
            return image_id, [image_id]
        if kind_of(image_id) is not None:
            result = self.registry.result(image_id)
            if not isinstance(result, Images):
                raise InvalidInputError(
                    f"image_id: expected an image id or an images result id, got {image_id!r}, which holds "
                    f"{type(result).__name__}; to look at the image those came from pass "
                    f"'{self.registry.image_of(image_id)}'")
            if image_id in self._image_of and self._image_of[image_id] in self.session.images:
                return self._image_of[image_id], [image_id]
            return result.images[0], [image_id]
        raise InvalidInputError(
            f"image_id: expected one of {sorted(self.session.images) or '[] (load an image first)'} or an images "
            f"result id such as 'turn3.images', got {image_id!r}")

    def _adopt(self, ref: str, picture: Image.Image) -> str:
        """The session image for the images result ``ref`` (``picture``), added to the session when new."""
        if ref not in self._image_of or self._image_of[ref] not in self.session.images:
            self._image_of[ref] = self.session.set_image(picture)
            self.registry.add_image(self._image_of[ref], "image_of", {"result_id": ref}, [ref])
        return self._image_of[ref]

    def _record(self, turn: Turn, tool: str, args: S.ToolArgs, inputs: list[str],
                replaced: Result | None = None) -> list[str]:
        for ref in inputs:  # an images result looked at for the first time became a session image
            if kind_of(ref) == "images" and ref not in self._image_of and turn.image_id:
                self._image_of[ref] = turn.image_id
                self.registry.add_image(turn.image_id, "image_of", {"result_id": ref}, [ref])
        return self.registry.add_turn(turn, tool, args.model_dump(exclude_none=True), inputs, replaced)

    def _answer(self, turn: Turn, ids: list[str], main: str) -> tuple[str, Result | None]:
        """The summary of every result of ``turn``, and its result of kind ``main`` as the artifact."""
        results = {rid: self.registry.result(rid) for rid in ids}
        lines = [summarise(rid, result, turn.image_id) for rid, result in results.items()]
        return "\n".join(lines) or f"turn{turn.index}: no {main}", results.get(f"turn{turn.index}.{main}")

    def _regions(self, refs: Sequence[str]) -> tuple[list[Any], list[float], str | None]:
        """Single-item results to use as visual prompts, their scores, and the image they were found on."""
        prompts, scores, image_ids = [], [], set()
        for ref in refs:
            result = self.registry.result(ref)
            if not isinstance(result, (Boxes, Masks, Poses)):
                raise InvalidPromptError(
                    f"prompts: expected ids of boxes, masks or poses, got {ref!r}, which holds {type(result).__name__}")
            if len(result) == 0:
                raise InvalidPromptError(
                    f"prompts: expected objects, got {ref!r}, which is empty (nothing was found for {result.asked}); "
                    "detect with other class names first")
            image_ids.add(self.registry.image_of(ref))
            prompts += list(result)
            scores += result.scores.tolist()
        if len(image_ids) > 1:
            raise InvalidPromptError(f"prompts: expected results from one image, got results from {sorted(image_ids)}")
        return prompts, scores, next(iter(image_ids), None)

    # ------------------------------------------------------------------ the tools
    def _detect(self, args: S.DetectArgs) -> tuple[str, Result]:
        image, inputs = self._image(args.image_id)
        turn = self.session.detect(args.classes, image=image)
        return self._answer(turn, self._record(turn, "detect", args, inputs), "boxes")

    def _ground(self, args: S.GroundArgs) -> tuple[str, Result]:
        image, inputs = self._image(args.image_id)
        turn = self.session.ground(args.expression, image=image)
        return self._answer(turn, self._record(turn, "ground", args, inputs), "boxes")

    def _segment(self, args: S.SegmentArgs) -> tuple[str, Result]:
        if args.classes is not None:
            image, inputs = self._image(args.image_id)
            turn = self.session.segment(args.classes, image=image)
            return self._answer(turn, self._record(turn, "segment", args, inputs), "masks")
        refs = [p for p in args.prompts or [] if isinstance(p, str)]
        prompts, scores, found_on = self._regions(refs)
        for point in (p for p in args.prompts or [] if not isinstance(p, str)):
            prompts.append(Point(*point) if len(point) == 2 else Box(*point))
            scores.append(1.0)
        image, inputs = self._image(args.image_id, default=found_on)
        if found_on is not None and inputs[0] != found_on:
            raise InvalidPromptError(
                f"prompts: expected objects on the image segmented ({inputs[0]}), got objects found on {found_on}; "
                f"leave image_id out or pass '{found_on}'")
        dropped = ""
        if len(prompts) > self.max_prompts:
            keep = sorted(np.argsort(-np.asarray(scores), kind="stable")[: self.max_prompts].tolist())
            dropped = f" (kept the {self.max_prompts} best-scoring of {len(prompts)} objects)"
            prompts = [prompts[k] for k in keep]
        turn = self.session.segment(prompts=prompts, image=image)
        content, masks = self._answer(turn, self._record(turn, "segment", args, inputs + refs), "masks")
        return content + dropped, masks

    def _pose(self, args: S.PoseArgs) -> tuple[str, Result]:
        image, inputs = self._image(args.image_id)
        turn = self.session.pose(args.classes, keypoints=args.keypoints, image=image)
        return self._answer(turn, self._record(turn, "pose", args, inputs), "poses")

    def _diffusion_options(self, seed: int, steps: int | None) -> dict[str, Any]:
        options = {**self.diffusion, "seed": seed}
        if steps is not None:
            options["num_inference_steps"] = steps
        return options

    def _generate(self, args: S.GenerateArgs) -> tuple[str, Result]:
        turn = self.session.generate(args.caption, **self._diffusion_options(args.seed, args.steps))
        return self._answer(turn, self._record(turn, "generate", args, []), "images")

    def _edit(self, args: S.EditArgs) -> tuple[str, Result]:
        region, source_id = None, None
        if args.region_id is not None:  # checked before the turn, so a bad region leaves the session as it was
            _, _, source_id = self._regions([args.region_id])
            region = _region_mask(self.registry.result(args.region_id))
            if not region.any():
                raise InvalidPromptError(
                    f"region_id: expected masks or boxes covering at least 1 pixel, got {args.region_id!r}, which "
                    "covers none; segment again or leave region_id out to edit the whole image")
        image, inputs = self._image(args.image_id, default=source_id)
        if source_id is not None and inputs[0] != source_id:
            raise InvalidPromptError(
                f"region_id: expected a region on the edited image ({inputs[0]}), got one found on {source_id}; "
                f"leave image_id out or pass '{source_id}'")
        turn = self.session.edit(args.instruction, image=image, **self._diffusion_options(args.seed, args.steps))
        edited = turn.images
        replaced = None
        if region is not None and edited is not None:
            source = self.session.images[turn.image_id].picture
            replaced = _composite(edited, source, region, args.region_id)
        ids = self._record(turn, "edit", args, inputs + ([args.region_id] if args.region_id else []), replaced)
        return self._answer(turn, ids, "images")

    def _chat(self, args: S.ChatArgs) -> tuple[str, Turn]:
        image = None
        inputs: list[str] = []
        if args.image_id is not None or self.session.current_image is not None:
            image, inputs = self._image(args.image_id)
        turn = self.session.chat(args.question, image=image)
        ids = self._record(turn, "chat", args, inputs)
        lines = [turn.text.strip() or "(no text)"]
        lines += [summarise(rid, self.registry.result(rid), turn.image_id) for rid in ids]
        return "\n".join(lines), turn

    def _load_image(self, args: S.LoadImageArgs) -> tuple[str, LoadedImage]:
        path = self.paths.readable(args.path)
        image_id = self.session.set_image(path)
        self.registry.add_image(image_id, "load_image", {"path": str(path)}, [])
        size = self.session.images[image_id].picture.size
        return f"{image_id}: {size[0]}×{size[1]} image loaded from {path.name}; use image_id='{image_id}'.", \
            LoadedImage(image_id, path, size)

    def _save_result(self, args: S.SaveResultArgs) -> tuple[str, SavedFile]:
        path = self.paths.writable(args.path)
        if args.result_id in self.session.images:
            if path.suffix.lower() == ".json":
                raise InvalidInputError(f"path: expected a picture suffix for the image {args.result_id}, got {path.name!r}")
            self.session.images[args.result_id].picture.save(path)
        else:
            result = self.registry.result(args.result_id)
            if path.suffix.lower() == ".json":
                path.write_text(result.to_json())
            elif isinstance(result, Images):
                result.images[0].save(path)
            else:
                image_id = self.registry.image_of(args.result_id)
                if image_id not in self.session.images:
                    raise InvalidInputError(f"path: expected '.json' for {args.result_id}, whose image is not in the "
                                            f"session to draw on, got {path.name!r}")
                result.annotate(self.session.images[image_id].picture).save(path)
        return f"saved {args.result_id} to {path}", SavedFile(path, args.result_id)


def _region_mask(result: Result) -> np.ndarray:
    """The union of a result's masks (or of its boxes, filled) as bool ``(H, W)`` of its image."""
    if isinstance(result, Masks):
        return result.masks.any(axis=0)
    width, height = result.image_size
    region = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in (result.xyxy if isinstance(result, Boxes) else result.boxes):
        region[max(0, int(np.floor(y1))): int(np.ceil(y2)), max(0, int(np.floor(x1))): int(np.ceil(x2))] = True
    return region


def _composite(edited: Images, source: Image.Image, region: np.ndarray, region_id: str) -> Images:
    """The edit pasted onto its source inside ``region`` (bool ``(H, W)`` of the source); the rest unchanged."""
    mask = Image.fromarray(region.astype(np.uint8) * 255)
    pictures = []
    for picture in edited.images:
        merged = source.convert("RGB").copy()
        merged.paste(picture.convert("RGB").resize(source.size, Image.Resampling.BILINEAR), (0, 0), mask)
        pictures.append(merged)
    return Images(images=pictures, captions=edited.captions, seeds=edited.seeds,
                  settings={**edited.settings, "region": region_id},
                  turn=edited.turn, route=edited.route, asked=edited.asked)


def validation_message(tool: str, schema: type[S.ToolArgs], error: ValidationError) -> str:
    """A tool-argument error an LLM can act on: what was wrong, and every argument the tool takes."""
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        if item["type"] == "missing":
            problems.append(f"{where}: required, got nothing")
            continue
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message} (got {describe(item.get('input'))})")
    properties = schema.model_json_schema().get("properties", {})
    expected = ", ".join(f"{name}{'' if field.is_required() else '?'}: {_json_type(properties.get(name, {}))}"
                         for name, field in schema.model_fields.items())
    return f"InvalidInputError: {tool} got invalid arguments: {'; '.join(problems)}. Expected ({expected})."


def _json_type(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " | ".join(_json_type(p) for p in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list[{_json_type(prop.get('items', {}))}]"
    return {"string": "str", "integer": "int", "number": "float", "null": "null"}.get(kind, kind)
