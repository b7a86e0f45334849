"""Resolution as the official code has it: the trainers resize images themselves (EasyR1: every image to the
min = max area; LLaMA-Factory: only down to max_pixels) and keep the base model's processor, so a checkpoint
carries the base processor and whatever runs it next (evaluations, rollouts, the next round's data) sees
images at native resolution, while the GRPO trainer (and a colocated vLLM, which loads the processor from the
same folder and gets the same PIL images) works on the pre-resized images' grid.

The tiny Qwen2.5-VL's own processor fixes every image at 56 x 56; here a copy of it takes any size between
28 x 28 and 448 x 448, as Qwen2.5-VL's takes 3,136 to 12.8 M pixels, so native and resized grids differ."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from test_trainers import GRPO, SFT, sets_lake, trainings  # noqa: F401 (fixture)
from vlfactory.stores.lake import Lake

pytestmark = pytest.mark.slow

SIDE = 56 * 56  # the trainers' min = max pixels below: every training image lands on a 56 x 56 area


@pytest.fixture()
def wide_base(tiny_vlm_dir, tmp_path):
    """The tiny Qwen2.5-VL with a processor that keeps images at their size (within 28 x 28 .. 448 x 448)."""
    base = tmp_path / "base"
    shutil.copytree(tiny_vlm_dir, base, ignore=shutil.ignore_patterns("vlfactory_*.json"))
    config = json.loads((base / "processor_config.json").read_text())
    config["image_processor"]["size"] = {"shortest_edge": 28 * 28, "longest_edge": 448 * 448}
    (base / "processor_config.json").write_text(json.dumps(config, indent=2))
    return base


def processor(folder):
    from transformers import AutoProcessor

    from vlfactory.models import register_processors

    register_processors()
    return AutoProcessor.from_pretrained(folder)


def grid(proc, image) -> tuple:
    return tuple(proc.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist())


def first_image(lake_dir):
    from PIL import Image

    with Lake(lake_dir, read_only=True) as lake:
        (data,) = lake.query("SELECT i.bytes FROM rl@iter1 r JOIN images i USING (image_id) "
                             "ORDER BY r.problem_id LIMIT 1").fetchone()
    return Image.open(io.BytesIO(data))


def test_grpo_trainer_sees_the_resized_grid_and_saves_the_base_processor(sets_lake, lake_dir, wide_base, tmp_path):
    from vlfactory.backends import Request, Sampling
    from vlfactory.backends.hf_local import TransformersBackend, TransformersConfig
    from vlfactory.trainers.config import load_config
    from vlfactory.trainers.data import prepare, read_set, resize_image, rl_dataset
    from vlfactory.trainers.grpo import grpo_trainer, train_grpo

    config = GRPO | {"max_steps": 1, "min_pixels": SIDE, "max_pixels": SIDE}
    base = processor(wide_base)
    image = first_image(lake_dir)
    native, resized = grid(base, image), grid(base, resize_image(image, SIDE, SIDE))
    assert native != resized and 0.7 * SIDE <= resized[1] * resized[2] * 7 * 7 <= 1.3 * SIDE  # 7-pixel patches

    # What the model is fed during GRPO: the base processor's grid of the pre-resized images, for every image
    # (the trainer's processor is the base one, which a colocated vLLM also loads from the model's folder).
    args, extras = load_config("grpo", config, tmp_path / "probe")
    with Lake(lake_dir, read_only=True) as lake:
        _, rows = read_set(lake, "rl@iter1", "rl")
    trainer = grpo_trainer(str(wide_base), extras, args, rl_dataset(prepare(rows, extras)))
    seen = []
    trainer.model.register_forward_pre_hook(
        lambda module, a, kw: seen.extend(map(tuple, kw["image_grid_thw"].tolist())) if kw.get(
            "image_grid_thw") is not None else None, with_kwargs=True)
    trainer.train()
    assert seen and set(seen) == {resized}
    assert trainer.processing_class.image_processor.size == base.image_processor.size

    # The checkpoint carries the base processor: evaluations and rollouts of it see the native grid.
    out = tmp_path / "grpo"
    assert train_grpo("rl@iter1", str(wide_base), str(out), config=config, lake=str(lake_dir)).status == "ok"
    assert json.loads((out / "processor_config.json").read_text()) == json.loads(
        (wide_base / "processor_config.json").read_text())
    backend = TransformersBackend(TransformersConfig(model=str(out), device="cpu"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    inputs = backend._inputs([Request(key="q", sampling=Sampling(max_tokens=4), messages=[
        {"role": "user", "content": [{"type": "image", "image": buffer.getvalue()}, {"type": "text", "text": "?"}]}])])
    assert tuple(inputs["image_grid_thw"][0].tolist()) == native


def test_sft_shrinks_only_large_images_and_saves_the_base_processor(sets_lake, lake_dir, wide_base, tmp_path):
    from vlfactory.trainers.data import prepare, read_set, resize_image
    from vlfactory.trainers.sft import train_sft

    config = SFT | {"max_steps": 1, "max_pixels": SIDE}   # LLaMA-Factory's image_max_pixels, no floor
    with Lake(lake_dir, read_only=True) as lake:
        _, rows = read_set(lake, "sft@iter1", "sft")
    from PIL import Image

    before = [Image.open(io.BytesIO(c["bytes"])) for c in rows.column("image").to_pylist()]
    after = [Image.open(io.BytesIO(c["bytes"])) for c in prepare(rows, {"max_pixels": SIDE}).column("image").to_pylist()]
    assert len(after) == len(before) > 0
    assert all(a.width * a.height <= SIDE < b.width * b.height for a, b in zip(after, before))
    assert resize_image(Image.new("RGB", (20, 30)), None, SIDE).size == (20, 30)  # small ones stay as they are
    out = tmp_path / "sft"
    assert train_sft("sft@iter1", str(wide_base), str(out), config=config, lake=str(lake_dir)).status == "ok"
    assert json.loads((out / "processor_config.json").read_text()) == json.loads(
        (wide_base / "processor_config.json").read_text())
