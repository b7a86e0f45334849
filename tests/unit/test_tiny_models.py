"""The tiny offline models build, reload with transformers and generate (text, and text + image)."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

# Looked up, not imported: importing torch and transformers at collection costs every test worker ~5 s.
if not all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
    pytest.skip("torch or transformers is not installed (the `cpu` extra)", allow_module_level=True)

import tiny_models as tm  # noqa: E402  (tests/support is on sys.path: tests/conftest.py)


def _chat(tok, text: str):
    messages = [{"role": "user", "content": text}]
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_tokenizer_has_reasoning_tokens_and_chat_template(tiny_models_root):
    from transformers import AutoTokenizer

    path = tm.tiny_tokenizer(tiny_models_root / "tiny-tokenizer")
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.pad_token_id != tok.eos_token_id
    for token in tm.REASONING_TOKENS + tm.SPECIAL_TOKENS:
        assert len(tok.tokenize(token)) == 1, token
    text = "<think>12 + 30 = 42</think><answer>\\boxed{42}</answer>"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text  # think/answer tags are not "special"
    assert tok.convert_ids_to_tokens(ids)[1:3] == ["1", "2"]  # digits one by one, as in Qwen
    prompt = _chat(tok, "What is 6 * 7?")
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n" in prompt


def test_builds_are_cached(tiny_models_root, tiny_qwen2_dir):
    marker = json.loads((tiny_qwen2_dir / tm.MARKER).read_text())
    assert marker == {**marker, "kind": "qwen2", "version": tm.VERSIONS["qwen2"]}
    mtime = (tiny_qwen2_dir / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    assert tm.tiny_qwen2(tiny_qwen2_dir) == tiny_qwen2_dir
    assert time.monotonic() - started < 1.0
    assert (tiny_qwen2_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert not [p for p in tiny_models_root.iterdir() if p.name.startswith(".")]  # no leftover build folders


def test_tiny_qwen2_generates(tiny_qwen2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    enc = tok([_chat(tok, "What is 2 + 3?"), _chat(tok, "Hi")], return_tensors="pt", padding=True,
              padding_side="left")
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=8, do_sample=True, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] > enc["input_ids"].shape[1]
    assert all(isinstance(t, str) for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:]))


def test_tiny_vlm_processor_and_generation_with_an_image(tiny_vlm_dir):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    # without the registration AutoProcessor would silently return the bare tokenizer
    assert type(processor).__name__ == "Qwen2_5_VLImageOnlyProcessor", type(processor)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"

    messages = [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "How many red squares are there?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>How many red squares" in prompt
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    enc = processor(text=[prompt], images=[image], return_tensors="pt")
    assert enc["image_grid_thw"].tolist() == [[1, 8, 8]]  # 64x64 -> 56x56 -> 8x8 patches of 7
    assert enc["pixel_values"].shape[0] == 64
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 16  # 64 patches / merge 2x2

    out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[1] == enc["input_ids"].shape[1] + 6 or processor.tokenizer.eos_token_id in out[0].tolist()

    # the image reaches the model: another image changes the next-token logits
    other = processor(text=[prompt], images=[Image.new("RGB", (64, 64), (0, 200, 0))], return_tensors="pt")
    with torch.no_grad():
        a = model(**enc).logits[0, -1]
        b = model(**other).logits[0, -1]
    assert not torch.allclose(a, b)

    # a chat message that carries the image itself, tokenized by the processor
    messages = [{"role": "user", "content": [
        {"type": "image", "image": Image.new("RGB", (300, 200), (0, 0, 255))}, {"type": "text", "text": "Describe."}]}]
    enc2 = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")
    n_image_tokens = int((enc2["input_ids"] == model.config.image_token_id).sum())
    # every image is brought to about 56x56 pixels, keeping its aspect: 300x200 -> 56x42 -> 8x6 patches
    assert enc2["image_grid_thw"].tolist() == [[1, 6, 8]] and n_image_tokens == 12
    assert model.generate(**enc2, max_new_tokens=4, do_sample=True).shape[0] == 1


def test_tiny_vlm_uses_the_real_qwen2_5_vl_chat_template(tiny_vlm_dir):
    trl_templates = pytest.importorskip("trl.chat_template_utils", reason="trl is not installed")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    # TRL swaps in its training template (assistant_only_loss) only for this exact text
    assert processor.chat_template == trl_templates.qwen2_5_vl_chat_template


@pytest.mark.slow
def test_smollm2_converts_and_answers(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # a plain float32 folder, not a GGUF-quantised one
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.num_parameters() > 100_000_000
    enc = tok(_chat(tok, "What is the capital of France?"), return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.parametrize("name", ["tiny-r1", "tiny-vlm-r1"])  # the VLM's is slow (tests/conftest.py SLOW)
def test_wired_r1_models_write_one_well_formed_chain_with_an_even_draw_of_answers(tiny_models_root, name):
    """The rehearsal's stand-ins: whatever the prompt, a chain the format reward accepts, its answer drawn
    from R1_ANSWERS when sampling (all of them turn up) and always the same one when greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from vlfactory.verify import extract_answer, format_reward

    path = tm.BUILDERS[name](tiny_models_root / name)
    if name == "tiny-r1":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)

        def inputs(copies: int):
            return tok([_chat(tok, "Is the red bar the tallest? Answer yes or no.")] * copies, return_tensors="pt")
    else:
        from PIL import Image

        proc = AutoProcessor.from_pretrained(path)
        tok, model = proc.tokenizer, Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many circles?"}]}]

        def inputs(copies: int):
            return proc(text=[proc.apply_chat_template(messages, add_generation_prompt=True)] * copies,
                        images=[Image.new("RGB", (70, 50), "blue")] * copies, return_tensors="pt")

    def answers(copies: int, **kw) -> list[str]:
        # One batch of `copies` chains of one prompt (24 calls of one chain took about 2 s each on 2 shared cores).
        enc = inputs(copies)
        out = model.generate(**enc, max_new_tokens=40, **kw)
        texts = []
        for seq in out[:, enc["input_ids"].shape[1]:].tolist():
            assert tok.eos_token_id in seq, "the chain ends within the token budget"
            texts.append(tok.decode(seq[:seq.index(tok.eos_token_id) + 1], skip_special_tokens=True))
        assert format_reward(texts) == [1.0] * copies, texts
        return [extract_answer(t) for t in texts]

    torch.manual_seed(0)
    assert set(answers(24, do_sample=True, temperature=1.0)) == set(tm.R1_ANSWERS)
    assert len(set(answers(3, do_sample=False))) == 1
