"""The recipes of :mod:`visionllm2.recipes` as tools of a :class:`~visionllm2.agents.toolkit.VisionToolkit`.

    toolkit = VisionToolkit(session, allowed_dirs=["parts"])
    message = toolkit.tool("inspect_parts").invoke({"name": "inspect_parts", "id": "1", "type": "tool_call",
                                                    "args": {"defects": ["scratch"], "paths": ["a.png"]}})
    message.content      # "inspect_parts: 1 part for [scratch], areas in pixels: 0 passed, 1 failed. …"
    message.artifact     # the InspectionReport

=====================  ======================  =====================================  ================
tool                   recipe                  artifact                               needs
=====================  ======================  =====================================  ================
detect_segment_edit    detect_segment_edit     DetectSegmentEditResult                [DET] ([EDIT])
in_context_segment     in_context              InContextResult                        [DET]
inspect_parts          inspect_part (each)     InspectionReport                       [DET]
measure_structures     measure_structure (…)   MedicalReport                          [SEG]
map_objects            map_objects             RemoteSensingResult                    [SEG]
=====================  ======================  =====================================  ================

Images come by id (``image1``, ``turn3.images``, ``recipe0.images``) or as files inside the allowed
directories; a file (or an images result seen for the first time) becomes a session image once
the recipe has worked, as ``load_image`` would make it. Recipes run in conversations of their own,
so the session's turns never change; what they find on each image is held by the registry under
``"recipe<N>.<kind>"`` (boxes, masks, the edited picture) with its lineage, for later tools to use
as prompts, edit regions, images or files. A call on one image also offers these to plans
(``$inspect_parts_1.masks``). Arguments are checked, files read and images resolved before any
model work: a bad call changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.tools import ToolException
from PIL import Image

from visionllm2.model import tokens as T
from visionllm2.recipes import detect_segment_edit as dse
from visionllm2.recipes import in_context as ic
from visionllm2.recipes import inspection, medical, remote_sensing
from visionllm2.recipes._common import Failure, open_image, open_rgb, run_batch
from visionllm2.sdk import Box, Boxes, Images, Masks, Point, Result
from visionllm2.sdk.errors import InvalidImageError, InvalidInputError, InvalidPromptError

from . import schemas as S
from .rules import singular
from .summary import summarise
from .toolkit import VisionToolkit, _Spec

MAX_MASK_BYTES = 2**27  # a map's whole-image masks are held only up to this size (N × H × W bools)
SHOWN = 6  # items listed in a summary line before "…"
KEPT_OUTPUTS = 32  # the latest recipe artifacts whose outputs VisionToolkit.outputs_of still knows


@dataclass
class _Source:
    """An image a recipe works on: what the caller named, the name in the report, the 8-bit RGB picture
    the model sees, what the recipe reads (a 16-bit scan stays so), and its session image id if any."""

    ref: str
    name: str
    picture: Image.Image
    raw: Image.Image
    image_id: str | None = None
    path: Path | None = None


class RecipeTools:
    """Builds the recipe tools' specs for a toolkit and runs them on its session and registry."""

    def __init__(self, toolkit: VisionToolkit) -> None:
        self.toolkit = toolkit
        self.session = toolkit.session
        self.registry = toolkit.registry

    def specs(self) -> list[_Spec]:
        edit = ("" if T.EDIT in self.toolkit.routes else
                " This model has no edit decoder: leave instruction out (an edit would be skipped).")
        return [
            _Spec("detect_segment_edit", S.DetectSegmentEditArgs, self._detect_segment_edit, (
                "Change only the named objects: finds every instance of the classes, outlines each with a mask, and "
                "with an instruction edits the image only inside those masks (every other pixel stays). Returns "
                "recipe<N>.boxes, recipe<N>.masks and the edited picture recipe<N>.images (usable as image_id)."
                + edit), ("image", "boxes", "masks", "images"), T.DET),
            _Spec("in_context_segment", S.InContextSegmentArgs, self._in_context, (
                "Find more of something you can point at: give a few examples (ids of objects found before, or "
                "boxes/points on a reference image) and get masks of the same kind of thing in target images. "
                "Returns recipe<N>.masks and recipe<N>.boxes per target."), ("image", "masks", "boxes"), T.DET),
            _Spec("inspect_parts", S.InspectPartsArgs, self._inspect_parts, (
                "Inspect part images for surface defects: finds and outlines each defect, measures its area (mm² "
                "with pixel_size) and passes or fails each part against max_defects / max_area_mm2. "
                f"Defect classes: {self._known(inspection.VOCABULARY)}. Returns the verdicts and recipe<N>.boxes / "
                "recipe<N>.masks per part."), ("image", "boxes", "masks"), T.DET),
            _Spec("measure_structures", S.MeasureStructuresArgs, self._measure_structures, (
                "Outline anatomical structures or lesions on medical images and measure each (area, equivalent "
                f"diameter; mm with pixel_spacing). Structures: {self._known(medical.VOCABULARY)}. Research "
                "measurements, never a diagnosis. Returns recipe<N>.masks per image."), ("image", "masks"), T.SEG),
            _Spec("map_objects", S.MapObjectsArgs, self._map_objects, (
                "Map objects on a large aerial or satellite image: reads it in overlapping tiles, merges objects "
                f"cut by tile seams, counts and measures them. Classes: {self._known(remote_sensing.VOCABULARY)}. "
                "Returns recipe<N>.boxes and recipe<N>.masks on the whole image."), ("image", "boxes", "masks"),
                T.SEG),
        ]

    # ------------------------------------------------------------------ arguments → recipe inputs
    def _known(self, vocabulary: Sequence[str]) -> str:
        return ", ".join(vocabulary) + (" (or any other word this model knows)" if self.toolkit.any_class else "")

    def _vocabulary(self, vocabulary: Sequence[str]) -> Sequence[str] | None:
        return None if self.toolkit.any_class else vocabulary

    def _words(self, names: list[str] | None, vocabulary: Sequence[str], what: str) -> list[str]:
        """The class names asked (every known one when none): plurals of known words become singular,
        and, unless the toolkit takes any class, unknown words are refused."""
        if names is None:
            return list(vocabulary)
        words = [singular(n.strip()) if singular(n.strip()) in vocabulary else n.strip() for n in names]
        unknown = [n for n in words if n not in vocabulary]
        if unknown and not self.toolkit.any_class:
            raise InvalidPromptError(f"{what}: expected classes among {list(vocabulary)} (the words this recipe "
                                     f"knows), got unknown {unknown}")
        return words

    def _by_id(self, image_id: str | None, what: str = "image_id") -> _Source:
        try:
            image, inputs = self.toolkit._image(image_id)
        except InvalidInputError as error:  # named as the argument that held the id
            raise type(error)(str(error).replace("image_id:", f"{what}:", 1)) from None
        if isinstance(image, str):
            picture = self.session.images[image].picture
            return _Source(image, image, picture, picture, image_id=image)
        return _Source(inputs[0], inputs[0], image.convert("RGB"), image)

    def _by_path(self, path: str, show: Callable[[Image.Image], Image.Image]) -> _Source:
        resolved = self.toolkit.paths.readable(path)
        raw = open_image(resolved)  # an unreadable file is an error now, before any model work
        return _Source(path, path, show(raw), raw, path=resolved)

    def _one(self, image_id: str | None, path: str | None, what: str = "image_id") -> _Source:
        return self._by_path(path, open_rgb) if path is not None else self._by_id(image_id, what)

    def _many(self, image_ids: list[str] | None, paths: list[str] | None, what: str = "image_ids",
              show: Callable[[Image.Image], Image.Image] = open_rgb) -> list[_Source]:
        if not image_ids and not paths:
            return [self._by_id(None, what)]
        return [*(self._by_id(i, what) for i in image_ids or []), *(self._by_path(p, show) for p in paths or [])]

    def _session_image(self, source: _Source, tool: str) -> str | None:
        """The session image ``source`` is (added now when it came from a file or an images result)."""
        if source.image_id is None:
            try:
                if source.path is None:
                    source.image_id = self.toolkit._adopt(source.ref, source.picture)
                else:
                    source.image_id = self.session.set_image(source.picture)
                    self.registry.add_image(source.image_id, tool, {"path": str(source.path)}, [])
            except InvalidImageError:  # larger than a session image may be: results stay without one
                return None
        return source.image_id

    def _hold(self, source: _Source, tool: str, args: S.ToolArgs, results: dict[str, Result],
              inputs: Sequence[str] = ()) -> list[str]:
        """Register what a recipe made on ``source``: its ids, with lineage (the image, then ``inputs``)."""
        image_id = self._session_image(source, tool)
        if source.path is not None:
            start = image_id or str(source.path)  # the new session image's own lineage holds the path
        else:
            start = source.ref  # a session image, or the images result the session image was made from
        return self.registry.add_recipe(results, image_id, tool, args.model_dump(exclude_none=True),
                                        [start, *inputs])

    def _answer(self, artifact: Any, lines: list[str], held: list[tuple[_Source, list[str]]]) -> tuple[str, Any]:
        """The text and artifact of a call; on one image, its ids become the step's outputs for plans."""
        outputs: dict[str, str] = {}
        if len(held) == 1:
            source, ids = held[0]
            outputs = {**({"image": source.image_id} if source.image_id else {}),
                       **{rid.split(".", 1)[1]: rid for rid in ids}}
        recent = self.toolkit._recipe_outputs
        recent[id(artifact)] = (artifact, outputs)
        while len(recent) > KEPT_OUTPUTS:  # plans and agents ask right after the call; older ones may go
            recent.pop(next(iter(recent)))
        return "\n".join(lines), artifact

    def _summary(self, ids: list[str], image_id: str | None) -> list[str]:
        return [summarise(rid, self.registry.result(rid), image_id) for rid in ids]

    # ------------------------------------------------------------------ the tools
    def _detect_segment_edit(self, args: S.DetectSegmentEditArgs) -> tuple[str, dse.DetectSegmentEditResult]:
        options = {k: v for k, v in self.toolkit.diffusion.items() if k in dse.EDIT_OPTIONS}
        options["seed"] = args.seed
        if args.steps is not None:
            options["num_inference_steps"] = args.steps
        names, instruction = dse.check_inputs(args.classes, args.instruction, args.min_score, args.max_objects,
                                              options)
        source = self._one(args.image_id, args.path)
        result = dse.detect_segment_edit(self.session, source.picture, names, instruction, min_score=args.min_score,
                                         max_objects=args.max_objects, edit_options=options)
        made: dict[str, Result] = {"boxes": result.boxes, "masks": result.masks}
        if result.after is not None:
            made["images"] = Images(images=[result.after], captions=[str(instruction)], seeds=[args.seed],
                                    settings={"recipe": "detect_segment_edit"})
        ids = self._hold(source, "detect_segment_edit", args, made)
        lines = self._summary(ids[:2], source.image_id)
        if result.after is not None:
            lines.append(f"{ids[2]}: the edited picture ({instruction!r}), changed only inside {ids[1]}; look at it "
                         f"with image_id='{ids[2]}'.")
        else:
            lines.append(f"No edit: {result.edit_skipped}.")
        return self._answer(result, lines, [(source, ids)])

    def _in_context(self, args: S.InContextSegmentArgs) -> tuple[str, ic.InContextResult]:
        pairs, scores, refs, names = self._examples(args)
        kept = ""
        if len(pairs) > ic.MAX_EXAMPLES:
            order = sorted(range(len(pairs)), key=lambda k: -scores[k])[: ic.MAX_EXAMPLES]
            kept = f" (kept the {ic.MAX_EXAMPLES} best-scoring of {len(pairs)} examples)"
            pairs, names = [pairs[k] for k in sorted(order)], [names[k] for k in sorted(order)]
        checked, marks, label = ic.check_inputs([(s.picture, prompt) for s, prompt in pairs], args.label,
                                                args.min_score)
        targets = self._many(args.target_ids, args.target_paths, "target_ids")
        result = ic.in_context(self.session, checked, [t.picture for t in targets], label=label,
                               min_score=args.min_score)
        by_name = {f"image{k}": t for k, t in enumerate(targets)}  # the recipe's names for unnamed inputs
        failed = {f.source for f in result.failures}
        worked = [t for name, t in by_name.items() if name not in failed]  # in the order of result.items
        items = [item.model_copy(update={"source": by_name[item.source].name}) for item in result.items]
        failures = [f.model_copy(update={"source": by_name[f.source].name}) if f.source in by_name else f
                    for f in result.failures]
        self._all_failed(items, failures)
        for source, _ in pairs:
            self._session_image(source, "in_context_segment")  # a reference file becomes a session image too
        marks = [mark.model_copy(update={"source": name}) for mark, name in zip(marks, names)]
        result = ic.InContextResult(label=label, examples=marks, items=items, failures=failures)
        inputs = list(dict.fromkeys([*refs, *(s.image_id or s.ref for s, p in pairs if not isinstance(p, Result))]))
        held = [(t, self._hold(t, "in_context_segment", args, {"masks": item.masks, "boxes": item.boxes}, inputs))
                for t, item in zip(worked, items)]
        lines = [f"in_context_segment: '{label}' from {len(marks)} example(s){kept} in {len(targets)} image(s)."]
        for source, ids in held:
            lines += self._summary(ids[:1], source.image_id)
        return self._answer(result, lines + self._failed(failures), held)

    def _examples(self, args: S.InContextSegmentArgs) -> tuple[list[tuple[_Source, Any]], list[float], list[str],
                                                                list[str]]:
        """``(reference source, prompt)`` per example, their scores, the result ids used, the reference names."""
        pairs, scores, refs, names = [], [], [], []
        for ref in (e for e in args.examples if isinstance(e, str)):
            result = self.registry.result(ref)
            if not isinstance(result, (Boxes, Masks)) or len(result) == 0:
                raise InvalidPromptError(
                    f"examples: expected ids of found boxes or masks, got {ref!r}, which holds "
                    f"{type(result).__name__}{' and is empty' if isinstance(result, (Boxes, Masks)) else ''}")
            image_id = self.registry.image_of(ref)
            if image_id not in self.session.images:
                raise InvalidPromptError(f"examples: expected objects on a session image, got {ref!r}, whose image "
                                         f"{image_id!r} is not in the session")
            source = self._by_id(image_id)
            pairs += [(source, item) for item in result]
            scores += result.scores.tolist()
            refs.append(ref)
            names += [image_id] * len(result)
        coordinates = [e for e in args.examples if not isinstance(e, str)]
        if coordinates:
            reference = self._one(args.reference_id, args.reference_path, "reference_id")
            pairs += [(reference, Point(*c) if len(c) == 2 else Box(*c)) for c in coordinates]
            scores += [1.0] * len(coordinates)
            names += [reference.name] * len(coordinates)
        elif args.reference_id is not None or args.reference_path is not None:
            raise InvalidPromptError("reference_id: expected [x1, y1, x2, y2] or [x, y] examples on that image, got "
                                     "only ids of objects (they bring their own image); leave reference_id out")
        return pairs, scores, refs, names

    def _inspect_parts(self, args: S.InspectPartsArgs) -> tuple[str, inspection.InspectionReport]:
        vocabulary = inspection.VOCABULARY
        thresholds = inspection.Thresholds(max_count=args.max_defects, max_area_mm2=args.max_area_mm2)
        names, size, limits = inspection.check_inputs(
            self._words(args.defects, vocabulary, "defects"), args.pixel_size or 1.0, thresholds,
            self._vocabulary(vocabulary), args.min_score, args.max_objects)
        sources = self._many(args.image_ids, args.paths)
        worked, failures = self._batch(sources, lambda s: inspection.inspect_part(
            self.session, s.picture, names, size, limits, source=s.name, min_score=args.min_score,
            max_objects=args.max_objects, vocabulary=self._vocabulary(vocabulary)))
        parts = [part for _, part in worked]
        report = inspection.InspectionReport(defects=names, pixel_size=size, thresholds=limits, parts=parts,
                                             failures=failures)
        unit = "mm²" if args.pixel_size is not None else "px"
        held = [(s, self._hold(s, "inspect_parts", args, {"boxes": p.boxes, "masks": p.masks})) for s, p in worked]
        lines = [f"inspect_parts: {len(sources)} part(s) for [{', '.join(names)}]"
                 + (f" at {_size(size)} mm/px" if args.pixel_size is not None else ", areas in pixels (no pixel_size)")
                 + f": {len(report.passed)} passed, {len(report.failed)} failed."]
        for (source, ids), part in zip(held, parts):
            areas = [d.area_mm2 for d in part.defects]
            found = (f"{len(areas)} defect(s) ({_counts(d.label for d in part.defects)}), total {sum(areas):.4g} "
                     f"{unit}, largest {max(areas):.4g} {unit}" if areas else "no defects")
            why = f" ({'; '.join(part.reasons)})" if part.reasons else ""
            lines.append(f"{part.source}: {'PASS' if part.passed else 'FAIL'}{why}: {found}; ids {ids[0]}, {ids[1]} "
                         "(one item per defect).")
        return self._answer(report, lines + self._failed(failures), held)

    def _measure_structures(self, args: S.MeasureStructuresArgs) -> tuple[str, medical.MedicalReport]:
        vocabulary = medical.VOCABULARY
        names, spacing, window = medical.check_inputs(
            self._words(args.structures, vocabulary, "structures"), args.pixel_spacing or 1.0, (0.5, 99.5),
            self._vocabulary(vocabulary), args.min_score)
        sources = self._many(args.image_ids, args.paths, show=lambda raw: medical.display_image(raw, window))
        worked, failures = self._batch(sources, lambda s: medical.measure_structure(
            self.session, s.raw, names, spacing, window=window, min_score=args.min_score,
            vocabulary=self._vocabulary(vocabulary), source=s.name))
        items = [item for _, item in worked]
        report = medical.MedicalReport(structures=names, pixel_spacing=spacing, window_percentiles=window,
                                       items=items, failures=failures)
        mm = args.pixel_spacing is not None
        held = [(s, self._hold(s, "measure_structures", args, {"masks": item.masks})) for s, item in worked]
        lines = [f"measure_structures: [{', '.join(names)}] on {len(sources)} image(s)"
                 + (f" at {_size(spacing)} mm/px." if mm else ", in pixels (no pixel_spacing)."),
                 "Research measurements, not a diagnosis: a clinician must review the images (see the report's "
                 + "disclaimer)."]
        for (source, ids), item in zip(held, items):
            parts = []
            for name, count in item.counts().items():
                found = [f for f in item.findings if f.label == name][:SHOWN]
                sizes = ", ".join(f"{f.area_mm2:.4g} mm² (⌀ {f.diameter_mm:.3g} mm)" if mm else
                                  f"{f.area_px} px (⌀ {f.diameter_px:.3g} px)" for f in found)
                parts.append(f"{name} ×{count}: {sizes}" if count else f"{name}: none")
            lines.append(f"{item.source}: {'; '.join(parts)}; id {ids[0]} (one item per finding).")
        return self._answer(report, lines + self._failed(failures), held)

    def _map_objects(self, args: S.MapObjectsArgs) -> tuple[str, remote_sensing.RemoteSensingResult]:
        vocabulary = remote_sensing.VOCABULARY
        names, tile_size, overlap = remote_sensing.check_inputs(
            self._words(args.classes, vocabulary, "classes"), args.tile_size, args.overlap, None,
            self._vocabulary(vocabulary))
        source = self._one(args.image_id, args.path)
        result = remote_sensing.map_objects(self.session, source.picture, names, tile_size=tile_size, overlap=overlap,
                                            vocabulary=self._vocabulary(vocabulary))
        made: dict[str, Result] = {"boxes": result.boxes()}
        width, height = result.image_size
        if len(result.objects) * width * height <= MAX_MASK_BYTES:
            made["masks"] = result.masks()
        ids = self._hold(source, "map_objects", args, made)
        seams = sum(len(o.tiles) > 1 for o in result.objects)
        counts = {name: result.count(name) for name in names}
        areas = {name: sum(o.area_px for o in result.objects if o.label == name) for name in names}
        found = ", ".join(f"{name} ×{n} ({areas[name]:.0f} px in all)" if n else f"{name}: none"
                          for name, n in counts.items())
        lines = [f"map_objects on {source.name} ({width}×{height}) in {len(result.tiles)} tile(s) of {tile_size} px "
                 + f"(overlap {overlap}): {found}; {seams} merged across tile seams.",
                 *self._summary(ids, source.image_id)]
        if "masks" not in made:
            lines.append(f"No {ids[0].split('.')[0]}.masks: {len(result.objects)} whole-image masks would be too "
                         "large; the artifact holds every outline as a polygon.")
        return self._answer(result, lines, [(source, ids)])

    # ------------------------------------------------------------------ batches
    def _batch(self, sources: list[_Source], work: Callable[[_Source], Any]) -> tuple[list[tuple[_Source, Any]],
                                                                                      list[Failure]]:
        worked, failures = run_batch(sources, lambda s: (s, work(s)), [s.name for s in sources])
        self._all_failed(worked, failures)
        return worked, failures

    @staticmethod
    def _all_failed(worked: list[Any], failures: list[Failure]) -> None:
        if failures and not worked:  # nothing to report: the call failed
            raise ToolException(f"{failures[0].error}: {failures[0].source}: {failures[0].message}")

    @staticmethod
    def _failed(failures: list[Failure]) -> list[str]:
        return [f"{f.source}: failed ({f.error}: {f.message})" for f in failures]


def _counts(labels: Any) -> str:
    counts = Counter(labels)
    shown = [f"{label} ×{n}" if n > 1 else label for label, n in counts.most_common(SHOWN)]
    return ", ".join(shown) + (", …" if len(counts) > SHOWN else "")


def _size(size: tuple[float, float]) -> str:
    return f"{size[0]:g}" if size[0] == size[1] else f"{size[0]:g}×{size[1]:g}"


__all__ = ["MAX_MASK_BYTES", "RecipeTools"]
