# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it once; a second run on an
# installed tree goes straight to the job (the stamp is rebuilt only when pyproject.toml changes).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.visionllm2-installed
# The CPU wheel of torch that resolves without downloading CUDA; used only where no NVIDIA GPU is present.
CPU_TORCH := torch==2.13.0

.PHONY: demo test install lint clean shapes-model shapes-model-quick

# Train the shipped `shapes` model from scratch (≈ 16 h on an idle 2-core CPU; a GPU at these batch sizes is
# hardly faster, since the model is small enough to be bound by kernel launches — see the README).
# Every stage checkpoints and resumes: run it again after an interruption. First release: the
# detector (3, 3b, 3c), pose (3_pose) and generation link (over the denoisers of 0 and 0b) runs
# train disjoint parameters over one stage-2 LLM and `attach` joins them (release1). Then a longer
# chat stage (1b), stage 2 again with release1's decoders as a warm start (2c), the whole LLM
# fine-tuned with the slots-name-their-label loss (2g), chat weighted up (2h), the slot loss on
# grounding's expression too (2i), on what each interactive mark covers (2k), with image-relative
# region features (2l), then longer with interactive marks after a detection turn and the slot loss
# on captions and edit instructions too (2n), and the detector alone over 2n (3n), grafted onto 2n
# (candidate_n). Last, new denoisers from scratch (0n: [GEN] predicts v, with a position embedding)
# relinked to candidate_n's LLM (3_generation_n; its editor did no better than 2n's, so it is not
# shipped); a [GEN] denoiser trained on generation alone for longer (0p, 0q), relinked in its turn
# (3_generation_q), trained on from that model (0r: its link stays) and relinked (3_generation_r),
# then four times again (0s, 0t, 0u, 0v, each relinked), its link trained on requests in later turns too
# (3_generation_w); the detector fine-tuned at a 256² input over candidate_n (3_detector_256, 256b, 256c,
# 256d: candidate_d); the [GEN] denoiser trained further (0w, 0x) and both links fitted to their
# denoisers' text encoders by regression over 3_generation_w's model (3_generation_fit); the [EDIT]
# denoiser trained on edits alone (0y, 0ze) around the [GEN] one (0z, 0zg), and both links fitted
# again (3_generation_fit_zg; 3_generation_fit_z, the release before's, is no longer run), whose [GEN]
# and [EDIT] decoders grafted onto candidate_d, with their guidance and sampler set and the
# detector's duplicates softened, then its editor retrained alone (SHAPES_EDITOR) and its vision
# tower replaced (SHAPES_TOWER), are the shipped model.
# Stages 0 and 0b build the preset as it is now, so they too train the v-predicting denoiser.
SHAPES_CONFIGS := model/training/configs
SHAPES_RUNS    := runs/shapes
SHAPES_SCORE_THRESHOLD := 0.25
# The denoisers' guidance and [GEN]'s sampler, picked on held-out samples `eval` does not score
# (`bench/edit_probe.py`, `bench/generation_probe.py --first 1000`; the card says what each gave).
SHAPES_GUIDANCE := --guidance-scale sd=2 --guidance-scale ip2p=2.5 --sampler sd=DDPMScheduler:50
# Soft-NMS of the detector's repeats, picked the same way (`bench/detection_probe.py --first 1000`).
SHAPES_DUPLICATE_DECAY := 0.5
SHAPES_STAGES  := 0 0b 1 2 3 3b 3c 3_pose 3_generation_b
SHAPES_STAGES_2 := 1b 2c 2g 2h 2i 2k 2l 2n 3n
SHAPES_STAGES_3 := 0n 3_generation_n 0p 0q 3_generation_q 0r 3_generation_r 0s 3_generation_s 0t 3_generation_t 0u 3_generation_u 0v 3_generation_v 3_generation_w 3_detector_256 3_detector_256b 3_detector_256c 3_detector_256d 0w 0x 3_generation_fit 0y 0z 0ze 0zg 3_generation_fit_zg
# The [EDIT] UNet retrained alone behind its fitted link (text encoders frozen): the pixels an edit
# changes weighed 10 (0_edit_region, _b), then switched to predict v (0_edit_v, _vb); its guidance
# picked on held-out edits from 1000 (`bench/edit_probe.py --first 1000`).
SHAPES_EDITOR := 0_edit_region 0_edit_region_b 0_edit_v 0_edit_vb
# A new vision tower with a conv stem, taught to count shapes, colours and coloured shapes alone
# (0_tower, 0_tower_b); the LLM taught to read it with every decoder frozen (2_tower), chat alone
# (1_tower), every route again (2_tower_b); the [GEN] / [EDIT] links fitted to the new LLM.
SHAPES_TOWER := 0_tower 0_tower_b 2_tower 1_tower 2_tower_b 3_generation_fit_tower

demo: $(STAMP)
	$(VENV)/bin/visionllm2 demo

test: $(STAMP)
	$(PY) -m pytest

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; run 'make PYTHON=python3 test'"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the ordinary (CUDA) torch build"; \
	elif ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installing the CPU build $(CPU_TORCH) first"; \
		$(PY) -m pip install -q $(CPU_TORCH); \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

shapes-model: $(STAMP)
	for stage in $(SHAPES_STAGES); do $(VENV)/bin/visionllm2 train --config $(SHAPES_CONFIGS)/shapes_stage$$stage.json || exit 1; done
	$(VENV)/bin/visionllm2 attach $(SHAPES_RUNS)/stage3c/model $(SHAPES_RUNS)/stage3_pose/model $(SHAPES_RUNS)/decoders --decoder unipose
	$(VENV)/bin/visionllm2 attach $(SHAPES_RUNS)/decoders $(SHAPES_RUNS)/stage3_generation_b/model $(SHAPES_RUNS)/release1 \
		--score-threshold $(SHAPES_SCORE_THRESHOLD)
	for stage in $(SHAPES_STAGES_2); do $(VENV)/bin/visionllm2 train --config $(SHAPES_CONFIGS)/shapes_stage$$stage.json || exit 1; done
	$(VENV)/bin/visionllm2 attach $(SHAPES_RUNS)/stage2n/model $(SHAPES_RUNS)/stage3n/model $(SHAPES_RUNS)/candidate_n \
		--decoder gdino --score-threshold $(SHAPES_SCORE_THRESHOLD)
	for stage in $(SHAPES_STAGES_3); do $(VENV)/bin/visionllm2 train --config $(SHAPES_CONFIGS)/shapes_stage$$stage.json || exit 1; done
	$(VENV)/bin/visionllm2 attach $(SHAPES_RUNS)/candidate_n $(SHAPES_RUNS)/stage3_detector_256d/model $(SHAPES_RUNS)/candidate_d \
		--decoder gdino --score-threshold $(SHAPES_SCORE_THRESHOLD)
	$(VENV)/bin/visionllm2 attach $(SHAPES_RUNS)/candidate_d $(SHAPES_RUNS)/stage3_generation_fit_zg/model model/weights/shapes \
		--decoder sd --decoder ip2p --half --score-threshold $(SHAPES_SCORE_THRESHOLD) $(SHAPES_GUIDANCE) \
		--duplicate-decay $(SHAPES_DUPLICATE_DECAY)
	for stage in $(SHAPES_EDITOR); do $(VENV)/bin/visionllm2 train --config $(SHAPES_CONFIGS)/shapes_stage$$stage.json || exit 1; done
	$(VENV)/bin/visionllm2 attach model/weights/shapes $(SHAPES_RUNS)/stage0_edit_vb/model model/weights/shapes \
		--decoder ip2p --half --guidance-scale ip2p=1.5
	for stage in $(SHAPES_TOWER); do $(VENV)/bin/visionllm2 train --config $(SHAPES_CONFIGS)/shapes_stage$$stage.json || exit 1; done
	$(VENV)/bin/visionllm2 attach $(SHAPES_RUNS)/stage3_generation_fit_tower/model $(SHAPES_RUNS)/stage3_generation_fit_tower/model model/weights/shapes --half
	$(VENV)/bin/visionllm2 eval --model shapes --count 300 --json $(SHAPES_RUNS)/eval.json

# The same architecture from random weights in two stages (the second run twice) (the lessons of the long chain from the
# start: the whole LLM with the slot label loss, then the decoders), generation and editing left
# untrained: what a 2-core CPU trains in about 75 minutes (73 here, eval included), with the
# shipped model's repeat softening. Figures in the model card ("A quick chain").
shapes-model-quick: $(STAMP)
	for stage in 2 3 3b; do $(VENV)/bin/visionllm2 train --config $(SHAPES_CONFIGS)/shapes_quick_$$stage.json || exit 1; done
	$(VENV)/bin/visionllm2 attach runs/shapes_quick/stage3b/model runs/shapes_quick/stage3b/model runs/shapes_quick/model \
		--duplicate-decay $(SHAPES_DUPLICATE_DECAY)
	$(VENV)/bin/visionllm2 eval --model runs/shapes_quick/model --tasks detect,segment,ground,interactive,pose,chat \
		--count 300 --json runs/shapes_quick/eval.json

clean:
	rm -rf $(VENV) demo_out build *.egg-info
