"""Decoder predictions → typed results, whatever device and dtype the model ran in.

No GPU runs here: :mod:`fake_gpu`'s stand-in tensors refuse ``.numpy()`` as CUDA ones do.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_gpu import OnGPU

from visionllm2.model import tokens as T
from visionllm2.model.decoders.detection_post import DetectionPrediction
from visionllm2.model.decoders.pose_post import PosePrediction
from visionllm2.sdk import adapters


def on_device(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return (tensor.to(dtype) if dtype is not None else tensor).as_subclass(OnGPU)


def test_the_stand_in_refuses_numpy_as_a_gpu_tensor_does():
    with pytest.raises(TypeError, match="cpu"):
        on_device(torch.zeros(2)).numpy()
    assert on_device(torch.ones(2)).detach().cpu().numpy().tolist() == [1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("route", "interactive"), [(T.DET, False), (T.SEG, False), (T.GRD, False), (T.DET, True)])
def test_detections_on_a_device_and_in_half_precision_become_host_results(dtype, route, interactive):
    masks = torch.zeros(2, 20, 30, dtype=torch.bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:15, 10:20] = True
    prediction = DetectionPrediction(
        sample=0, labels=["red circle", "blue square"], routes=[route, route], image_size=(30, 20),
        boxes=on_device(torch.tensor([[3.0, 2, 9, 8], [10, 10, 20, 15]]), dtype),
        scores=on_device(torch.tensor([0.9, 0.5]), dtype), groups=on_device(torch.tensor([0, 1])),
        masks=on_device(masks), best_boxes=on_device(torch.tensor([[3.0, 2, 9, 8], [10, 10, 20, 15]]), dtype),
        best_scores=on_device(torch.tensor([0.9, 0.5]), dtype), best_masks=on_device(masks),
    )
    results = adapters.detection_results(prediction, turn=1, asked=["red circle", "blue square"], interactive=interactive)
    boxes = results[-1]
    assert boxes.xyxy.dtype == np.float32 and boxes.xyxy.tolist() == [[3, 2, 9, 8], [10, 10, 20, 15]]
    assert boxes.labels == ["red circle", "blue square"] and boxes.scores[0] == pytest.approx(0.9, abs=4e-3)
    if route == T.SEG or interactive:
        assert results[0].kind == "masks" and results[0].masks.sum() == 36 + 50


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_poses_on_a_device_and_in_bfloat16_become_host_results(dtype):
    keypoints = torch.tensor([[[4.0, 5.0, 0.9], [6.0, 7.0, 0.2]]])
    prediction = PosePrediction(
        sample=0, labels=["person"], keypoint_names=["nose", "tail"], image_size=(30, 20),
        boxes=on_device(torch.tensor([[1.0, 2, 10, 12]]), dtype), scores=on_device(torch.tensor([0.8]), dtype),
        classes=on_device(torch.tensor([0])), keypoints=on_device(keypoints, dtype),
    )
    poses = adapters.pose_results(prediction, turn=2, route=T.POSE)[0]
    assert poses.keypoints.dtype == np.float32 and poses.keypoints[0, :, :2].tolist() == [[4, 5], [6, 7]]
    assert poses.labels == ["person"] and poses.boxes.tolist() == [[1, 2, 10, 12]]
