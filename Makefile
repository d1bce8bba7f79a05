# make quickstart [DATA=path/to/stories.txt] | make test | make test-all | make experiments
PYTHON ?= python3
export PIP_ROOT_USER_ACTION := ignore

.PHONY: install test test-all quickstart experiments

# Keep an existing torch (GPU machines ship one); otherwise take the pinned CPU wheel.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q torch==2.13.0
	@$(PYTHON) -m pip install -q -r requirements.txt

test: install
	$(PYTHON) -m pytest -q

test-all: install
	$(PYTHON) -m pytest -q -m ""

# ----------------------------------------------------------------------------- quickstart
# text -> BPE tokenizer -> token files -> model -> validation loss + a story. Each stage is a file target,
# so re-running skips what is done (and an interrupted training run resumes from its checkpoint).
# DATA: a local <|endoftext|>-separated text file (its last VAL_DOCS stories become the validation set);
# without it TinyStories V2 is downloaded into data/. The model size follows the hardware found.
OUT ?= out/quickstart
VAL_DOCS ?= 500
SAMPLE_TOKENS ?= 256
TRAIN_ARGS ?=
GPU = $(shell $(PYTHON) -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null)
CONFIG ?= $(if $(filter 1,$(GPU)),config/train_tinystories.py,config/tiny_cpu.py)
VOCAB ?= $(if $(filter 1,$(GPU)),10000,2048)
TS = data/TinyStoriesV2-GPT4
ifdef DATA
CORPUS = $(DATA)
else
CORPUS = $(TS)-train.txt
endif

quickstart: install $(OUT)/done
	$(PYTHON) sample.py --out_dir=$(OUT) --eval_file=$(OUT)/valid.bin
	$(PYTHON) sample.py --out_dir=$(OUT) --prompt="Once upon a time" --max_new_tokens=$(SAMPLE_TOKENS) --seed=1

$(TS)-train.txt:
	$(PYTHON) tokenize_data.py --dataset tinystories

$(OUT)/tokenizer/vocab.json: $(CORPUS)
	$(PYTHON) bpe.py train --input $(CORPUS) --vocab_size $(VOCAB) --special_tokens "<|endoftext|>" --out $(OUT)/tokenizer

$(OUT)/train.bin: $(OUT)/tokenizer/vocab.json
ifdef DATA
	$(PYTHON) tokenize_data.py --tokenizer $(OUT)/tokenizer --input $(DATA) --output $@ \
		--val_docs $(VAL_DOCS) --val_output $(OUT)/valid.bin
else
	$(PYTHON) tokenize_data.py --tokenizer $(OUT)/tokenizer --input $(TS)-valid.txt --output $(OUT)/valid.bin
	$(PYTHON) tokenize_data.py --tokenizer $(OUT)/tokenizer --input $(TS)-train.txt --output $@
endif

$(OUT)/done: $(OUT)/train.bin
	$(PYTHON) train.py $(CONFIG) --out_dir=$(OUT) --train_data=$(OUT)/train.bin --val_data=$(OUT)/valid.bin \
		--tokenizer_dir=$(OUT)/tokenizer --vocab_size=$(VOCAB) \
		--resume=$(if $(wildcard $(OUT)/ckpt.pt),True,False) $(TRAIN_ARGS)
	touch $@

# ----------------------------------------------------------------------------- experiments
# The handout's section 7 ablations at CPU scale on ../shared/data (results and plots: EXPERIMENTS.md, assets/).
experiments: install
	$(PYTHON) experiments.py
