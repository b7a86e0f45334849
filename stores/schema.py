"""The catalog's tables, as recorded migrations.

Tables and columns are part of the user interface: users query them with SQL
(`vlfactory sql`), so columns are added, never renamed. Each migration is a
small function applied once, in order, and recorded in `schema_migrations`; a
new lake, or an old one opened by a newer vlfactory, gets the pending ones in
one commit (and their table options in a second: see OPTIONS_ONLY). The Arrow
schemas mirror the DDL so writers build batches that insert without casts.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from vlfactory.stores.base import DB

# ---- Arrow schemas of the rows the factory writes --------------------------

IMAGES = pa.schema([
    ("image_id", pa.string()),      # SHA-256 hex of the original bytes
    ("bytes", pa.binary()),         # the original file, byte-exact
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),        # PIL format name: PNG, JPEG, ...
    ("n_bytes", pa.int64()),
    ("run_id", pa.string()),
])

PROBLEMS = pa.schema([
    ("problem_id", pa.string()),    # hash of (image_id, question, answer)
    ("source", pa.string()),        # the recipe's source name
    ("source_id", pa.string()),     # the row's id in its source
    ("split", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("choices", pa.list_(pa.string())),
    ("image_id", pa.string()),
    ("caption", pa.string()),       # ground-truth caption from the source, if any
    ("run_id", pa.string()),
])

REJECTED = pa.schema([
    ("rejected_id", pa.string()),   # stable: a rerun that rejects the same row adds nothing
    ("stage", pa.string()),         # ingest, caption, distil, verify, ...
    ("reason", pa.string()),        # short machine-readable reason: missing_answer, bad_image, ...
    ("detail", pa.string()),        # one human line: what and where
    ("ref_id", pa.string()),        # what was rejected: a source row, a problem, a request key
    ("source", pa.string()),
    ("payload", pa.string()),       # the rejected row as JSON (image bytes left out)
    ("run_id", pa.string()),
    ("reasons", pa.list_(pa.string())),  # every reason that applies (verify); reason is the first
])

CAPTIONS = pa.schema([
    ("caption_id", pa.string()),
    ("problem_id", pa.string()),
    ("image_id", pa.string()),
    ("model", pa.string()),         # the model identity, or "source:<name>" for ground truth
    ("caption", pa.string()),
    ("origin", pa.string()),        # "source" (a ground-truth column) or "model"
    ("prompt_hash", pa.string()),
    ("request_key", pa.string()),   # the cache key: a rerun skips keys already here
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("latency_s", pa.float64()),
    ("run_id", pa.string()),
])

_SAMPLED = [
    ("sample_index", pa.int32()),
    ("model", pa.string()),
    ("prompt_hash", pa.string()),   # hash of the prompt template
    ("completion", pa.string()),    # the whole completion, as the model wrote it
    ("reasoning", pa.string()),     # the thinking part
    ("answer", pa.string()),        # the final answer as extracted (None: none found)
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("temperature", pa.float64()),
    ("top_p", pa.float64()),
    ("max_tokens", pa.int32()),
    ("seed", pa.int64()),
    ("request_key", pa.string()),
    ("latency_s", pa.float64()),
    ("run_id", pa.string()),
]

TRACES = pa.schema([("trace_id", pa.string()), ("problem_id", pa.string()), *_SAMPLED,
                    ("caption_id", pa.string()), ("backend", pa.string())])

ROLLOUTS = pa.schema([("rollout_id", pa.string()), ("problem_id", pa.string()), *_SAMPLED,
                      ("backend", pa.string())])

RUNS_DDL = """
CREATE TABLE {db}.runs (
    run_id VARCHAR, command VARCHAR, recipe_name VARCHAR, recipe VARCHAR,
    recipe_hash VARCHAR, versions MAP(VARCHAR, VARCHAR), argv VARCHAR,
    started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, status VARCHAR, error VARCHAR,
    counts MAP(VARCHAR, BIGINT), snapshot_start BIGINT, snapshot_end BIGINT)
"""


_SQL_TYPES = {pa.string(): "VARCHAR", pa.binary(): "BLOB", pa.bool_(): "BOOLEAN", pa.int32(): "INTEGER",
              pa.int64(): "BIGINT", pa.float64(): "DOUBLE"}


def _sql_type(t: pa.DataType) -> str:
    # Spelled out rather than asked of DuckDB: scanning an Arrow table imports pandas (0.4 s a new lake).
    if pa.types.is_list(t):
        return f"{_sql_type(t.value_type)}[]"
    return _SQL_TYPES[t]


def _ddl(schema: pa.Schema) -> str:
    return ", ".join(f'"{f.name}" {_sql_type(f.type)}' for f in schema)


def _m001_initial(con, db: str) -> None:
    now = "created_at TIMESTAMPTZ DEFAULT now()"
    con.execute(f"CREATE TABLE {db}.images ({_ddl(IMAGES)})")
    con.execute(f"CREATE TABLE {db}.problems ({_ddl(PROBLEMS)})")
    first = REJECTED.remove(REJECTED.get_field_index("reasons"))  # `reasons` came with migration 4
    con.execute(f"CREATE TABLE {db}.rejected ({_ddl(first)}, {now})")
    con.execute(RUNS_DDL.format(db=db))
    con.execute(f"""CREATE TABLE {db}.tags (
        name VARCHAR, snapshot_id BIGINT, run_id VARCHAR, note VARCHAR, {now})""")
    con.execute(f"CREATE TABLE {db}.captions ({_ddl(CAPTIONS)}, {now})")
    con.execute(f"CREATE TABLE {db}.traces ({_ddl(TRACES)}, {now})")
    # rollouts carried an inline verdict until migration 7 (verdicts live in grades only)
    first_rollouts = pa.schema([*ROLLOUTS, ("correct", pa.bool_()), ("grade_reason", pa.string())])
    con.execute(f"CREATE TABLE {db}.rollouts ({_ddl(first_rollouts)}, {now})")


def _m002_images_uncompressed(con, db: str) -> None:
    # Image files are already compressed: compressing them again costs time and saves nothing.
    con.execute(f"CALL {db}.set_option('parquet_compression', 'uncompressed', table_name => 'images')")


PROMPTS = pa.schema([
    ("prompt_hash", pa.string()),   # what captions/traces/rollouts.prompt_hash refer to
    ("name", pa.string()),          # the template's name or path in the recipe
    ("text", pa.string()),
    ("run_id", pa.string()),
])


def _m003_prompts_and_generations(con, db: str) -> None:
    con.execute(f"CREATE TABLE {db}.prompts ({_ddl(PROMPTS)}, created_at TIMESTAMPTZ DEFAULT now())")
    # Every model call of every stage in one place: tokens per stage and model are one GROUP BY.
    cols = ("model, prompt_hash, request_key, prompt_tokens, completion_tokens, finish_reason, latency_s, "
            "run_id, created_at")
    con.execute(f"""CREATE VIEW {db}.generations AS
        SELECT 'caption' AS stage, problem_id, {cols} FROM {db}.captions WHERE origin = 'model'
        UNION ALL SELECT 'distil', problem_id, {cols} FROM {db}.traces
        UNION ALL SELECT 'rollout', problem_id, {cols} FROM {db}.rollouts""")


GRADES = pa.schema([
    ("grade_id", pa.string()),      # hash of (ref_table, ref_id, verifier, settings_hash)
    ("ref_table", pa.string()),     # traces | rollouts
    ("ref_id", pa.string()),        # trace_id / rollout_id
    ("problem_id", pa.string()),
    ("source", pa.string()),
    ("verifier", pa.string()),      # verifier version string: a newer one regrades
    ("settings_hash", pa.string()), # hash of the recipe's verify settings: changed thresholds regrade
    ("correct", pa.bool_()),
    ("extracted", pa.string()),
    ("grade_reason", pa.string()),  # the verifier's reason: correct, incorrect, no_answer, ...
    ("reasons", pa.list_(pa.string())),  # every rejection reason that applies (empty: accepted)
    ("accepted", pa.bool_()),
    ("words", pa.int32()),
    ("cleaned", pa.string()),       # the cleaned completion for SFT, beside the original
    ("cleaned_words", pa.int32()),
    ("cleaned_ok", pa.bool_()),     # the cleaned completion re-verified correct and under the cap
    ("run_id", pa.string()),
])

# A set row's problem, as the trainers see it: the image, the question and the prompt built from it.
_SET_PROBLEM = [
    ("problem_id", pa.string()),
    ("source", pa.string()),
    ("source_id", pa.string()),
    ("image_id", pa.string()),
    ("question", pa.string()),
    ("choices", pa.list_(pa.string())),
    ("answer", pa.string()),        # the gold answer
    ("prompt", pa.string()),        # the user turn's text (the image goes before it)
]

SFT = pa.schema([
    ("example_id", pa.string()),
    *_SET_PROBLEM,
    ("completion", pa.string()),    # the assistant turn: reasoning + final answer
    ("from_table", pa.string()),    # traces | rollouts
    ("from_id", pa.string()),
    ("model", pa.string()),         # who wrote the completion
    ("words", pa.int32()),
    ("run_id", pa.string()),
])

RL = pa.schema([
    *_SET_PROBLEM,
    ("policy_model", pa.string()),
    ("samples", pa.int32()),
    ("correct", pa.int32()),
    ("pass_rate", pa.float64()),
    ("run_id", pa.string()),
])


def _m004_datasets(con, db: str) -> None:
    now = "created_at TIMESTAMPTZ DEFAULT now()"
    con.execute(f"CREATE TABLE {db}.grades ({_ddl(GRADES)}, {now})")
    con.execute(f"CREATE TABLE {db}.sft ({_ddl(SFT)}, {now})")
    con.execute(f"CREATE TABLE {db}.rl ({_ddl(RL)}, {now})")
    con.execute(f"ALTER TABLE {db}.rejected ADD COLUMN reasons VARCHAR[]")
    con.execute(f"""CREATE VIEW {db}.pass_rates AS
        SELECT problem_id, model, count(*) AS samples, count(*) FILTER (WHERE correct) AS correct,
               avg(CASE WHEN correct THEN 1.0 ELSE 0.0 END) AS pass_rate
        FROM {db}.rollouts GROUP BY ALL""")


def _m005_trainings_and_evals(con, db: str) -> None:
    con.execute(f"""CREATE TABLE {db}.trainings (
        training_id VARCHAR, kind VARCHAR, dataset VARCHAR, dataset_table VARCHAR, snapshot_id BIGINT,
        rows BIGINT, base_model VARCHAR, output_dir VARCHAR, config VARCHAR, versions MAP(VARCHAR, VARCHAR),
        status VARCHAR, metrics MAP(VARCHAR, DOUBLE), started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ,
        run_id VARCHAR, iteration INTEGER)""")
    con.execute(f"""CREATE TABLE {db}.evals (
        eval_id VARCHAR, model VARCHAR, benchmark VARCHAR, split VARCHAR, problems BIGINT, correct BIGINT,
        accuracy DOUBLE, snapshot_id BIGINT, sampling VARCHAR, run_id VARCHAR, iteration INTEGER,
        created_at TIMESTAMPTZ DEFAULT now())""")


def _m006_training_errors(con, db: str) -> None:
    con.execute(f"ALTER TABLE {db}.trainings ADD COLUMN error VARCHAR")


MODELS = pa.schema([
    ("model_key", pa.string()),     # hash of (model_id, name): one row per name an identity went by
    ("model_id", pa.string()),      # the identity every generated row carries (vlfactory.models.identity)
    ("name", pa.string()),          # what the recipe or command called it: a folder, a hub id, a built-in name
    ("revision", pa.string()),
    ("path", pa.string()),          # the folder it was read from, if local (where it was, not what it is)
    ("kind", pa.string()),          # folder | builtin | hub | declared
    ("training_id", pa.string()),   # the training that produced it, if one of ours
    ("run_id", pa.string()),
])


def _m007_one_verdict_content_identity(con, db: str) -> None:
    # One verdict per sample: the rollout stage no longer grades; pass rates read the grades.
    con.execute(f"DROP VIEW {db}.pass_rates")
    con.execute(f"ALTER TABLE {db}.rollouts DROP COLUMN correct")
    con.execute(f"ALTER TABLE {db}.rollouts DROP COLUMN grade_reason")
    con.execute(f"""CREATE VIEW {db}.pass_rates AS
        SELECT r.problem_id, r.model, g.verifier, g.settings_hash, count(*) AS samples,
               count(*) FILTER (WHERE g.correct) AS correct,
               avg(CASE WHEN g.correct THEN 1.0 ELSE 0.0 END) AS pass_rate
        FROM {db}.rollouts r JOIN {db}.grades g ON g.ref_table = 'rollouts' AND g.ref_id = r.rollout_id
        GROUP BY ALL""")
    # Models known by content: what each identity was called, and which training made it.
    con.execute(f"CREATE TABLE {db}.models ({_ddl(MODELS)}, created_at TIMESTAMPTZ DEFAULT now())")
    for column in ("model_id", "base_model_id", "config_hash", "data_digest"):
        con.execute(f"ALTER TABLE {db}.trainings ADD COLUMN {column} VARCHAR")
    # An eval is done once per (model identity, benchmark rows, prompt, decoding, verifier): its key.
    con.execute(f"ALTER TABLE {db}.evals ADD COLUMN eval_key VARCHAR")
    con.execute(f"ALTER TABLE {db}.evals ADD COLUMN model_name VARCHAR")


EVAL_SAMPLES = pa.schema([
    ("eval_key", pa.string()),      # the evaluation it belongs to (evals.eval_key: evaluated once)
    ("model", pa.string()),         # the identity of the model that answered
    ("benchmark", pa.string()),
    ("source_id", pa.string()),     # the benchmark row
    ("sample_index", pa.int32()),
    ("question", pa.string()),
    ("answer", pa.string()),        # the gold, as the benchmark has it
    ("prompt", pa.string()),        # the text the model saw after the image
    ("completion", pa.string()),
    ("extracted", pa.string()),     # the answer as the protocol reads it (None: none)
    ("correct", pa.bool_()),
    ("reason", pa.string()),        # correct, incorrect, no_answer, ... (the protocol's reason)
    ("protocol", pa.string()),      # vlfactory | openvlthinker | judge
    ("judge", pa.string()),         # the judge model's own text, for protocol judge
    ("words", pa.int32()),
    ("completion_tokens", pa.int64()),
    ("finish_reason", pa.string()),
    ("run_id", pa.string()),
])


def _m008_eval_samples_and_pass_at_k(con, db: str) -> None:
    # Every answer of every evaluation, so a report can show any of them, and pass@k over n samples.
    con.execute(f"CREATE TABLE {db}.eval_samples ({_ddl(EVAL_SAMPLES)}, created_at TIMESTAMPTZ DEFAULT now())")
    for column, kind in (("stage", "VARCHAR"), ("protocol", "VARCHAR"), ("prompt_format", "VARCHAR"),
                         ("samples_per_problem", "INTEGER"), ("pass_at_k", "DOUBLE[]")):
        con.execute(f"ALTER TABLE {db}.evals ADD COLUMN {column} {kind}")


def _m009_run_liveness_and_write_guards(con, db: str) -> None:
    # Which process a run is, so the next run can tell a killed one (status `running`, its process
    # gone) from a live one; a run on another host is judged by its last heartbeat.
    for column, kind in (("host", "VARCHAR"), ("pid", "BIGINT"), ("pid_started", "DOUBLE")):
        con.execute(f"ALTER TABLE {db}.runs ADD COLUMN {column} {kind}")
    con.execute(f"CREATE TABLE {db}.run_heartbeats (run_id VARCHAR, beat_at TIMESTAMPTZ)")
    # One row per table that keyed inserts touch in the same transaction: two writers adding keys to
    # a table both change its row, which DuckLake reports as a conflict at commit (Lake.insert).
    con.execute(f"CREATE TABLE {db}.write_guards (name VARCHAR, n BIGINT)")
    for name in GUARDED:  # a row per statement stays inlined in the catalog: bumping it writes no file
        con.execute(f"INSERT INTO {db}.write_guards VALUES (?, 0)", [name])


TRAINING_LOGS = pa.schema([
    ("training_id", pa.string()),   # the trainings row
    ("step", pa.int64()),           # TRL's global step of the log entry
    ("epoch", pa.float64()),
    ("name", pa.string()),          # loss, reward, reward_std, kl, grad_norm, completions/mean_length, ...
    ("value", pa.float64()),
    ("run_id", pa.string()),
])


def _m010_training_logs(con, db: str) -> None:
    # Every number TRL logged during a training (its trainer.state.log_history), one row per step and name:
    # loss and reward curves, not only the final value in trainings.metrics.
    con.execute(f"CREATE TABLE {db}.training_logs ({_ddl(TRAINING_LOGS)}, created_at TIMESTAMPTZ DEFAULT now())")


ROW_GROUP_ROWS = 8192
POINT_READ = ("problems", "captions", "traces", "rollouts", "rejected", "grades", "sft", "rl", "eval_samples")


def _m011_small_row_groups(con, db: str) -> None:
    # Tables whose rows are opened one at a time (the viewer's sample and problem pages): a point read
    # decodes the whole row group that holds the row, so groups of 8,192 rows (what a generation stage
    # commits at once), not DuckDB's 122,880, for the files written from now on (large inserts, gc merges).
    # Measured (bench/viewer.py, 100k traces): a sample page 1.58 s with 90k-row groups, 0.45 s with 8,192.
    for table in POINT_READ:
        con.execute(f"CALL {db}.set_option('parquet_row_group_size', {ROW_GROUP_ROWS}, table_name => '{table}')")


GUARDED = ("images", "problems", "captions", "traces", "rollouts", "rejected", "prompts", "grades", "models",
           "evals", "eval_samples", "trainings")


# (version, name, function): append only; never edit an applied migration.
MIGRATIONS = [
    (1, "initial tables", _m001_initial),
    (2, "store image bytes uncompressed", _m002_images_uncompressed),
    (3, "prompts table and generations view", _m003_prompts_and_generations),
    (4, "grades, sft and rl tables; rejected.reasons; pass_rates view", _m004_datasets),
    (5, "trainings and evals tables", _m005_trainings_and_evals),
    (6, "trainings.error", _m006_training_errors),
    (7, "verdicts only in grades (pass_rates over grades), models table, identities in trainings and evals",
     _m007_one_verdict_content_identity),
    (8, "eval_samples table; evals.stage, protocol, prompt_format, samples_per_problem, pass_at_k",
     _m008_eval_samples_and_pass_at_k),
    (9, "runs.host, pid, pid_started; run_heartbeats; write_guards", _m009_run_liveness_and_write_guards),
    (10, "training_logs table", _m010_training_logs),
    (11, "Parquet row groups of 8,192 rows for tables read row by row", _m011_small_row_groups),
]

# Migrations that only set table options (DuckLake's set_option): DuckLake refuses those on a table created
# in the same transaction, so `migrate` (below) commits them after the migrations that make tables.
OPTIONS_ONLY = {2, 11}

TABLES = ("images", "problems", "captions", "traces", "rollouts", "rejected", "runs", "tags", "prompts",
          "grades", "sft", "rl", "trainings", "evals", "models", "eval_samples", "training_logs")


# ---- applying them -----------------------------------------------------------

def applied(lake) -> set[int]:
    """The migrations a lake has, by version."""
    try:  # cheaper than looking it up in duckdb_tables(), which lists the catalog database's tables too
        return {r[0] for r in lake.con.execute(f"SELECT version FROM {DB}.schema_migrations").fetchall()}
    except duckdb.CatalogException:  # a new lake
        return set()


def pending(lake) -> list:
    """The migrations this vlfactory has and the lake lacks, in order."""
    done = applied(lake)
    return [m for m in MIGRATIONS if m[0] not in done]


def older(lake) -> str | None:
    """What to do about a lake that lacks schema migrations this vlfactory has, or None."""
    missing = pending(lake)
    if not missing:
        return None
    return (f"the lake at {lake.spec.display} was written by an older vlfactory (schema migration "
            f"{missing[0][0]} of {MIGRATIONS[-1][0]} missing): run any write command on it "
            "(e.g. `vlfactory gc --dry-run`) once to upgrade it, then read it")


def migrate(lake) -> list[str]:
    """Apply missing migrations: a new lake starts as two snapshots (its tables, then their storage
    options, which DuckLake sets only on committed tables), an older one upgrades the same way; a
    failing migration leaves the lake as its last commit left it."""
    todo = pending(lake)
    for batch in ([m for m in todo if m[0] not in OPTIONS_ONLY], [m for m in todo if m[0] in OPTIONS_ONLY]):
        if not batch:
            continue
        numbers = ", ".join(str(v) for v, _, _ in batch)
        with lake.transaction(f"migration{'s' * (len(batch) > 1)} {numbers}: "
                              + "; ".join(name for _, name, _ in batch)):
            lake.con.execute(f"CREATE TABLE IF NOT EXISTS {DB}.schema_migrations "
                             "(version INTEGER, name VARCHAR, applied_at TIMESTAMPTZ)")
            for version, name, fn in batch:
                fn(lake.con, DB)
                lake.con.execute(f"INSERT INTO {DB}.schema_migrations VALUES (?, ?, now())", [version, name])
    return [name for _, name, _ in todo]
