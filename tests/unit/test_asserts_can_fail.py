"""Asserts that can fail: no new test asserts `all(...)` over something that may be empty without a length
check, or asserts only under an `if` that may never hold (issue 22: such asserts passed whatever the code did).

Read from the test files' syntax trees (tests/*/test_*.py), nothing run:
- `all(...)` in an assert, over a name or expression X (its first generator's iterable, slices and
  `.values()`/`sorted()` taken off) that the same function never shows to be non-empty: no `len(X)`,
  `next(X)`, `X and ...`, `assert X`, `X == ...` (or `>`, `>=`, `... in X`, `... <= X`), `(a,) = X`, and X
  not bound to a non-empty literal or a comprehension over one (or over `range(N)`), in the function or at
  module level;
- an assert inside an `if` in a `test_*` function (nested helpers are judged on their own).
A shape that is right where it stands goes into ALLOWED with the reason; an entry that no longer matches
anything fails too, so the list stays true.

    python -m pytest tests/unit/test_asserts_can_fail.py
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

# (file under tests/, function, "all: X" or "if: CONDITION") -> why it is right as it stands
ALLOWED = {
    ("cli/test_publish.py", "test_upload_reaches_the_hub_api_with_the_token_only_in_headers", "all: hub.calls"):
        "the calls include whoami, repo creation and the LFS batch: asserted just above (`<= paths`, paths from "
        "hub.calls)",
    ("e2e/test_wheel.py", "test_the_installed_wheel_imports_everything_and_runs_the_stages", "all: server.hits"):
        "the hits' prompts equal the 6 planned prompts: asserted just above (server.prompts())",
    ("unit/test_data_is_never_code.py", "_refused", "all: words"):
        "a helper: its callers name the words to find; with none it checks the one-line shape only",
    ("unit/test_tiny_models.py", "test_tiny_qwen2_generates", "all: tok.batch_decode(out[:, enc['input_ids'].shape[1]:])"):
        "two sequences are decoded: out.shape[0] == 2 is asserted just above",
    ("cli/test_publish.py", "test_dry_run_folder_is_what_push_to_hub_writes_and_loads_back", "if: table == 'sft'"):
        "a loop over TABLES, which holds sft",
    ("cli/test_publish.py", "test_dry_run_folder_is_what_push_to_hub_writes_and_loads_back", "if: 'image' in features"):
        "a loop over the published tables; problems and sft carry images",
    ("cli/test_publish.py", "test_upload_reaches_the_hub_api_with_the_token_only_in_headers",
     "if: path.endswith('.parquet')"):
        "a loop over the dry-run folder's files, its Parquet shards among them (the dry-run test counts them)",
    ("stages/test_openai_backend.py", "test_every_fault_ends_exactly_once", "if: r.ok"):
        "per request: an answered one's text; the healthy prompts are answered (asserted below)",
    ("stages/test_sources_from_cards.py", "test_every_source_of_the_recipe_ingests_its_fixture_with_the_shipped_mapping",
     "if: choices"):
        "per row: only multiple-choice rows have options to check; several fixtures are multiple choice",
    ("unit/test_protocols.py",
     "test_the_data_grader_and_the_reward_agree_on_multiple_choice_but_where_the_official_code_differs",
     "if: answer == gold and completion != answer and (' or ' not in gold)"):
        "per case of the module's multiple-choice table, which has cases of each kind",
    ("unit/test_protocols.py",
     "test_the_data_grader_and_the_reward_agree_on_multiple_choice_but_where_the_official_code_differs",
     "if: answer in ('B', '(B)', 'b')"):
        "per case of the module's multiple-choice table, which has letter answers",
    ("unit/test_protocols.py", "test_recipes_take_protocol_names_from_the_verifier", "if: name != 'judge'"):
        "a loop over PROTOCOLS: every protocol but the judge also grades in verify",
    ("unit/test_synthetic.py", "test_bar_and_counting_sizes", "if: r['kind'] == 'bar'"):
        "per row of the `rows` fixture, which draws every kind",
    ("unit/test_synthetic.py", "test_bar_and_counting_sizes", "if: r['kind'] == 'counting'"):
        "per row of the `rows` fixture, which draws every kind",
}

_PEEL = {"sorted", "list", "set", "tuple", "reversed", "enumerate", "zip", "dict"}


def _peel(node: ast.expr) -> ast.expr:
    """rows[1:] -> rows, sorted(x) -> x, d.values() -> d: what must be non-empty."""
    while True:
        if isinstance(node, ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PEEL and node.args:
            node = node.args[0]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("values", "items", "keys")):
            node = node.func.value
        else:
            return node


def _nonempty(node: ast.expr | None) -> bool:
    """A literal with elements, range(N) for a constant N > 0, or a comprehension over one of those."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return bool(node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.keys)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        last = node.args[-1] if len(node.args) == 1 else None
        return isinstance(last, ast.Constant) and isinstance(last.value, int) and last.value > 0
    if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return not node.generators[0].ifs and _nonempty(node.generators[0].iter)
    return False


def _iterated(call: ast.Call) -> ast.expr | None:
    arg = call.args[0] if call.args else None
    return arg.generators[0].iter if isinstance(arg, (ast.GeneratorExp, ast.ListComp)) else arg


def _mentions(node: ast.AST, texts: set[str]) -> bool:
    return any(ast.unparse(n) in texts for n in ast.walk(node) if isinstance(n, ast.expr))


def _shown_nonempty(scopes: list[ast.AST], texts: set[str]) -> bool:
    return any(_says_nonempty(node, texts) for scope in scopes for node in ast.walk(scope))


def _says_nonempty(node: ast.AST, texts: set[str]) -> bool:
    """Whether this node shows one of `texts` (an expression's source) to be non-empty, or could."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("len", "next"):
        return bool(node.args) and _mentions(node.args[0], texts)
    if isinstance(node, ast.BoolOp):
        return any(ast.unparse(v) in texts for v in node.values)
    if isinstance(node, ast.Assert):
        return ast.unparse(node.test) in texts
    if isinstance(node, ast.Compare):
        sides = [node.left, *node.comparators]
        return any((isinstance(op, (ast.Eq, ast.Gt, ast.GtE)) and _mentions(sides[i], texts))
                   or (isinstance(op, (ast.Eq, ast.Gt, ast.GtE, ast.In, ast.LtE, ast.Lt))
                       and _mentions(sides[i + 1], texts))
                   for i, op in enumerate(node.ops))
    if isinstance(node, ast.Assign):
        if any(isinstance(t, (ast.Tuple, ast.List)) for t in node.targets) and ast.unparse(node.value) in texts:
            return True  # (a,) = X
        return bool({ast.unparse(t) for t in node.targets} & texts) and _nonempty(node.value)
    return False


def findings(path: Path, root: Path = TESTS) -> list[tuple[str, str, str, int]]:
    """(file under root, function, shape, line) for each assert of the two shapes in one test file."""
    tree = ast.parse(path.read_text(), str(path))
    module_level = [n for n in tree.body if isinstance(n, ast.Assign)]
    name = path.relative_to(root).as_posix()
    out = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if not isinstance(node, ast.Assert):
                continue
            for call in ast.walk(node.test):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "all"):
                    continue
                it = _iterated(call)
                if it is None or _nonempty(it):
                    continue
                texts = {ast.unparse(it), ast.unparse(_peel(it))}
                if not _shown_nonempty([func, *module_level], texts):
                    out.append((name, func.name, f"all: {ast.unparse(_peel(it))}", node.lineno))
        if func.name.startswith("test"):
            out += [(name, func.name, f"if: {ast.unparse(cond.test)}", line) for cond, line in _under_if(func)]
    return out


def _under_if(node: ast.AST, cond: ast.If | None = None):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue  # a nested helper is judged on its own
        if isinstance(child, ast.Assert) and cond is not None:
            yield cond, child.lineno
        yield from _under_if(child, cond or (child if isinstance(child, ast.If) else None))


def test_no_assert_passes_over_nothing_or_hides_under_an_if():
    files = sorted(TESTS.glob("*/test_*.py"))
    assert len(files) > 50  # the suite's test files, in every folder
    found = [f for path in files for f in findings(path)]
    new = [f"tests/{file}:{line} in {func}: {shape}" for file, func, shape, line in found
           if (file, func, shape) not in ALLOWED]
    assert not new, ("asserts that can pass whatever the code does: check a length before all(...) or assert "
                     "without the if (or add the case to ALLOWED with the reason):\n" + "\n".join(new))
    stale = set(ALLOWED) - {(file, func, shape) for file, func, shape, _ in found}
    assert not stale, f"ALLOWED entries that match nothing now (remove them): {sorted(stale)}"


def test_the_check_finds_both_shapes(tmp_path):
    """The two shapes are found, and the checks that clear them do."""
    folder = tmp_path / "unit"
    folder.mkdir()
    path = folder / "test_x.py"
    path.write_text('''
ITEMS = ["a"]

def test_vacuous(rows, config):
    assert all(r.ok for r in rows)
    assert all(r for r in ITEMS)
    if config.exists():
        assert config.read_text()

def test_checked(rows, other):
    assert len(rows) == 3 and all(r.ok for r in rows)
    assert other and all(other)
    assert all(x > 0 for x in range(3))
''')
    got = [(func, shape) for _, func, shape, _ in findings(path, tmp_path)]
    assert got == [("test_vacuous", "all: rows"), ("test_vacuous", "if: config.exists()")]
