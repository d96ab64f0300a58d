"""How much of each detection group's class name reaches the detector through the super link.

The detector learns a class only from the link: the LLM's hidden states at a group's ``[EMB]``
slots (after ``label[DET]``), which ``patch2query`` turns into one text token, which Grounding
DINO's encoder fuses with the image. This fits linear probes, on held-out groups, that read the
group's class (and its colour and shape word) or its position in the answer back from each of the
three, and measures the end result: of the objects with a kept box at IoU ≥ 0.5, how often the
best-scored such box carries the object's class.

It also swaps each first group's label for another class's words in the same teacher-forced answer
and reports, layer by layer, how much that changes the residual stream at the label's last word and
at the group's slots (relative to the state's norm): a label whose words barely move their own
position after layer 0 cannot reach the slots either.

Run: ``python bench/link_probe.py [--model shapes] [--samples 120]``. A link that carries the
class shows probe accuracies near 1 for "class"; position alone near 1 means the [EMB] states say
where the group is in the list, not what it names (the LLM has not learned to look back at it).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from visionllm2.model.data.tasks import ShapesWorld
from visionllm2.recipes.evaluate import box_iou
from visionllm2.sdk import Session


def capture(session: Session, samples: int) -> tuple[dict[str, list[torch.Tensor]], list[str], list[int], list[bool]]:
    """Per group: LLM states, patch2query token, encoder text state; its label and position; and,
    per object with a box at IoU ≥ 0.5, whether the best-scored such box names it rightly."""
    detector = session.model.decoders()["gdino"]
    seen: dict[str, object] = {}
    hooks = [
        detector.register_forward_pre_hook(lambda module, args: seen.update(link=args[0])),
        detector.patch2query.register_forward_hook(lambda module, args, out: seen.update(token=out.mean(1))),
        detector.model.register_forward_hook(lambda module, args, out: seen.update(encoder=out.encoder_last_hidden_state_text)),
    ]
    features: dict[str, list[torch.Tensor]] = {"LLM [EMB] states": [], "patch2query token": [], "encoder text state": []}
    labels: list[str] = []
    positions: list[int] = []
    right: list[bool] = []
    world = ShapesWorld(session.processor, "heldout", {"detect": 1.0})
    try:
        with torch.no_grad():
            for index in range(samples):
                sample = world.sample(index, "detect")
                asked, truth = sample.meta["asked"], sample.targets["gdino"]
                session.reset()
                boxes = session.detect(asked, image=sample.images[0]).boxes
                link = seen["link"]
                if list(link.labels) != asked:  # the LLM named other groups: nothing to line up
                    continue
                features["LLM [EMB] states"].append(link.states.flatten(1).float())
                features["patch2query token"].append(seen["token"].float())
                features["encoder text state"].append(seen["encoder"][0, : len(asked)].float())
                labels += asked
                positions += list(range(len(asked)))
                for box, label in zip(np.asarray(truth.boxes), np.asarray(truth.labels).tolist()):
                    on_it = [k for k, b in enumerate(boxes.xyxy) if box_iou(b, box) >= 0.5]
                    if on_it:  # the best-scored box on the object (one query may give a box per class)
                        best = max(on_it, key=lambda k: boxes.scores[k])
                        right.append(boxes.labels[best] == asked[label])
    finally:
        for hook in hooks:
            hook.remove()
    return features, labels, positions, right


def label_swap_effect(session: Session, samples: int) -> torch.Tensor:
    """Mean relative change ``(layers + 1, 1 + slots)`` of the residual stream when a group's label
    words are replaced by another class's: column 0 at the label's last word, then each query slot."""
    from visionllm2.model.training.trainer import samples_to_inputs

    model, processor = session.model, session.processor
    world = ShapesWorld(processor, "heldout", {"detect": 1.0})
    table = model.llm.get_input_embeddings().weight
    changes = []
    with torch.no_grad():
        for index in range(samples):
            sample = world.sample(index, "detect")
            batch, _, _ = samples_to_inputs(processor, [sample], model.tokenizer.pad_id)
            batch = batch.to(model.device)
            embeds, groups = model.embed(batch)
            group = groups[0]
            words = model.tokenizer.encode_text(sample.meta["asked"][0])
            other = model.tokenizer.encode_text("green circle" if sample.meta["asked"][0] != "green circle" else "red star")
            if len(words) != len(other):
                continue
            swapped = embeds.clone()
            swapped[0, group.position - len(words): group.position] = table[other].to(embeds.dtype)
            columns = [group.position - 1, *range(group.position + 1, group.position + 1 + group.count)]
            run = [model.llm.model(inputs_embeds=e, attention_mask=batch.attention_mask, output_hidden_states=True).hidden_states
                   for e in (embeds, swapped)]
            changes.append(torch.stack([(a[0, columns] - b[0, columns]).norm(dim=-1).float() / a[0, columns].norm(dim=-1).float()
                                        for a, b in zip(*run)]))
    return torch.stack(changes).mean(0)


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, train: int, steps: int = 400) -> float:
    """A linear classifier fitted on the first ``train`` rows (standardised), scored on the rest."""
    mean, std = x[:train].mean(0), x[:train].std(0) + 1e-6
    x = (x - mean) / std
    classes = int(y.max()) + 1
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x[:train] @ weight + bias, y[:train]) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(((x[train:] @ weight + bias).argmax(1) == y[train:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes", help="a model directory or a preset name")
    parser.add_argument("--samples", type=int, default=120, help="held-out detection scenes")
    args = parser.parse_args()
    torch.manual_seed(0)
    session = Session.from_pretrained(args.model)
    features, labels, positions, right = capture(session, args.samples)
    if not labels:
        raise SystemExit("no detection answer named the asked classes: nothing to probe")

    def ids(words: list[str]) -> torch.Tensor:
        vocabulary = {w: i for i, w in enumerate(dict.fromkeys(words))}
        return torch.tensor([vocabulary[w] for w in words])

    targets = {"class": ids(labels), "colour": ids([label.split()[0] for label in labels]),
               "shape": ids([label.split()[-1] for label in labels]), "position": torch.tensor(positions)}
    train = int(0.7 * len(labels))
    table = Table(title=f"{args.model}: linear probes on {len(labels) - train} held-out groups "
                        f"({len(set(labels))} classes; fitted on {train})")
    table.add_column("read from")
    for name in targets:
        table.add_column(name, justify="right")
    for where, parts in features.items():
        x = torch.cat(parts)
        table.add_row(where, *(f"{probe_accuracy(x, y, train):.2f}" for y in targets.values()))
    chance = {name: f"{float((y[train:] == y[:train].mode().values).float().mean()):.2f}" for name, y in targets.items()}
    table.add_row("[dim]majority class[/dim]", *(f"[dim]{chance[n]}[/dim]" for n in targets))
    console = Console()
    console.print(table)
    swap = label_swap_effect(session, min(args.samples, 40))
    effect = Table(title="swapping the label's words: relative change of the residual stream")
    effect.add_column("after")
    effect.add_column("label's last word", justify="right")
    for slot in range(swap.shape[1] - 1):
        effect.add_column(f"slot {slot + 1}", justify="right")
    for layer, row in enumerate(swap.tolist()):
        effect.add_row("embedding" if layer == 0 else f"layer {layer}", *(f"{v:.3f}" for v in row))
    console.print(effect)
    console.print(f"objects with a box at IoU ≥ 0.5 whose best-scored such box has their class: "
                  f"{np.mean(right):.2f} of {len(right)}")


if __name__ == "__main__":
    main()
