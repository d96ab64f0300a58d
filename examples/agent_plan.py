"""Agent plan: a multi-step goal, planned and run offline, every step typed and traced.

    python examples/agent_plan.py [--out agent_out] [--model tiny|shapes|PATH] [--goal "..."]

The rule-based planner turns the goal into a plan (detect → segment the boxes it found → edit
inside the masks → save), the executor checks the plan against the tools' schemas and runs it,
and each step's typed result (Boxes, Masks, Images) comes back with the steps it built on. The
plan and the run are written as JSON; ``Plan.from_json`` + ``PlanExecutor`` replays the plan.
Files are read and written only inside ``--out``.

With ``MODEL = "tiny"`` (the default until the trained ``shapes`` model ships) the weights are
random: the results are well-typed but meaningless, which is enough to show the plumbing.

To let a real chat model plan instead (any LangChain chat model with tool calling), replace the
planner and executor with a few lines:

    from langchain_openai import ChatOpenAI            # or ChatAnthropic, ChatOllama, ...
    from visionllm2.agents import ToolCallingAgent

    agent = ToolCallingAgent(ChatOpenAI(model="gpt-4o-mini"), toolkit, Budget(max_steps=12))
    run = agent.run(GOAL + " The picture is scene.png.")
    print(run.answer)                                  # the model's closing words
    Path("plan.json").write_text(run.plan.to_json())   # what it did, replayable offline
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw

from visionllm2.agents import Budget, PlanExecutor, RuleBasedPlanner, VisionToolkit
from visionllm2.sdk import Session

MODEL = "tiny"  # becomes "shapes" once the trained ShapesWorld model ships
GOAL = "find the red circles, segment them and make them green, then save the result to edited.png"


def load_session(model: str) -> tuple[Session, dict]:
    """A session and the diffusion options for ``model``.

    The ``tiny`` preset has no image-editing decoder, so here it gets tiny random [GEN]/[EDIT]
    decoders, and keeps detections at any score (random weights score about 0.01) so that each
    step has something to hand on.
    """
    if model != "tiny":
        return Session.from_pretrained(model), {}
    import torch

    from visionllm2.model.config import GenerationConfig, VisionLLMv2Config
    from visionllm2.model.decoders import build_decoders
    from visionllm2.model.tokenizer import Tokenizer
    from visionllm2.model.visionllm import VisionLLMv2

    torch.manual_seed(0)
    config = VisionLLMv2Config.preset("tiny")
    config = replace(config, detection=replace(config.detection, score_threshold=0.0, max_detections=3),
                     generation=GenerationConfig.tiny(), editing=GenerationConfig.tiny(edit=True))
    network = VisionLLMv2.from_config(config, build_decoders(config), Tokenizer.from_spec(config.llm.tokenizer))
    return Session(network, max_new_tokens=16), {"num_inference_steps": 4}


def draw_scene(path: Path) -> None:
    """Two red circles and a blue square on a light background, 128×128."""
    picture = Image.new("RGB", (128, 128), (235, 230, 220))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((12, 14, 48, 50), fill=(220, 40, 40))
    draw.ellipse((70, 72, 112, 114), fill=(220, 40, 40))
    draw.rectangle((74, 16, 108, 50), fill=(40, 80, 220))
    picture.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("agent_out"))
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--goal", default=GOAL)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    draw_scene(args.out / "scene.png")

    session, diffusion = load_session(args.model)
    toolkit = VisionToolkit(session, allowed_dirs=[args.out], diffusion=diffusion)
    plan = RuleBasedPlanner().plan(args.goal, image="scene.png")   # offline: no language model
    (args.out / "plan.json").write_text(plan.to_json())
    run = PlanExecutor(toolkit, Budget(max_steps=8, max_seconds=300)).run(plan)

    for step in run.steps:
        after = f" (after {', '.join(step.parents)})" if step.parents else ""
        print(f"{step.step:<14} {type(step.artifact).__name__:<12}{after}\n    {step.content.splitlines()[0]}")
    (args.out / "run.json").write_text(run.model_dump_json(indent=2))
    final = run.final
    print(f"{len(run.steps)} steps; lineage of {final.step}: {run.lineage(final.step)}; files in {args.out.resolve()}")


if __name__ == "__main__":
    main()
