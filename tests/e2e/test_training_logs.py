"""Training logs: a real SFT and GRPO training of the tiny Qwen2.5-VL store every logged step in
`training_logs`, and the report plots them as the trainings' curves."""

from __future__ import annotations

import math
import re

import pytest

from vlfactory.stores.lake import Lake

from test_reports import Sections, vlf
from test_trainers import GRPO, SFT, write_sets


@pytest.mark.slow
def test_trainings_store_their_log_history_and_the_report_plots_it(cli, lake_dir, tiny_vlm_dir, tmp_path):
    from vlfactory.trainers.grpo import train_grpo
    from vlfactory.trainers.sft import train_sft

    recipe = tmp_path / "r.yaml"
    recipe.write_text("sources:\n  - {name: syn, format: synthetic, n: 6, seed: 3}\n")
    cli("ingest", recipe)
    write_sets(lake_dir, "iter1", "a", 6)
    sft = train_sft("sft@iter1", str(tiny_vlm_dir), tmp_path / "sft", config=SFT, lake=str(lake_dir))
    grpo = train_grpo("rl@iter1", str(tiny_vlm_dir), tmp_path / "grpo", config=GRPO, lake=str(lake_dir))
    with Lake(lake_dir, read_only=True) as lake:
        logged = lake.query("""SELECT training_id, name, list(step ORDER BY step) AS steps,
                                      list(value ORDER BY step) AS vals
                               FROM training_logs GROUP BY ALL""").fetchall()
    curves = {(t, name): (steps, values) for t, name, steps, values in logged}
    # every step logged (logging_steps 1), and the last value is the one the trainings row keeps
    steps, loss = curves[(sft.training_id, "loss")]
    assert steps == [1, 2, 3] and all(math.isfinite(v) for v in loss)
    assert loss[-1] == pytest.approx(sft.metrics["loss"])
    steps, reward = curves[(grpo.training_id, "reward")]
    assert steps == [1, 2] and reward[-1] == pytest.approx(grpo.metrics["reward"])
    assert any(t == grpo.training_id and name.startswith("rewards/") for t, name in curves)  # per reward function
    assert (sft.training_id, "train_runtime") in curves  # the run's totals, at its last step
    out = tmp_path / "report.html"
    vlf("report", "latest", "--out", out, "--lake", lake_dir)
    text = out.read_text()
    training = text[text.index('<section id="training">'):text.index("</section>", text.index('id="training"'))]
    assert Sections(text).plots["training"] == 1
    svg = training[training.index("<svg"):training.index("</svg>")]
    assert 'class="vlf-legend"' in svg
    assert "iter1 sft" in svg and "iter1 grpo" in svg  # one curve per training, by its short name
    assert ">loss<" in svg and ">reward<" in svg        # the panels' titles
    assert len(re.findall(r'<polyline points="[^" ]+ [^"]+"', svg)) >= 2  # lines of two points or more drawn
