"""The shipped recipes load, and the paper's trainer settings are valid TRL configs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from vlfactory.recipe import load_recipe, shipped_recipes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["quickstart", "tabmwp", "dynamath", "openvlthinker/iterate"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(name)  # by name, as a user runs them
    assert recipe.sources and recipe.text and recipe.path == str(shipped_recipes() / f"{name}.yaml")
    for src in recipe.sources + recipe.benchmarks:
        # What every user has: a hub dataset, generated data, or a file shipped with the package; never
        # the repository's ../shared slices (tests/support/recipes/ holds the recipes that read those).
        assert src.format in ("hf", "synthetic") or Path(src.path).exists(), src
        assert "shared" not in (src.path or ""), src


def _png(color) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def _hub_copy(folder: Path, card: str, shards: dict[str, dict], features) -> Path:
    """A local folder laid out like a hub dataset repo: the card's configs, one Parquet shard per split."""
    import datasets

    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text(card)
    for name, columns in shards.items():
        datasets.Dataset.from_dict(columns, features=features).to_parquet(folder / "data" / name)
    return folder


def test_hub_recipes_map_the_columns_their_cards_list(tmp_path):
    """The shipped hub recipes, run on local stand-ins with the columns, types and splits their dataset
    cards list (this machine cannot reach the hub): every mapped column is found and lands where it should."""
    import datasets

    from vlfactory.stages.ingest import ingest
    from vlfactory.stores.lake import Lake

    img = [_png((200, 30, 30)), _png((30, 200, 30)), _png((30, 30, 200))]
    tabmwp = _hub_copy(tmp_path / "tabmwp", "---\nconfigs:\n- config_name: default\n  data_files:\n"
                       "  - split: train\n    path: data/train-*\n---\n",
                       {"train-00000-of-00001.parquet": {
                           "image": [{"bytes": img[0], "path": None}, {"bytes": img[1], "path": None}],
                           "id": ["12", "34"], "question": ["How many?", "Which is larger?"],
                           "options": [[], ["5", "7"]], "answer": ["3", "7"]}},
                       datasets.Features({"image": datasets.Image(), "id": datasets.Value("string"),
                                          "question": datasets.Value("string"),
                                          "options": datasets.Sequence(datasets.Value("string")),
                                          "answer": datasets.Value("string")}))
    dynamath = _hub_copy(tmp_path / "dynamath", "---\nconfigs:\n- config_name: default\n  data_files:\n"
                         "  - split: sample_variant1\n    path: data/sample1-*\n"
                         "  - split: sample_variant2\n    path: data/sample2-*\n---\n",
                         {f"sample{k}-00000-of-00001.parquet": {
                             "id": ["1"], "question": [f"Period of variant {k}?"], "image": [f"images/{k}.png"],
                             "decoded_image": [{"bytes": img[2] if k == 1 else img[0], "path": None}],
                             "ground_truth": ["2.0944"], "answer_type": ["float"], "subject": ["analytic geometry"],
                             "knowledge_level": ["high school"]} for k in (1, 2)},
                         datasets.Features({**{c: datasets.Value("string") for c in (
                             "id", "question", "image", "ground_truth", "answer_type", "subject", "knowledge_level")},
                             "decoded_image": datasets.Image()}))
    recipes = [load_recipe("tabmwp"), load_recipe("dynamath")]
    recipes[0].sources[0].path, recipes[1].sources[0].path = str(tabmwp), str(dynamath)
    with Lake(tmp_path / "lake") as lake:
        tallies = [t for r in recipes for t in ingest(lake, r)]
        rows = lake.query("""SELECT source, source_id, split, question, answer, choices, sha256(i.bytes)
                             FROM problems JOIN images i USING (image_id) ORDER BY 1, 2""").fetchall()
    assert [(t.read, t.ingested) for t in tallies] == [(2, 2), (1, 1)]
    def sha(b: bytes) -> str:
        return hashlib.sha256(b).hexdigest()

    assert rows == [
        ("dynamath", "1", "sample_variant1", "Period of variant 1?", "2.0944", None, sha(img[2])),
        ("tabmwp", "12", "train", "How many?", "3", None, sha(img[0])),
        ("tabmwp", "34", "train", "Which is larger?", "7", ["5", "7"], sha(img[1]))]


def test_openvlthinker_settings_match_the_paper_and_trl():
    pytest.importorskip("trl", reason="trl is not installed (the `cpu` or `train` extra)")
    from vlfactory.trainers.config import load_config

    recipe = load_recipe(REPO / "recipes" / "openvlthinker" / "iterate.yaml")
    assert recipe.loop.base_model == "Qwen/Qwen2.5-VL-7B-Instruct" and recipe.distil.sampling.n == 4
    assert recipe.rollout.sampling.n == 5 and recipe.rollout.sampling.top_p == 0.99
    assert recipe.verify.reflection_keywords == ["Wait", "But wait", "But the question"] and recipe.caption.overwrite
    assert recipe.eval.protocol == "openvlthinker" and recipe.eval.protocols == {"mathverse": "judge"}
    assert [s.name for s in recipe.loop.grpo_stages] == ["medium", "hard"]
    assert recipe.loop.plan(2).rl_set == "fixed" and recipe.loop.plan(3).sft_max_examples == 5000
    cpu = {"bf16": False, "use_cpu": True, "model_init_kwargs": None}  # this machine has no GPU
    sft, sft_extras = load_config("sft", yaml.safe_load(Path(recipe.loop.sft).read_text()) | cpu, "/tmp/sft",
                                  processes=8)
    medium, hard = (load_config("grpo", yaml.safe_load(Path(s.config).read_text()) | cpu | {"use_vllm": False},
                                "/tmp/grpo", processes=8) for s in recipe.loop.grpo_stages)
    assert sft_extras["max_pixels"] == 262144 and sft_extras["freeze_vision_tower"] and sft.max_length == 2048
    assert sft.learning_rate == 5e-6 and sft.lr_scheduler_type == "cosine" and sft.num_train_epochs == 1
    assert sft.per_device_train_batch_size * 8 * sft.gradient_accumulation_steps == 32
    grpo = medium[0]
    assert grpo.learning_rate == 1e-6 and grpo.beta == 0.01 and grpo.num_generations == 5 and grpo.epsilon_high == 0.3
    assert grpo.max_completion_length == 2048 and grpo.weight_decay == 0.01 and grpo.max_grad_norm == 1.0
    assert grpo.per_device_train_batch_size * 8 * grpo.gradient_accumulation_steps == 640   # 128 prompts x 5
    assert (grpo.num_train_epochs, hard[0].num_train_epochs) == (5, 15)
    assert medium[1]["freeze_vision_tower"] and not hard[1]["freeze_vision_tower"]


def test_a_recipe_extends_another_by_name_and_stores_the_whole_resolved_text(tmp_path):
    """`extends:` merges mappings key by key and named lists item by item; the text stored in runs and
    published is the resolved recipe, so its hash changes when the recipe it extends changes."""
    (tmp_path / "base.yaml").write_text("""name: base
sources:
  - {name: a, format: synthetic, n: 10, seed: 1}
  - {name: b, format: synthetic, n: 20}
verify: {max_words: 300, require_format: true}
loop: {base_model: m, iterations: 3, benchmarks: [b]}
""")
    (tmp_path / "child.yaml").write_text("""# a smaller run
extends: base.yaml
sources:
  - {name: a, n: 2}
  - {name: c, format: synthetic, n: 3}
verify: {max_words: 50}
loop: {iterations: 1}
""")
    recipe = load_recipe(tmp_path / "child.yaml")
    assert recipe.name == "child"
    assert [(s.name, s.n, s.seed) for s in recipe.sources] == [("a", 2, 1), ("b", 20, 0), ("c", 3, 0)]
    assert (recipe.verify.max_words, recipe.verify.require_format) == (50, True)
    assert (recipe.loop.iterations, recipe.loop.base_model, recipe.loop.benchmarks) == (1, "m", ["b"])
    assert "extends" not in yaml.safe_load(recipe.text) and yaml.safe_load(recipe.text)["verify"] == {"max_words": 50,
                                                                                       "require_format": True}
    before = recipe.hash
    (tmp_path / "base.yaml").write_text((tmp_path / "base.yaml").read_text().replace("base_model: m", "base_model: m2"))
    assert load_recipe(tmp_path / "child.yaml").hash != before


def test_a_recipe_that_extends_itself_is_one_error_line(tmp_path):
    from vlfactory.recipe import RecipeError

    (tmp_path / "a.yaml").write_text("extends: b.yaml\nsources: []\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(RecipeError, match="extends itself"):
        load_recipe(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(RecipeError, match="recipe not found: missing.yaml"):
        load_recipe(tmp_path / "c.yaml")


MALFORMED = {  # each alone makes a recipe both the schema and the loader refuse, at this key
    "format": ("sources:\n  - {name: a, format: jsn, path: x.json}\n", ["sources", 0, "format"]),
    "unknown key": ("sources:\n  - {name: a, format: synthetic}\nverify: {max_word: 300}\n", ["verify"]),
    "another backend's option": ("sources:\n  - {name: a, format: synthetic}\n"
                                 + "distil: {model: m, base_url: 'http://127.0.0.1:8000/v1', dtype: float32}\n",
                                 ["distil"]),
    "a string for a number": ("sources:\n  - {name: a, format: synthetic}\n"
                              + "rollout: {backend: vllm, model: m, sampling: {max_tokens: many}}\n", ["rollout"]),
    "a name that is a path": ("name: ../up\nsources:\n  - {name: a, format: synthetic}\n", ["name"]),
}


def test_the_json_schema_accepts_what_the_loader_accepts(tmp_path):
    """`vlfactory recipe schema`, what editors check recipe YAML against: every YAML file under recipes/ passes it
    exactly when load_recipe takes it (the trainers' and accelerate's files are not recipes; a recipe that
    `extends:` another is), and a malformed recipe fails it at the key that is wrong."""
    import json

    jsonschema = pytest.importorskip("jsonschema")
    from click.testing import CliRunner

    from vlfactory.cli import main
    from vlfactory.recipe import RecipeError

    res = CliRunner().invoke(main, ["recipe", "schema"])
    assert res.exit_code == 0, res.output
    schema = json.loads(res.output)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    verdicts = {}
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        try:
            loads = bool(load_recipe(path))
        except RecipeError:
            loads = False
        verdicts[path.relative_to(REPO / "recipes").as_posix()] = (validator.is_valid(yaml.safe_load(path.read_text())),
                                                                   loads)
    assert all(valid == loads for valid, loads in verdicts.values()), verdicts
    assert {name for name, (valid, _) in verdicts.items() if valid} == {
        "quickstart.yaml", "tabmwp.yaml", "dynamath.yaml", "openvlthinker/iterate.yaml",
        "openvlthinker/rehearsal.yaml", "openvlthinker/released.yaml"}
    for case, (text, where) in MALFORMED.items():
        errors = list(validator.iter_errors(yaml.safe_load(text)))
        assert [e for e in errors if list(e.absolute_path)[:len(where)] == where], (case, errors)
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(RecipeError):
            load_recipe(tmp_path / "bad.yaml")


SYN = [{"name": "s", "format": "synthetic"}]
URL = "http://127.0.0.1:8000/v1"
ERRORS = [  # a recipe (without `sources:`, the one above) -> its one line
    ({"distil": {"model": "m", "base_url": URL, "dtype": "float32"}},
     "distil.dtype: an option of the vllm backend; this stage's backend is openai (its options: api_key_env,"),
    ({"distil": {"model": "m"}}, "distil.base_url: missing (the OpenAI-compatible server, e.g. http://"),
    ({"distil": {"model": "m", "base_url": URL, "concurency": 3}},
     "distil.concurency: unknown key (did you mean 'concurrency'?); known keys: api_key_env, "),
    ({"distil": {"model": "m", "base_url": URL, "captions": {}}}, "distil.captions: unknown key;"),  # set by code
    ({"distil": {"base_url": URL}}, "distil.model: missing"),
    ({"rollout": {"backend": "vllm", "model": "m", "sampling": {"top_p": 0}}},
     "rollout.sampling.top_p: must be in (0, 1]"),
    ({"sources": [{"name": "s", "format": "synthetic", "columns": {"answer": 5}}]},
     "sources[0].columns.answer: expected a mapping or str, got 5"),
    ({"sources": [{"name": "s", "format": "synthetic", "where": {"kind": [1.5]}}]},
     "sources[0].where.kind[0]: expected str, int or bool, got 1.5"),
    ({"sources": [{"name": "s", "format": "synthetic", "where": {"kind": []}}]},
     "sources[0].where.kind: must not be empty (an empty list keeps no row; list the values to keep)"),
    ({"sources": [{"name": "s", "format": "synthetic", "n": "3"}]}, "sources[0].n: expected int, got '3'"),
    ({"verify": {"require_format": 1}}, "verify.require_format: expected bool, got 1"),
    ({"sourcs": SYN}, "sourcs: unknown key (did you mean 'sources'?)"),  # the typo, not the key then missing
    ({"text": "name: x"}, "text: unknown key; known keys: name, sources,"),  # set by the loader
    ({"loop": {"base_model": "m", "schedule": [{}, {"generator": {"step": 0}}]}},
     "loop.schedule[1].generator.step: must be at least 1 (a TRL optimizer step with a checkpoint)"),
]


@pytest.mark.parametrize("raw, line", ERRORS, ids=[line.split(":")[0] for _, line in ERRORS])
def test_errors_name_the_key_path_and_the_fix(raw, line):
    """pydantic's location made the path a recipe's author reads: list items as [i], the alternatives pydantic
    tried for a value left out, a generation block's backend options flat beside its own keys."""
    from vlfactory.recipe import RecipeError, parse_recipe

    with pytest.raises(RecipeError) as e:
        parse_recipe({"sources": SYN} | raw, path="r.yaml")
    assert str(e.value).startswith(f"r.yaml: {line}") and "\n" not in str(e.value), str(e.value)


def test_a_pretrained_captioner_needs_pretraining_and_a_caption_block_and_known_sources(tmp_path):
    """loop.captioner: pretrained (the quickstart's) without loop.pretrain or a caption: block, or
    loop.pretrain_sources naming no source, is one line naming the key."""
    import yaml

    from vlfactory.recipe import RecipeError

    raw = yaml.safe_load((shipped_recipes() / "quickstart.yaml").read_text())
    for broken, message in ((lambda r: r.pop("caption"), "loop.captioner"),
                            (lambda r: r["loop"].pop("pretrain"), "loop.captioner"),
                            (lambda r: r["loop"].update(pretrain_sources=["nope"]), "pretrain_sources: 'nope'")):
        copy = yaml.safe_load(yaml.safe_dump(raw))
        broken(copy)
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(copy))
        with pytest.raises(RecipeError, match=message):
            load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert load_recipe(tmp_path / "r.yaml").loop.captioner == "pretrained"


def test_the_loop_derives_its_configs_from_the_recipe():
    """What `iterate` ingests and how its models roll out come from the recipe (vlfactory.loop reads them): a
    recipe that extends another ingests only the sources its loop uses; the SFT model's pass rates use the
    rollout block's sampling, the next round's data the plan's; a model the loop trained is known by itself,
    never by the block's model_id or revision."""
    import dataclasses

    released = load_recipe("openvlthinker/released")  # extends iterate.yaml, whose eleven sources it leaves unread
    assert len(released.sources) == 17
    assert [s.name for s in released.loop_ingest_config().sources] == ["sft_iter3", "grpo_medium", "grpo_hard"]
    quick = load_recipe("quickstart")
    assert quick.loop_ingest_config().sources == quick.sources
    pinned = dataclasses.replace(quick.rollout, model_id="teacher@abc", revision="v1")
    quick = dataclasses.replace(quick, rollout=pinned)
    rates = quick.rollout_by("runs/sft-1")
    assert (rates.model, rates.model_id, rates.revision, rates.sampling) == ("runs/sft-1", None, None, pinned.sampling)
    data = quick.rollout_by("runs/grpo-1", quick.loop.plan(2))  # iteration 2: one near-greedy sample
    assert (data.model, data.model_id, data.sampling.n, data.sampling.temperature) == ("runs/grpo-1", None, 1, 0.0)
    assert (pinned.sampling.n, pinned.sampling.temperature) == (4, 1.0)
